//! A format-neutral document tree in which every value and key keeps its span, so that
//! rewrites, decoding and validation can all point at the text the user wrote.

mod json;
mod toml;
mod yaml;

use crate::diagnostic::Diagnostic;
pub(crate) use crate::keypath::path;
pub use crate::keypath::{KeyPath, Segment};
use crate::source::{Format, SourceFile, Span};

/// Identity of a node within one tree, assigned in document order by [`Node::number`].
pub(crate) type NodeId = u32;

/// A value of the document with the span of its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub(crate) id: NodeId,
    pub value: Value,
    pub span: Span,
}

/// A key of a table with the span of its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub span: Span,
}

/// The shapes a document value can take. Tables keep their keys in document order.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    Datetime(String),
    Array(Vec<Node>),
    Table(Vec<(Key, Node)>),
}

impl Value {
    /// What the value is, for messages: `a string`, `an integer`, ...
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::String(_) => "a string",
            Value::Datetime(_) => "a datetime",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }
}

impl Node {
    pub fn new(value: Value, span: Span) -> Node {
        Node { id: 0, value, span }
    }

    pub fn table(entries: Vec<(Key, Node)>, span: Span) -> Node {
        Node::new(Value::Table(entries), span)
    }

    pub fn as_table(&self) -> Option<&Vec<(Key, Node)>> {
        match &self.value {
            Value::Table(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn as_table_mut(&mut self) -> Option<&mut Vec<(Key, Node)>> {
        match &mut self.value {
            Value::Table(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::String(text) => Some(text),
            _ => None,
        }
    }

    /// The value under `key` in a table.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_table()?
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, node)| node)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        self.as_table_mut()?
            .iter_mut()
            .find(|(k, _)| k.name == key)
            .map(|(_, node)| node)
    }

    /// The key under which `key` is stored in a table (for its span).
    pub fn key(&self, key: &str) -> Option<&Key> {
        self.as_table()?
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(k, _)| k)
    }

    /// Removes `key` from a table, returning its key and value.
    pub fn remove(&mut self, key: &str) -> Option<(Key, Node)> {
        let entries = self.as_table_mut()?;
        let index = entries.iter().position(|(k, _)| k.name == key)?;
        Some(entries.remove(index))
    }

    /// Sets `key` in a table, replacing an existing value in place or appending.
    pub fn insert(&mut self, key: Key, value: Node) {
        if let Some(entries) = self.as_table_mut() {
            match entries.iter_mut().find(|(k, _)| k.name == key.name) {
                Some(slot) => slot.1 = value,
                None => entries.push((key, value)),
            }
        }
    }

    /// The node at `path`, if every step of it exists.
    pub fn find(&self, path: &[Segment]) -> Option<&Node> {
        let mut node = self;
        for segment in path {
            node = match (segment, &node.value) {
                (Segment::Key(key), Value::Table(_)) => node.get(key)?,
                (Segment::Index(index), Value::Array(items)) => items.get(*index)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// The span that best points at `path`: the value if it exists, otherwise the nearest
    /// ancestor that does.
    pub fn span_of(&self, path: &[Segment]) -> Span {
        let mut node = self;
        for segment in path {
            let next = match (segment, &node.value) {
                (Segment::Key(key), Value::Table(_)) => node.get(key),
                (Segment::Index(index), Value::Array(items)) => items.get(*index),
                _ => None,
            };
            match next {
                Some(next) => node = next,
                None => break,
            }
        }
        node.span
    }

    /// Gives every node a distinct id in document order; done once the tree stops changing.
    pub(crate) fn number(&mut self) {
        let mut next = 0;
        let mut stack = vec![self];
        while let Some(node) = stack.pop() {
            node.id = next;
            next += 1;
            match &mut node.value {
                Value::Array(items) => stack.extend(items.iter_mut().rev()),
                Value::Table(entries) => stack.extend(entries.iter_mut().rev().map(|(_, v)| v)),
                _ => {}
            }
        }
    }
}

/// Reads a source file into a tree, or says why its syntax is wrong.
pub fn parse(source: &SourceFile) -> Result<Node, Vec<Diagnostic>> {
    match source.format() {
        Format::Toml => toml::parse(source.text()),
        Format::Json => json::parse(source.text()),
        Format::Yaml => yaml::parse(source.text()),
    }
}
