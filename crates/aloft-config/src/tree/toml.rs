//! TOML into the tree, with `toml`'s spanned parser (every syntax error is reported).

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{Key, Node, Value};
use crate::diagnostic::Diagnostic;
use crate::source::Span;
use crate::tree::KeyPath;

pub(super) fn parse(text: &str) -> Result<Node, Vec<Diagnostic>> {
    let (root, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        return Err(errors
            .into_iter()
            .map(|error| {
                let message = format!("invalid TOML: {}", error.message().trim_end());
                let diagnostic = Diagnostic::error(KeyPath::root(), message);
                match error.span() {
                    Some(span) => diagnostic.at(span.into()),
                    None => diagnostic,
                }
            })
            .collect());
    }
    let span = root.span();
    let mut errors = Vec::new();
    let node = table(
        root.into_inner(),
        span.into(),
        &KeyPath::root(),
        &mut errors,
    );
    if errors.is_empty() {
        Ok(node)
    } else {
        Err(errors)
    }
}

fn table(table: DeTable<'_>, span: Span, path: &KeyPath, errors: &mut Vec<Diagnostic>) -> Node {
    let entries = table
        .into_iter()
        .map(|(key, value)| {
            let key_span: Span = key.span().into();
            let name = key.into_inner().into_owned();
            let child = path.child(name.as_str());
            let value = node(value, &child, errors);
            (
                Key {
                    name,
                    span: key_span,
                },
                value,
            )
        })
        .collect();
    Node::table(entries, span)
}

fn node(value: Spanned<DeValue<'_>>, path: &KeyPath, errors: &mut Vec<Diagnostic>) -> Node {
    let span: Span = value.span().into();
    let value = match value.into_inner() {
        DeValue::String(text) => Value::String(text.into_owned()),
        DeValue::Integer(integer) => match i64::from_str_radix(integer.as_str(), integer.radix()) {
            Ok(number) => Value::Int(number),
            Err(_) => {
                errors.push(
                    Diagnostic::error(path.clone(), "integer is out of range (at most 64 bits)")
                        .at(span),
                );
                Value::Null
            }
        },
        DeValue::Float(float) => match float.as_str().parse::<f64>() {
            Ok(number) => Value::Float(number),
            Err(_) => {
                errors.push(Diagnostic::error(path.clone(), "invalid float").at(span));
                Value::Null
            }
        },
        DeValue::Boolean(flag) => Value::Bool(flag),
        DeValue::Datetime(datetime) => Value::Datetime(datetime.to_string()),
        DeValue::Array(array) => Value::Array(
            array
                .into_iter()
                .enumerate()
                .map(|(index, item)| node(item, &path.child(index), errors))
                .collect(),
        ),
        DeValue::Table(inner) => return table(inner, span, path, errors),
    };
    Node::new(value, span)
}
