//! Decoding the tree into typed structs through serde, collecting every problem.
//!
//! The deserializer knows each struct's field list, so an unknown key becomes an error that
//! names the closest valid key (a warning inside `[experimental]`, whose keys are
//! open-ended) and decoding goes on without it. A value of the wrong type stops serde; the
//! decoder then records the error, sets that value aside and decodes again, so one run
//! reports the type errors of the whole file, each at its own position.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt::{self, Display};

use serde::de::value::StrDeserializer;
use serde::de::{self, DeserializeOwned, DeserializeSeed, Error as _, IntoDeserializer, Visitor};

use crate::diagnostic::{Diagnostic, did_you_mean, one_of};
use crate::source::Span;
use crate::tree::{Key, KeyPath, Node, NodeId, Segment, Value};

/// At most this many type errors are collected before decoding gives up.
const MAX_ATTEMPTS: usize = 100;

/// Keys that belong one level down: (struct, key) → where to write it instead.
const MISPLACED_KEYS: [(&str, &str, &str); 10] = [
    ("HttpService", "idle_timeout", "http_options.idle_timeout"),
    ("HttpService", "h2_backend", "http_options.h2_backend"),
    ("HttpService", "compress", "http_options.compress"),
    (
        "HttpService",
        "headers_read_timeout",
        "http_options.headers_read_timeout",
    ),
    ("HttpService", "alpn", "tls_options.alpn"),
    ("HttpService", "port", "internal_port"),
    (
        "Service",
        "port",
        "ports.port (in a [[services.ports]] section)",
    ),
    (
        "Service",
        "handlers",
        "ports.handlers (in a [[services.ports]] section)",
    ),
    (
        "Service",
        "force_https",
        "ports.force_https (in a [[services.ports]] section)",
    ),
    ("AppConfig", "region", "primary_region"),
];

/// The names of structs whose unknown keys are only warned about.
const OPEN_ENDED_STRUCTS: [&str; 1] = ["Experimental"];

/// An error raised while decoding, located once it passes through the node it is about.
#[derive(Debug)]
pub(crate) struct DecodeError {
    node: Option<NodeId>,
    span: Option<Span>,
    path: Option<KeyPath>,
    message: String,
    help: Option<String>,
}

impl DecodeError {
    fn located(mut self, node: &Node, path: &KeyPath) -> Self {
        if self.node.is_none() {
            self.node = Some(node.id);
            self.span = Some(node.span);
            self.path = Some(path.clone());
        }
        self
    }

    fn into_diagnostic(self) -> Diagnostic {
        let diagnostic =
            Diagnostic::error(self.path.unwrap_or_default(), self.message).with_help_opt(self.help);
        match self.span {
            Some(span) => diagnostic.at(span),
            None => diagnostic,
        }
    }
}

impl Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DecodeError {}

/// Plain-language names for what serde's primitive visitors expect.
fn expected_text(expected: &dyn de::Expected) -> String {
    let text = expected.to_string();
    match text.as_str() {
        "u8" => "an integer from 0 to 255".to_owned(),
        "u16" => "an integer from 0 to 65535".to_owned(),
        "u32" | "u64" | "usize" => "a non-negative integer".to_owned(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "an integer".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "a sequence" => "an array".to_owned(),
        "a map" => "a table".to_owned(),
        _ if text.starts_with("struct ") => "a table".to_owned(),
        _ if text.starts_with("a sequence") => "an array".to_owned(),
        _ => text,
    }
}

fn unexpected_text(unexpected: de::Unexpected<'_>) -> String {
    match unexpected {
        de::Unexpected::Str(text) => format!("the string {text:?}"),
        de::Unexpected::Signed(number) => format!("the integer {number}"),
        de::Unexpected::Unsigned(number) => format!("the integer {number}"),
        de::Unexpected::Float(number) => format!("the float {number}"),
        de::Unexpected::Bool(flag) => format!("the boolean {flag}"),
        de::Unexpected::Seq => "an array".to_owned(),
        de::Unexpected::Map => "a table".to_owned(),
        de::Unexpected::Unit => "null".to_owned(),
        other => other.to_string(),
    }
}

impl de::Error for DecodeError {
    fn custom<T: Display>(message: T) -> Self {
        DecodeError {
            node: None,
            span: None,
            path: None,
            message: message.to_string(),
            help: None,
        }
    }

    fn invalid_type(unexpected: de::Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        Self::custom(format!(
            "expected {}, found {}",
            expected_text(expected),
            unexpected_text(unexpected)
        ))
    }

    fn invalid_value(unexpected: de::Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        Self::custom(format!(
            "{} is not {}",
            unexpected_text(unexpected),
            expected_text(expected)
        ))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let mut error = Self::custom(format!(
            "unknown value {variant:?}, expected {}",
            one_of(expected)
        ));
        error.help = did_you_mean(variant, expected.iter().copied());
        error
    }

    fn duplicate_field(field: &'static str) -> Self {
        Self::custom(format!("`{field}` is given twice"))
    }
}

/// What one decoding run shares.
struct Run<'a> {
    set_aside: &'a HashSet<NodeId>,
    findings: RefCell<Vec<Diagnostic>>,
}

/// Decodes `root` into `T`. Returns the value (absent only when the top level itself could
/// not be decoded) and every finding, with the paths of the values set aside.
pub(crate) fn decode<T: DeserializeOwned>(root: &Node) -> Decoded<T> {
    let mut set_aside = HashSet::new();
    let mut errors = Vec::new();
    let mut failed_paths = Vec::new();
    for _ in 0..MAX_ATTEMPTS {
        let run = Run {
            set_aside: &set_aside,
            findings: RefCell::new(Vec::new()),
        };
        let result = T::deserialize(NodeDeserializer {
            node: root,
            path: KeyPath::root(),
            run: &run,
            open_ended: false,
        });
        let findings = run.findings.into_inner();
        match result {
            Ok(value) => {
                errors.extend(findings);
                return Decoded {
                    value: Some(value),
                    diagnostics: errors,
                    failed_paths,
                };
            }
            Err(error) => {
                let node = error.node;
                let path = error.path.clone().unwrap_or_default();
                errors.push(error.into_diagnostic());
                match node {
                    Some(id) if id != root.id && set_aside.insert(id) => failed_paths.push(path),
                    _ => {
                        errors.extend(findings);
                        return Decoded {
                            value: None,
                            diagnostics: errors,
                            failed_paths,
                        };
                    }
                }
            }
        }
    }
    errors.push(Diagnostic::error(
        KeyPath::root(),
        "too many errors; stopped reading the file",
    ));
    Decoded {
        value: None,
        diagnostics: errors,
        failed_paths,
    }
}

/// The outcome of [`decode`].
#[derive(Debug)]
pub(crate) struct Decoded<T> {
    pub(crate) value: Option<T>,
    pub(crate) diagnostics: Vec<Diagnostic>,
    /// Values that failed to decode and were left out of `value`.
    pub(crate) failed_paths: Vec<KeyPath>,
}

struct NodeDeserializer<'a, 'r> {
    node: &'a Node,
    path: KeyPath,
    run: &'r Run<'r>,
    open_ended: bool,
}

impl<'a, 'r> NodeDeserializer<'a, 'r> {
    fn child(&self, node: &'a Node, segment: Segment) -> NodeDeserializer<'a, 'r> {
        NodeDeserializer {
            node,
            path: self.path.child(segment),
            run: self.run,
            open_ended: self.open_ended,
        }
    }

    fn locate<T>(&self, result: Result<T, DecodeError>) -> Result<T, DecodeError> {
        result.map_err(|error| error.located(self.node, &self.path))
    }

    fn entries(&self) -> Vec<(&'a Key, &'a Node)> {
        match &self.node.value {
            Value::Table(entries) => entries
                .iter()
                .filter(|(_, value)| !self.run.set_aside.contains(&value.id))
                .map(|(key, value)| (key, value))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn wrong_type(&self, expected: &str) -> DecodeError {
        DecodeError::custom(format!(
            "expected {expected}, found {}",
            self.node.value.kind()
        ))
        .located(self.node, &self.path)
    }
}

impl<'de, 'a, 'r> de::Deserializer<'de> for NodeDeserializer<'a, 'r> {
    type Error = DecodeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        let result = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(flag) => visitor.visit_bool(*flag),
            Value::Int(number) => visitor.visit_i64(*number),
            Value::Float(number) => visitor.visit_f64(*number),
            Value::String(text) | Value::Datetime(text) => visitor.visit_str(text),
            Value::Array(_) => return self.deserialize_seq(visitor),
            Value::Table(_) => return self.deserialize_map(visitor),
        };
        self.locate(result)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.node.value {
            Value::Null => self.locate(visitor.visit_none()),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        let Value::Array(items) = &self.node.value else {
            return Err(self.wrong_type("an array"));
        };
        let items: Vec<(usize, &Node)> = items
            .iter()
            .enumerate()
            .filter(|(_, item)| !self.run.set_aside.contains(&item.id))
            .collect();
        let access = Seq {
            parent: &self,
            items: items.into_iter(),
        };
        let result = visitor.visit_seq(access);
        self.locate(result)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        if self.node.as_table().is_none() {
            return Err(self.wrong_type("a table"));
        }
        let entries = self.entries();
        let access = Map {
            parent: &self,
            entries: entries.into_iter(),
            value: None,
        };
        let result = visitor.visit_map(access);
        self.locate(result)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        if self.node.as_table().is_none() {
            return Err(self.wrong_type("a table"));
        }
        let open_ended = self.open_ended || OPEN_ENDED_STRUCTS.contains(&name);
        let mut known = Vec::new();
        for (key, value) in self.entries() {
            if fields.contains(&key.name.as_str()) {
                known.push((key, value));
                continue;
            }
            let path = self.path.child(key.name.as_str());
            let misplaced = MISPLACED_KEYS
                .iter()
                .find(|(owner, misplaced, _)| *owner == name && *misplaced == key.name)
                .map(|(_, _, instead)| format!("did you mean `{instead}`?"));
            let help = misplaced.or_else(|| did_you_mean(&key.name, fields.iter().copied()));
            let finding = if open_ended {
                Diagnostic::warning(path, "unknown key, ignored")
            } else {
                Diagnostic::error(path, "unknown key")
            };
            self.run
                .findings
                .borrow_mut()
                .push(finding.with_help_opt(help).at(key.span));
        }
        let parent = NodeDeserializer { open_ended, ..self };
        let access = Map {
            parent: &parent,
            entries: known.into_iter(),
            value: None,
        };
        let result = visitor.visit_map(access);
        parent.locate(result)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        match &self.node.value {
            Value::String(text) => {
                let result = visitor.visit_enum(
                    IntoDeserializer::<DecodeError>::into_deserializer(text.as_str()),
                );
                self.locate(result)
            }
            _ => Err(self.wrong_type("a string")),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct tuple tuple_struct identifier
    }
}

struct Seq<'p, 'a, 'r, I> {
    parent: &'p NodeDeserializer<'a, 'r>,
    items: I,
}

impl<'de, 'a, I: Iterator<Item = (usize, &'a Node)>> de::SeqAccess<'de> for Seq<'_, 'a, '_, I> {
    type Error = DecodeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DecodeError> {
        match self.items.next() {
            Some((index, item)) => {
                let child = self.parent.child(item, Segment::Index(index));
                let path = child.path.clone();
                seed.deserialize(child)
                    .map(Some)
                    .map_err(|error| error.located(item, &path))
            }
            None => Ok(None),
        }
    }
}

struct Map<'p, 'a, 'r, I> {
    parent: &'p NodeDeserializer<'a, 'r>,
    entries: I,
    value: Option<(&'a Key, &'a Node)>,
}

impl<'de, 'a, I: Iterator<Item = (&'a Key, &'a Node)>> de::MapAccess<'de> for Map<'_, 'a, '_, I> {
    type Error = DecodeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DecodeError> {
        match self.entries.next() {
            Some((key, value)) => {
                self.value = Some((key, value));
                let name: StrDeserializer<'_, DecodeError> = key.name.as_str().into_deserializer();
                seed.deserialize(name).map(Some).map_err(|error| {
                    let path = self.parent.path.child(key.name.as_str());
                    let node = Node {
                        span: key.span,
                        ..value.clone()
                    };
                    error.located(&node, &path)
                })
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DecodeError> {
        match self.value.take() {
            Some((key, value)) => {
                let child = self.parent.child(value, Segment::Key(key.name.clone()));
                let path = child.path.clone();
                // Errors raised after the value itself was read (a name that fails
                // validation, say) are located here.
                seed.deserialize(child)
                    .map_err(|error| error.located(value, &path))
            }
            None => Err(DecodeError::custom("value requested before its key")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Format, SourceFile};
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Inner {
        port: Option<u16>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Outer {
        name: Option<String>,
        #[serde(default)]
        inner: Vec<Inner>,
    }

    fn tree(text: &str) -> Node {
        let mut node = crate::tree::parse(&SourceFile::new("t.toml", text, Format::Toml)).unwrap();
        node.number();
        node
    }

    #[test]
    fn reports_every_type_error_and_unknown_key() {
        let root = tree(
            "name = 3\nnmae = 'x'\n[[inner]]\nport = 'x'\n[[inner]]\nport = 99999\n[[inner]]\nport = 8\n",
        );
        let decoded: Decoded<Outer> = decode(&root);
        let messages: Vec<String> = decoded
            .diagnostics
            .iter()
            .map(|d| format!("{}: {}", d.path, d.message))
            .collect();
        assert_eq!(messages.len(), 4, "{messages:#?}");
        assert!(messages.contains(&"name: expected a string, found the integer 3".to_owned()));
        assert!(
            messages.contains(
                &"inner[0].port: expected an integer from 0 to 65535, found the string \"x\""
                    .to_owned()
            )
        );
        assert!(messages.contains(
            &"inner[1].port: the integer 99999 is not an integer from 0 to 65535".to_owned()
        ));
        assert!(messages.contains(&"nmae: unknown key".to_owned()));
        let value = decoded.value.unwrap();
        assert_eq!(
            value.inner,
            vec![
                Inner { port: None },
                Inner { port: None },
                Inner { port: Some(8) }
            ]
        );
    }
}
