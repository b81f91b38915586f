//! YAML into the tree, from `saphyr-parser`'s event stream (YAML 1.2 core schema for plain
//! scalars; anchors and aliases are expanded, within a size limit).

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span as YamlSpan};

use super::{Key, Node, Value};
use crate::diagnostic::Diagnostic;
use crate::source::Span;
use crate::tree::KeyPath;

/// Nesting deeper than this is refused rather than risking the stack later on.
const MAX_DEPTH: usize = 128;
/// Alias expansion may not grow the document beyond this many nodes ("billion laughs").
const MAX_NODES: usize = 200_000;

enum Frame {
    Sequence {
        items: Vec<Node>,
        start: usize,
        anchor: usize,
    },
    Mapping {
        entries: Vec<(Key, Node)>,
        key: Option<Key>,
        start: usize,
        anchor: usize,
    },
}

struct Builder {
    /// Byte offset of every character index (saphyr counts characters).
    char_offsets: Vec<usize>,
    text_len: usize,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    root: Option<Node>,
}

fn error(message: impl Into<String>, span: Span) -> Vec<Diagnostic> {
    vec![Diagnostic::error(KeyPath::root(), message).at(span)]
}

impl Builder {
    fn offset(&self, char_index: usize) -> usize {
        self.char_offsets
            .get(char_index)
            .copied()
            .unwrap_or(self.text_len)
    }

    fn span(&self, span: &YamlSpan) -> Span {
        Span::new(
            self.offset(span.start.index()),
            self.offset(span.end.index()),
        )
    }

    fn count(&mut self, amount: usize, span: Span) -> Result<(), Vec<Diagnostic>> {
        self.nodes += amount;
        if self.nodes > MAX_NODES {
            return Err(error(
                "invalid YAML: the document expands to too many values",
                span,
            ));
        }
        Ok(())
    }

    fn finish_value(&mut self, node: Node, anchor: usize) -> Result<(), Vec<Diagnostic>> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Sequence { items, .. }) => items.push(node),
            Some(Frame::Mapping { entries, key, .. }) => match key.take() {
                Some(key) => entries.push((key, node)),
                None => {
                    let name = match &node.value {
                        Value::String(text) | Value::Datetime(text) => text.clone(),
                        Value::Int(number) => number.to_string(),
                        Value::Float(number) => number.to_string(),
                        Value::Bool(flag) => flag.to_string(),
                        Value::Null => String::new(),
                        Value::Array(_) | Value::Table(_) => {
                            return Err(error(
                                "invalid YAML: a key must be a plain value, not a list or mapping",
                                node.span,
                            ));
                        }
                    };
                    *key = Some(Key {
                        name,
                        span: node.span,
                    });
                }
            },
        }
        Ok(())
    }

    fn scalar(&self, text: &str, style: ScalarStyle, plain_string: bool, span: Span) -> Node {
        let value = if style == ScalarStyle::Plain && !plain_string {
            resolve_plain(text)
        } else {
            Value::String(text.to_owned())
        };
        Node::new(value, span)
    }
}

/// The YAML 1.2 core schema's reading of a plain scalar.
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(number) = text.parse::<i64>()
    {
        return Value::Int(number);
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(number) = i64::from_str_radix(hex, 16)
    {
        return Value::Int(number);
    }
    if let Some(octal) = text.strip_prefix("0o")
        && let Ok(number) = i64::from_str_radix(octal, 8)
    {
        return Value::Int(number);
    }
    let looks_float = {
        let body = digits;
        let (mantissa, exponent) = match body.find(['e', 'E']) {
            Some(at) => (&body[..at], Some(&body[at + 1..])),
            None => (body, None),
        };
        let mantissa_ok = !mantissa.is_empty()
            && mantissa != "."
            && mantissa.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && mantissa.matches('.').count() <= 1;
        let exponent_ok = exponent.is_none_or(|exp| {
            let exp = exp.strip_prefix(['-', '+']).unwrap_or(exp);
            !exp.is_empty() && exp.bytes().all(|b| b.is_ascii_digit())
        });
        mantissa_ok && exponent_ok
    };
    if looks_float && let Ok(number) = text.parse::<f64>() {
        return Value::Float(number);
    }
    Value::String(text.to_owned())
}

pub(super) fn parse(text: &str) -> Result<Node, Vec<Diagnostic>> {
    let mut char_offsets: Vec<usize> = text.char_indices().map(|(offset, _)| offset).collect();
    char_offsets.push(text.len());
    let mut builder = Builder {
        char_offsets,
        text_len: text.len(),
        stack: Vec::new(),
        anchors: HashMap::new(),
        nodes: 0,
        root: None,
    };
    let mut documents = 0;
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        let (event, yaml_span) = next.map_err(|scan| {
            let offset = builder.offset(scan.marker().index());
            error(
                format!("invalid YAML: {}", scan.info()),
                Span::new(offset, offset + 1),
            )
        })?;
        let span = builder.span(&yaml_span);
        match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(error(
                        "invalid YAML: the file holds more than one document; fly.yaml must hold one",
                        span,
                    ));
                }
            }
            Event::Scalar(value, style, anchor, tag) => {
                builder.count(1, span)?;
                let plain_string = tag.as_ref().is_some_and(|tag| tag.suffix == "str");
                let node = builder.scalar(&value, style, plain_string, span);
                builder.finish_value(node, anchor)?;
            }
            Event::Alias(anchor) => {
                let node = builder
                    .anchors
                    .get(&anchor)
                    .cloned()
                    .ok_or_else(|| error("invalid YAML: alias to an unknown anchor", span))?;
                builder.count(size(&node), span)?;
                let node = Node { span, ..node };
                builder.finish_value(node, 0)?;
            }
            Event::SequenceStart(anchor, _) => {
                if builder.stack.len() >= MAX_DEPTH {
                    return Err(error("invalid YAML: nested too deeply", span));
                }
                builder.count(1, span)?;
                builder.stack.push(Frame::Sequence {
                    items: Vec::new(),
                    start: span.start,
                    anchor,
                });
            }
            Event::MappingStart(anchor, _) => {
                if builder.stack.len() >= MAX_DEPTH {
                    return Err(error("invalid YAML: nested too deeply", span));
                }
                builder.count(1, span)?;
                builder.stack.push(Frame::Mapping {
                    entries: Vec::new(),
                    key: None,
                    start: span.start,
                    anchor,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match builder.stack.pop() {
                    Some(Frame::Sequence {
                        items,
                        start,
                        anchor,
                    }) => (
                        Node::new(Value::Array(items), Span::new(start, span.end.max(start))),
                        anchor,
                    ),
                    Some(Frame::Mapping {
                        entries,
                        start,
                        anchor,
                        ..
                    }) => (
                        Node::table(entries, Span::new(start, span.end.max(start))),
                        anchor,
                    ),
                    None => return Err(error("invalid YAML: unbalanced collection", span)),
                };
                builder.finish_value(node, anchor)?;
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
    }
    match builder.root {
        None => Ok(Node::table(Vec::new(), Span::new(0, 0))),
        Some(Node {
            value: Value::Null,
            span,
            ..
        }) => Ok(Node::table(Vec::new(), span)),
        Some(root) => Ok(root),
    }
}

fn size(node: &Node) -> usize {
    match &node.value {
        Value::Array(items) => 1 + items.iter().map(size).sum::<usize>(),
        Value::Table(entries) => 1 + entries.iter().map(|(_, value)| size(value)).sum::<usize>(),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_scalars_follow_the_core_schema() {
        assert_eq!(resolve_plain("8080"), Value::Int(8080));
        assert_eq!(resolve_plain("-3"), Value::Int(-3));
        assert_eq!(resolve_plain("0x1f"), Value::Int(31));
        assert_eq!(resolve_plain("1.5"), Value::Float(1.5));
        assert_eq!(resolve_plain("1e3"), Value::Float(1000.0));
        assert_eq!(resolve_plain("true"), Value::Bool(true));
        assert_eq!(resolve_plain("~"), Value::Null);
        assert_eq!(resolve_plain("10s"), Value::String("10s".into()));
        assert_eq!(resolve_plain("1.2.3"), Value::String("1.2.3".into()));
        assert_eq!(resolve_plain("."), Value::String(".".into()));
    }

    #[test]
    fn spans_are_byte_offsets() {
        let text = "app: \"é\"\nkill_timeout: 5\n";
        let root = parse(text).unwrap();
        let timeout = root.get("kill_timeout").unwrap();
        assert_eq!(&text[timeout.span.start..timeout.span.end], "5");
        assert_eq!(timeout.value, Value::Int(5));
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let prev = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        assert!(parse(&text).is_err());
    }
}
