//! The little of protobuf's wire format that BuildKit's progress and session messages
//! need: a message's fields in order, varints and length-delimited values.

/// A protobuf field's value, as far as progress needs: varints and length-delimited
/// bytes (strings, messages); fixed-width values are skipped.
#[derive(Debug, PartialEq)]
pub(crate) enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Other,
}

/// The fields of a protobuf message, in order; stops at the first malformed one.
pub(crate) fn fields(mut message: &[u8]) -> Vec<(u64, Value<'_>)> {
    let mut found = Vec::new();
    while !message.is_empty() {
        let Some((key, rest)) = varint(message) else {
            break;
        };
        message = rest;
        let value = match key & 7 {
            0 => match varint(message) {
                Some((v, rest)) => {
                    message = rest;
                    Value::Varint(v)
                }
                None => break,
            },
            1 if message.len() >= 8 => {
                message = &message[8..];
                Value::Other
            }
            2 => {
                let Some((length, rest)) = varint(message) else {
                    break;
                };
                let Ok(length) = usize::try_from(length) else {
                    break;
                };
                if rest.len() < length {
                    break;
                }
                let (bytes, rest) = rest.split_at(length);
                message = rest;
                Value::Bytes(bytes)
            }
            5 if message.len() >= 4 => {
                message = &message[4..];
                Value::Other
            }
            _ => break,
        };
        found.push((key >> 3, value));
    }
    found
}

fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (index, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((value, &bytes[index + 1..]));
        }
    }
    None
}
