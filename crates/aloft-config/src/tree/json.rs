//! JSON into the tree. `serde_json` decides whether the text is JSON (and where it is not);
//! the spans come from reading the same text with the YAML reader, since JSON is YAML's
//! flow syntax.

use super::{Key, Node, Value};
use crate::diagnostic::Diagnostic;
use crate::source::Span;
use crate::tree::KeyPath;

pub(super) fn parse(text: &str) -> Result<Node, Vec<Diagnostic>> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|error| {
        let offset = offset_of(text, error.line(), error.column());
        let message = format!("invalid JSON: {error}");
        // serde_json appends " at line L column C"; the rendered position says it already.
        let message = match message.rfind(" at line ") {
            Some(cut) => message[..cut].to_owned(),
            None => message,
        };
        vec![Diagnostic::error(KeyPath::root(), message).at(Span::new(offset, offset + 1))]
    })?;
    match super::yaml::parse(text) {
        Ok(node) => Ok(node),
        // Valid JSON that the YAML reader refuses (an over-long key, say): keep the data,
        // without positions.
        Err(_) => Ok(from_value(value)),
    }
}

fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let line_text = text[line_start.min(text.len())..]
        .split('\n')
        .next()
        .unwrap_or("");
    let column_bytes: usize = line_text
        .chars()
        .take(column.saturating_sub(1))
        .map(char::len_utf8)
        .sum();
    (line_start + column_bytes).min(text.len())
}

fn from_value(value: serde_json::Value) -> Node {
    let value = match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(flag) => Value::Bool(flag),
        serde_json::Value::Number(number) => match number.as_i64() {
            Some(int) => Value::Int(int),
            None => Value::Float(number.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(text) => Value::String(text),
        serde_json::Value::Array(items) => {
            Value::Array(items.into_iter().map(from_value).collect())
        }
        serde_json::Value::Object(map) => Value::Table(
            map.into_iter()
                .map(|(name, value)| {
                    (
                        Key {
                            name,
                            span: Span::default(),
                        },
                        from_value(value),
                    )
                })
                .collect(),
        ),
    };
    Node::new(value, Span::default())
}
