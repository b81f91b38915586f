//! The on-disk record of one log line.
//!
//! ```text
//! u32 payload length | u32 CRC-32 of the payload | payload
//! payload: u64 seq | i64 unix ns | u8 stream | u16+app | u16+machine | u16+region
//!          | u16+instance | u32+text          (little endian; strings are UTF-8)
//! ```
//!
//! A record whose length runs past the end of the file or whose CRC does not match is
//! where a crash cut the file: recovery truncates there.

use std::fmt;

/// Bytes before a record's payload.
pub(crate) const HEADER: usize = 8;
/// The longest line kept (longer ones are cut, with `…` appended).
pub const MAX_TEXT: usize = 64 * 1024;
/// The longest name field (app, machine, region, instance).
const MAX_NAME: usize = 255;

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    /// The platform's own events about the machine (start, exit, checks, deploys).
    Platform,
}

impl Stream {
    fn code(self) -> u8 {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
            Stream::Platform => 2,
        }
    }

    fn from_code(code: u8) -> Option<Stream> {
        match code {
            0 => Some(Stream::Stdout),
            1 => Some(Stream::Stderr),
            2 => Some(Stream::Platform),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Platform => "platform",
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A line to store (the store numbers it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// When the line was written, Unix nanoseconds.
    pub timestamp_ns: i64,
    pub stream: Stream,
    pub app: String,
    pub machine: String,
    pub region: String,
    /// The machine's instance (its config version) that wrote it.
    pub instance: String,
    pub text: String,
}

/// A stored line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// The store's number for the line: unique and increasing per host.
    pub seq: u64,
    pub timestamp_ns: i64,
    pub stream: Stream,
    pub app: String,
    pub machine: String,
    pub region: String,
    pub instance: String,
    pub text: String,
}

fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Appends the record of `entry` numbered `seq` to `out`.
pub(crate) fn encode(seq: u64, entry: &NewEntry, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&entry.timestamp_ns.to_le_bytes());
    out.push(entry.stream.code());
    for name in [&entry.app, &entry.machine, &entry.region, &entry.instance] {
        let name = cut(name, MAX_NAME);
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
    }
    let text = cut(&entry.text, MAX_TEXT);
    let long = text.len() < entry.text.len();
    let text_len = text.len() + if long { '…'.len_utf8() } else { 0 };
    out.extend_from_slice(&(text_len as u32).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    if long {
        out.extend_from_slice("…".as_bytes());
    }
    let payload = &out[start + HEADER..];
    let length = payload.len() as u32;
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&length.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A record read in place: its fields borrow the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct View<'a> {
    pub(crate) seq: u64,
    pub(crate) timestamp_ns: i64,
    pub(crate) stream: Stream,
    pub(crate) app: &'a [u8],
    pub(crate) machine: &'a [u8],
    pub(crate) region: &'a [u8],
    pub(crate) instance: &'a [u8],
    pub(crate) text: &'a [u8],
}

impl View<'_> {
    pub(crate) fn to_entry(self) -> Entry {
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        Entry {
            seq: self.seq,
            timestamp_ns: self.timestamp_ns,
            stream: self.stream,
            app: text(self.app),
            machine: text(self.machine),
            region: text(self.region),
            instance: text(self.instance),
            text: text(self.text),
        }
    }
}

/// What reading a record at some offset found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Read<'a> {
    /// A whole, intact record and its total size.
    Record(View<'a>, usize),
    /// The buffer ends inside the record (read more, or the file ends here).
    Partial,
    /// Not a record: a torn or corrupted write.
    Corrupt,
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if bytes.len() < n {
        return None;
    }
    let (head, tail) = bytes.split_at(n);
    *bytes = tail;
    Some(head)
}

fn u16_at(bytes: &mut &[u8]) -> Option<usize> {
    let raw = take(bytes, 2)?;
    Some(u16::from_le_bytes([raw[0], raw[1]]) as usize)
}

/// Reads the record at the start of `buffer`.
pub(crate) fn decode(buffer: &[u8]) -> Read<'_> {
    if buffer.len() < HEADER {
        return Read::Partial;
    }
    let length = u32::from_le_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]) as usize;
    let crc = u32::from_le_bytes([buffer[4], buffer[5], buffer[6], buffer[7]]);
    // The smallest payload: seq, timestamp, stream and five empty strings.
    if !(8 + 8 + 1 + 4 * 2 + 4..=MAX_TEXT + 4 * MAX_NAME + 64).contains(&length) {
        return Read::Corrupt;
    }
    if buffer.len() < HEADER + length {
        return Read::Partial;
    }
    let payload = &buffer[HEADER..HEADER + length];
    if crc32fast::hash(payload) != crc {
        return Read::Corrupt;
    }
    let parsed = (|| {
        let mut rest = payload;
        let seq = u64::from_le_bytes(take(&mut rest, 8)?.try_into().ok()?);
        let timestamp_ns = i64::from_le_bytes(take(&mut rest, 8)?.try_into().ok()?);
        let stream = Stream::from_code(take(&mut rest, 1)?[0])?;
        let n = u16_at(&mut rest)?;
        let app = take(&mut rest, n)?;
        let n = u16_at(&mut rest)?;
        let machine = take(&mut rest, n)?;
        let n = u16_at(&mut rest)?;
        let region = take(&mut rest, n)?;
        let n = u16_at(&mut rest)?;
        let instance = take(&mut rest, n)?;
        let n = u32::from_le_bytes(take(&mut rest, 4)?.try_into().ok()?) as usize;
        let text = take(&mut rest, n)?;
        rest.is_empty().then_some(View {
            seq,
            timestamp_ns,
            stream,
            app,
            machine,
            region,
            instance,
            text,
        })
    })();
    match parsed {
        Some(view) => Read::Record(view, HEADER + length),
        None => Read::Corrupt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str) -> NewEntry {
        NewEntry {
            timestamp_ns: 1_700_000_000_000_000_000,
            stream: Stream::Stderr,
            app: "web".to_owned(),
            machine: "148e21ea7d2e89".to_owned(),
            region: "ams".to_owned(),
            instance: "01J0".to_owned(),
            text: text.to_owned(),
        }
    }

    #[test]
    fn a_record_reads_back_and_a_torn_one_does_not() {
        let mut buffer = Vec::new();
        encode(7, &entry("hello"), &mut buffer);
        let Read::Record(view, size) = decode(&buffer) else {
            panic!("a record")
        };
        assert_eq!(size, buffer.len());
        let read = view.to_entry();
        assert_eq!(
            (read.seq, read.text.as_str(), read.stream),
            (7, "hello", Stream::Stderr)
        );
        assert_eq!(read.machine, "148e21ea7d2e89");
        assert_eq!(decode(&buffer[..buffer.len() - 1]), Read::Partial);
        let mut flipped = buffer.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(decode(&flipped), Read::Corrupt);
        assert_eq!(decode(&[0; 16]), Read::Corrupt);
    }

    #[test]
    fn long_lines_are_cut_on_a_character_boundary() {
        let mut buffer = Vec::new();
        encode(1, &entry(&"é".repeat(MAX_TEXT)), &mut buffer);
        let Read::Record(view, _) = decode(&buffer) else {
            panic!("a record")
        };
        let text = view.to_entry().text;
        assert!(text.ends_with('…') && text.len() <= MAX_TEXT + 3);
    }
}
