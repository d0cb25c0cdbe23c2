//! Reading a WAMP message's top-level elements one by one, building only
//! the small ones. Pure: bytes in, values and byte ranges out.
//!
//! The small elements (message type, IDs, URIs, options) are decoded into
//! [`Value`]s as they are read. The payload elements (Arguments,
//! ArgumentsKw) are only checked, with nothing allocated, to be what `Value`
//! decoding accepts, and carried on as the sender's bytes (see
//! [`crate::payload`]). Because the check accepts what decoding accepts,
//! decoding a carried payload later cannot fail; the tests hold the two to
//! that, on a corpus and on random input.
//!
//! JSON is checked by serde_json itself, visiting every value the way the
//! `Value` visitor does (strings unescaped, numbers parsed, keys strings);
//! serde_json's own "skip a value" path is laxer (it accepts numbers out of
//! range and lone surrogates that `Value` refuses), so it is not used.
//! MessagePack is walked by hand: rmp-serde cannot tell how many bytes one
//! value took from a slice without copying strings. Its check accepts a
//! subset of what rmp-serde decodes: nesting stops at 128 levels, as JSON's
//! does.

use crate::value::Value;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::ops::Range;

/// Reads a message's top-level array one element at a time: each element
/// is decoded into a `Value` (`value`) or checked and left as bytes
/// (`raw`), in one pass over it.
pub struct Cursor<'a> {
    json: bool,
    b: &'a [u8],
    /// Where the next element (JSON: or the separator before it) starts.
    at: usize,
    /// MessagePack: elements the array header announced and not yet read.
    left: u64,
    /// JSON: the closing bracket has been read.
    closed: bool,
}

impl<'a> Cursor<'a> {
    /// Reads the array's opening (`[`, or the MessagePack array header).
    pub fn json(b: &'a [u8]) -> Result<Cursor<'a>, String> {
        let at = skip_ws(b, 0);
        if b.get(at) != Some(&b'[') {
            return Err("a WAMP message must be an array".into());
        }
        let mut c = Cursor { json: true, b, at: at + 1, left: 0, closed: false };
        let i = skip_ws(b, c.at);
        if b.get(i) == Some(&b']') {
            c.at = i + 1;
            c.closed = true;
        }
        Ok(c)
    }

    pub fn msgpack(b: &'a [u8]) -> Result<Cursor<'a>, String> {
        let mut r = Reader { b, i: 0 };
        let left = match r.u8()? {
            m @ 0x90..=0x9f => u64::from(m & 0x0f),
            0xdc => r.be(2)?,
            0xdd => r.be(4)?,
            _ => return Err("a WAMP message must be an array".into()),
        };
        Ok(Cursor { json: false, b, at: r.i, left, closed: false })
    }

    /// Moves to the start of the next element; `None` at the end.
    #[inline]
    fn next_start(&mut self) -> Result<Option<usize>, String> {
        if !self.json {
            if self.left == 0 {
                return Ok(None);
            }
            self.left -= 1;
            return Ok(Some(self.at));
        }
        if self.closed {
            return Ok(None);
        }
        Ok(Some(skip_ws(self.b, self.at)))
    }

    /// JSON: after an element ending at `end`, reads `,` or `]`.
    #[inline]
    fn after(&mut self, end: usize) -> Result<(), String> {
        if !self.json {
            self.at = end;
            return Ok(());
        }
        let i = skip_ws(self.b, end);
        match self.b.get(i) {
            Some(b',') => self.at = i + 1,
            Some(b']') => {
                self.at = i + 1;
                self.closed = true;
            }
            _ => return Err(format!("invalid JSON: expected ',' or ']' at byte {i}")),
        }
        Ok(())
    }

    /// The next element, decoded.
    #[inline]
    pub fn value(&mut self) -> Result<Option<Value>, String> {
        let Some(start) = self.next_start()? else { return Ok(None) };
        let rest = &self.b[start..];
        let (v, n) = if self.json {
            let mut stream = serde_json::Deserializer::from_slice(rest).into_iter::<Value>();
            match stream.next() {
                Some(Ok(v)) => (v, stream.byte_offset()),
                Some(Err(e)) => return Err(format!("invalid JSON: {e}")),
                None => return Err("invalid JSON: missing value".into()),
            }
        } else {
            let n = check_msgpack(rest)?;
            (msgpack_value(&rest[..n])?, n)
        };
        self.after(start + n)?;
        Ok(Some(v))
    }

    /// The next element if it is in a plain form (see `plain`), read by
    /// hand; otherwise `None` and nothing is read (`value` reads it).
    #[inline]
    pub fn plain_uint(&mut self) -> Option<u64> {
        let start = self.peek_at()?;
        let (n, len) = if self.json { json_uint(&self.b[start..])? } else { msgpack_uint(&self.b[start..])? };
        self.advance(start + len).then_some(n)
    }

    #[inline]
    pub fn plain_str(&mut self) -> Option<String> {
        let start = self.peek_at()?;
        let (s, len) = if self.json { json_str(&self.b[start..])? } else { msgpack_str(&self.b[start..])? };
        let s = s.to_owned();
        self.advance(start + len).then_some(s)
    }

    /// `{}`.
    #[inline]
    pub fn plain_empty_dict(&mut self) -> bool {
        let Some(start) = self.peek_at() else { return false };
        let len = match (self.json, &self.b[start..]) {
            (true, [b'{', b'}', ..]) => 2,
            (false, [0x80, ..]) => 1,
            _ => return false,
        };
        self.advance(start + len)
    }

    /// Where the next element starts, if there is one.
    fn peek_at(&self) -> Option<usize> {
        match self.json {
            true if self.closed => None,
            true => Some(skip_ws(self.b, self.at)),
            false if self.left == 0 => None,
            false => Some(self.at),
        }
    }

    /// Past a plain element ending at `end`; false (nothing moved) if what
    /// follows it is not a separator, for `value` to report.
    fn advance(&mut self, end: usize) -> bool {
        let saved = (self.at, self.left, self.closed);
        if !self.json {
            self.left -= 1;
        }
        if self.after(end).is_err() {
            (self.at, self.left, self.closed) = saved;
            return false;
        }
        true
    }

    /// The next element, checked, as its byte range in the message.
    pub fn raw(&mut self) -> Result<Option<Range<usize>>, String> {
        let Some(start) = self.next_start()? else { return Ok(None) };
        let rest = &self.b[start..];
        let n = if self.json { check_json(rest)? } else { check_msgpack(rest)? };
        self.after(start + n)?;
        Ok(Some(start..start + n))
    }

    /// The whole message.
    pub fn bytes(&self) -> &'a [u8] {
        self.b
    }

    /// The first byte of the next element, without reading it.
    pub fn peek(&self) -> Option<u8> {
        if (self.json && self.closed) || (!self.json && self.left == 0) {
            return None;
        }
        let i = if self.json { skip_ws(self.b, self.at) } else { self.at };
        self.b.get(i).copied()
    }

    /// After the last element: nothing but whitespace may follow.
    pub fn finish(&self) -> Result<(), String> {
        if self.json && !self.closed && skip_ws(self.b, self.at) == self.b.len() {
            return Err("invalid JSON: the message's array is not closed".into());
        }
        if (self.json && !self.closed) || (!self.json && self.left > 0) {
            return Err("too many elements in message".into());
        }
        let end = if self.json { skip_ws(self.b, self.at) } else { self.at };
        if end != self.b.len() {
            return Err(format!("{} bytes after the message", self.b.len() - end));
        }
        Ok(())
    }
}

// The plain forms of the small elements, read without serde: unsigned
// integers (message types, IDs; in JSON up to 16 digits, written plainly)
// and strings (URIs; in JSON without escapes, in MessagePack in UTF-8).
// Anything else is left to serde. Each returns the value and its length.

#[inline]
fn json_uint(b: &[u8]) -> Option<(u64, usize)> {
    let digits = b.iter().take(17).take_while(|c| c.is_ascii_digit()).count();
    let ends = matches!(b.get(digits), Some(b',' | b']' | b' ' | b'\n' | b'\r' | b'\t'));
    // A leading zero is JSON only for 0 itself.
    if digits == 0 || digits > 16 || !ends || (b[0] == b'0' && digits > 1) {
        return None;
    }
    Some((b[..digits].iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')), digits))
}

#[inline]
fn json_str(b: &[u8]) -> Option<(&str, usize)> {
    if b.first() != Some(&b'"') {
        return None;
    }
    let len = b[1..].iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
    if b[1 + len] != b'"' {
        return None;
    }
    let s = std::str::from_utf8(&b[1..1 + len]).ok()?;
    // JSON's binary convention: left to serde (and `Value`).
    (!s.starts_with('\0')).then_some((s, len + 2))
}

#[inline]
fn msgpack_uint(b: &[u8]) -> Option<(u64, usize)> {
    let be = |n: usize| b.get(1..1 + n).map(|x| x.iter().fold(0u64, |acc, &c| (acc << 8) | u64::from(c)));
    match *b.first()? {
        m @ 0x00..=0x7f => Some((u64::from(m), 1)),
        0xcc => Some((be(1)?, 2)),
        0xcd => Some((be(2)?, 3)),
        0xce => Some((be(4)?, 5)),
        0xcf => Some((be(8)?, 9)),
        _ => None,
    }
}

#[inline]
fn msgpack_str(b: &[u8]) -> Option<(&str, usize)> {
    let (len, head) = match *b.first()? {
        m @ 0xa0..=0xbf => (usize::from(m & 0x1f), 1),
        0xd9 => (usize::from(*b.get(1)?), 2),
        0xda => (usize::from(u16::from_be_bytes([*b.get(1)?, *b.get(2)?])), 3),
        _ => return None,
    };
    let s = std::str::from_utf8(b.get(head..head + len)?).ok()?;
    Some((s, head + len))
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
        i += 1;
    }
    i
}

/// Checks the JSON value at the start of `b`; returns its length.
pub fn check_json(b: &[u8]) -> Result<usize, String> {
    let mut stream = serde_json::Deserializer::from_slice(b).into_iter::<Check>();
    match stream.next() {
        Some(Ok(Check)) => Ok(stream.byte_offset()),
        Some(Err(e)) => Err(format!("invalid JSON: {e}")),
        None => Err("invalid JSON: missing value".into()),
    }
}

/// A value checked and thrown away, visited as `Value`'s visitor visits it.
struct Check;

impl<'de> Deserialize<'de> for Check {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Check, D::Error> {
        d.deserialize_any(CheckVisitor)
    }
}

struct CheckVisitor;

impl<'de> Visitor<'de> for CheckVisitor {
    type Value = Check;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a WAMP value")
    }
    fn visit_unit<E>(self) -> Result<Check, E> {
        Ok(Check)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Check, E> {
        Ok(Check)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Check, E> {
        Ok(Check)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Check, E> {
        Ok(Check)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Check, E> {
        Ok(Check)
    }
    fn visit_str<E>(self, _: &str) -> Result<Check, E> {
        Ok(Check)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Check, A::Error> {
        while seq.next_element::<Check>()?.is_some() {}
        Ok(Check)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Check, A::Error> {
        while map.next_key::<Key>()?.is_some() {
            map.next_value::<Check>()?;
        }
        Ok(Check)
    }
}

/// A dictionary key: a string that `Value` does not read as binary
/// (JSON's `"\u0000"` + base64 convention).
struct Key;

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        d.deserialize_any(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
        match s.strip_prefix('\0') {
            Some(encoded) if B64.decode(encoded).is_ok() => Err(E::custom("dictionary keys must be strings")),
            _ => Ok(Key),
        }
    }
}

/// Checks the MessagePack value at the start of `b`; returns its length.
pub fn check_msgpack(b: &[u8]) -> Result<usize, String> {
    let mut r = Reader { b, i: 0 };
    r.value(MSGPACK_DEPTH)?;
    Ok(r.i)
}

/// Nesting limit (arrays, maps and extensions), serde_json's for JSON.
/// rmp-serde allows 1024, deep enough to overflow a worker's stack in a
/// debug build; the check refuses past this, so decoding stays shallow.
const MSGPACK_DEPTH: u32 = 128;

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        match self.i.checked_add(n) {
            Some(end) if end <= self.b.len() => {
                let s = &self.b[self.i..end];
                self.i = end;
                Ok(s)
            }
            _ => Err("invalid MessagePack: truncated".into()),
        }
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    /// A big-endian unsigned integer of `n` (1, 2 or 4) bytes.
    fn be(&mut self, n: usize) -> Result<u64, String> {
        Ok(self.take(n)?.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    }

    fn skip(&mut self, n: u64) -> Result<(), String> {
        let n = usize::try_from(n).map_err(|_| "invalid MessagePack: truncated".to_string())?;
        self.take(n).map(|_| ())
    }

    /// One value; `depth` is what is left of the nesting limit.
    fn value(&mut self, depth: u32) -> Result<(), String> {
        let m = self.u8()?;
        match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Ok(()),
            0xc1 => Err("invalid MessagePack: reserved marker 0xc1".into()),
            0xcc | 0xd0 => self.skip(1),
            0xcd | 0xd1 => self.skip(2),
            0xca | 0xce | 0xd2 => self.skip(4),
            0xcb | 0xcf | 0xd3 => self.skip(8),
            // Strings (invalid UTF-8 reads as binary) and binary.
            0xa0..=0xbf => self.skip(u64::from(m & 0x1f)),
            0xc4 | 0xd9 => self.be(1).and_then(|n| self.skip(n)),
            0xc5 | 0xda => self.be(2).and_then(|n| self.skip(n)),
            0xc6 | 0xdb => self.be(4).and_then(|n| self.skip(n)),
            // Extensions: a type byte and the data (read as null).
            0xd4..=0xd8 => {
                nest(depth)?;
                self.skip(1 + (1u64 << (m - 0xd4)))
            }
            0xc7..=0xc9 => {
                nest(depth)?;
                let n = self.be(1 << (m - 0xc7))?;
                self.skip(1 + n)
            }
            0x90..=0x9f => self.array(u64::from(m & 0x0f), depth),
            0xdc => self.be(2).and_then(|n| self.array(n, depth)),
            0xdd => self.be(4).and_then(|n| self.array(n, depth)),
            0x80..=0x8f => self.map(u64::from(m & 0x0f), depth),
            0xde => self.be(2).and_then(|n| self.map(n, depth)),
            0xdf => self.be(4).and_then(|n| self.map(n, depth)),
        }
    }

    fn array(&mut self, n: u64, depth: u32) -> Result<(), String> {
        let depth = nest(depth)?;
        for _ in 0..n {
            self.value(depth)?;
        }
        Ok(())
    }

    fn map(&mut self, n: u64, depth: u32) -> Result<(), String> {
        let depth = nest(depth)?;
        for _ in 0..n {
            self.key()?;
            self.value(depth)?;
        }
        Ok(())
    }

    /// A dictionary key: a string, in UTF-8.
    fn key(&mut self) -> Result<(), String> {
        let n = match self.u8()? {
            m @ 0xa0..=0xbf => u64::from(m & 0x1f),
            0xd9 => self.be(1)?,
            0xda => self.be(2)?,
            0xdb => self.be(4)?,
            _ => return Err("dictionary keys must be strings".into()),
        };
        let n = usize::try_from(n).map_err(|_| "invalid MessagePack: truncated".to_string())?;
        let s = self.take(n)?;
        if std::str::from_utf8(s).is_err() {
            return Err("dictionary keys must be strings".into());
        }
        Ok(())
    }
}

fn nest(depth: u32) -> Result<u32, String> {
    if depth <= 1 {
        return Err("invalid MessagePack: nested too deeply".into());
    }
    Ok(depth - 1)
}

/// Decodes one checked element into a `Value`.
pub fn json_value(b: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(b).map_err(|e| format!("invalid JSON: {e}"))
}

/// Decodes one checked element into a `Value`.
pub fn msgpack_value(b: &[u8]) -> Result<Value, String> {
    rmp_serde::from_slice(b).map_err(|e| format!("invalid MessagePack: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift), for random inputs.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn random_value(r: &mut Rng, depth: u32) -> Value {
        match r.below(if depth == 0 { 7 } else { 9 }) {
            0 => Value::Null,
            1 => Value::Bool(r.below(2) == 0),
            2 => Value::Int(-(r.below(1 << 40) as i64) - 1),
            3 => Value::UInt(r.next() >> r.below(64)),
            4 => Value::Float((r.next() as f64) / 7.0),
            5 => Value::Str(["", "a", "é\"\\\n", "\u{1F98A}", "x".repeat(40).as_str()][r.below(5) as usize].into()),
            6 => Value::Bin((0..r.below(5)).map(|i| i as u8).collect()),
            7 => Value::List((0..r.below(4)).map(|_| random_value(r, depth - 1)).collect()),
            _ => Value::Dict((0..r.below(4)).map(|i| (format!("k{i}"), random_value(r, depth - 1))).collect()),
        }
    }

    /// The check accepts exactly what `Value` decoding accepts, and says
    /// how long the value is.
    fn agrees_json(b: &[u8]) {
        let checked = check_json(b);
        let mut stream = serde_json::Deserializer::from_slice(b).into_iter::<Value>();
        let decoded = match stream.next() {
            Some(Ok(_)) => Ok(stream.byte_offset()),
            Some(Err(e)) => Err(e.to_string()),
            None => Err("none".into()),
        };
        assert_eq!(checked.is_ok(), decoded.is_ok(), "{:?}: {checked:?} vs {decoded:?}", String::from_utf8_lossy(b));
        if let (Ok(a), Ok(b)) = (checked, decoded) {
            assert_eq!(a, b);
        }
    }

    fn agrees_msgpack(b: &[u8]) {
        let checked = check_msgpack(b);
        // rmp-serde ignores bytes after the value: the checked length must
        // be enough to decode it.
        let decoded = rmp_serde::from_slice::<Value>(b);
        match (&checked, &decoded) {
            (Ok(n), Ok(_)) => assert!(rmp_serde::from_slice::<Value>(&b[..*n]).is_ok()),
            (Err(_), Err(_)) => {}
            _ => panic!("{b:02x?}: check {checked:?}, decode {:?}", decoded.map(|_| ())),
        }
    }

    /// The hand-read plain forms read what serde reads.
    fn plain_agrees(json: &[u8], mp: &[u8]) {
        let followed = [json, b","].concat();
        let want = json_value(json);
        if let Some((n, len)) = json_uint(&followed) {
            assert_eq!((Ok(Value::UInt(n)), len), (want.clone(), json.len()), "{}", String::from_utf8_lossy(json));
        }
        if let Some((s, len)) = json_str(&followed) {
            assert_eq!((Ok(Value::Str(s.into())), len), (want, json.len()), "{}", String::from_utf8_lossy(json));
        }
        let want = msgpack_value(mp);
        if let Some((n, len)) = msgpack_uint(mp) {
            assert_eq!((Ok(Value::UInt(n)), Ok(len)), (want.clone(), check_msgpack(mp)), "{mp:02x?}");
        }
        if let Some((s, len)) = msgpack_str(mp) {
            assert_eq!((Ok(Value::Str(s.into())), Ok(len)), (want, check_msgpack(mp)), "{mp:02x?}");
        }
    }

    #[test]
    fn plain_forms() {
        for j in ["0", "7", "9007199254740992", "99999999999999999", "01", "1.5", "\"a.b\"", "\"\\u0041\"", "-1"] {
            plain_agrees(j.as_bytes(), &[]);
        }
        assert_eq!(json_uint(b"12,"), Some((12, 2)));
        assert_eq!(json_uint(b"12"), None, "not followed by a separator");
        assert_eq!(json_str(b"\"x\"]"), Some(("x", 3)));
        assert_eq!(json_str(b"\"\\u0000AA==\","), None, "binary: serde's");
        for m in [
            &[0x05][..],
            &[0xcc, 0xff],
            &[0xcf, 0, 0, 0, 0, 0, 0, 1, 0],
            &[0xa1, b'x'],
            &[0xa2, 0xff, 0xfe],
            &[0xcd, 1],
        ] {
            plain_agrees(&[], m);
        }
        let mut c = Cursor::json(b"[16, \"a\" ,{}, 7 x]").unwrap();
        assert_eq!((c.plain_uint(), c.plain_str(), c.plain_empty_dict()), (Some(16), Some("a".into()), true));
        assert_eq!(c.plain_uint(), None, "7 is not followed by a separator");
        assert!(c.value().is_err());
    }

    #[test]
    fn json_corpus() {
        for s in [
            "1",
            "-1",
            "1.5",
            "1e400",
            "-1e400",
            "123456789012345678901234567890",
            "1.5e-400",
            "\"a\"",
            "\"\\ud800\"",
            "\"\\ud83e\\udd8a\"",
            "\"\\u0000AAEC\"",
            "{\"\\u0000AAEC\":1}",
            "{\"\\u0000nope!\":1}",
            "{\"a\":1,}",
            "[1,]",
            "[",
            "{",
            "nul",
            "true",
            "[[[]]]",
            "{\"a\":[1,{\"b\":null}]}",
            "\"\u{7f}\"",
            "\"\t\"",
            "01",
            "-",
            "1.",
            "[1 2]",
            "{1:2}",
        ] {
            agrees_json(s.as_bytes());
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        agrees_json(deep.as_bytes());
        let ok = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(check_json(ok.as_bytes()).is_ok());
    }

    #[test]
    fn msgpack_corpus() {
        let cases: &[&[u8]] = &[
            &[0xc1],
            &[0x91],
            &[0x91, 0x01],
            &[0x81, 0x01, 0x02],
            &[0x81, 0xa1, b'k', 0x02],
            &[0x81, 0xa1, 0xff, 0x02],
            &[0xa2, 0xff, 0xfe],
            &[0xd4, 0x00, 0x00],
            &[0xd4, 0x00],
            &[0xc7, 0x01, 0x05, 0xaa],
            &[0xc4, 0x02, 1, 2],
            &[0xc4, 0x03, 1, 2],
            &[0xdc, 0x00, 0x01, 0xc0],
            &[0xdd, 0xff, 0xff, 0xff, 0xff],
            &[0xcb, 0, 0, 0, 0, 0, 0, 0, 0],
            &[0xde, 0x00, 0x01, 0xd9, 0x01, b'a', 0xc3],
        ];
        for c in cases {
            agrees_msgpack(c);
        }
        let nested = |n| [vec![0x91; n], vec![0xc0]].concat();
        assert!(check_msgpack(&nested(200)).is_err());
        assert!(check_msgpack(&nested(128)).is_err());
        assert_eq!(check_msgpack(&nested(127)), Ok(128));
        agrees_msgpack(&nested(127));
    }

    /// Random values, encoded, then cut short and with random bytes
    /// changed: check and decoding agree on every one.
    #[test]
    fn random_input_agrees() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..4000 {
            let v = random_value(&mut r, 4);
            let mut json = serde_json::to_vec(&v).unwrap();
            let mut mp = rmp_serde::to_vec(&v).unwrap();
            agrees_json(&json);
            agrees_msgpack(&mp);
            plain_agrees(&json, &mp);
            assert_eq!(check_json(&json), Ok(json.len()));
            assert_eq!(check_msgpack(&mp), Ok(mp.len()));
            for bytes in [&mut json, &mut mp] {
                if bytes.is_empty() {
                    continue;
                }
                let at = r.below(bytes.len() as u64) as usize;
                bytes[at] = r.next() as u8;
            }
            agrees_json(&json);
            agrees_msgpack(&mp);
            let cut = r.below(json.len() as u64 + 1) as usize;
            agrees_json(&json[..cut]);
            let cut = r.below(mp.len() as u64 + 1) as usize;
            agrees_msgpack(&mp[..cut]);
        }
    }

    /// Every element of a message, as values (`raw` for the last `raws`).
    fn read(c: &mut Cursor, raws: usize, total: usize) -> Result<Vec<String>, String> {
        let mut got = Vec::new();
        for i in 0..total {
            if i + raws >= total {
                let Some(r) = c.raw()? else { break };
                got.push(format!("raw {}..{}", r.start, r.end));
            } else {
                let Some(v) = c.value()? else { break };
                got.push(format!("{v:?}"));
            }
        }
        c.finish()?;
        Ok(got)
    }

    #[test]
    fn reads_messages() {
        let b = br#" [16, 1 , {"a":[1,2]}, "t.x", ["x"], {"k":1} ] "#;
        let got = read(&mut Cursor::json(b).unwrap(), 2, 6).unwrap();
        assert_eq!(got[..2], ["UInt(16)", "UInt(1)"]);
        assert_eq!(got[3], r#"Str("t.x")"#);
        assert_eq!(&b[30..35], br#"["x"]"#);
        assert_eq!(got[4..], ["raw 30..35", "raw 37..44"]);
        assert_eq!(read(&mut Cursor::json(b"[]").unwrap(), 0, 1).unwrap().len(), 0);
        for bad in ["", "{}", "[1,]", "[1", "[1] x", "[1 2]", "[01]", "[1e400]", "[\"\\ud800\"]"] {
            let r = Cursor::json(bad.as_bytes()).and_then(|mut c| read(&mut c, 1, 3));
            assert!(r.is_err(), "{bad} read as {r:?}");
        }
        // Too many elements for what the reader takes.
        assert!(Cursor::json(b"[1,2,3]").and_then(|mut c| read(&mut c, 0, 2)).is_err());
        // Integers: plain ones read by hand, the rest by serde.
        let got = read(&mut Cursor::json(b"[0, 9007199254740992,18446744073709551615, -1, 2.5,7e0]").unwrap(), 0, 6);
        assert_eq!(
            got.unwrap(),
            ["UInt(0)", "UInt(9007199254740992)", "UInt(18446744073709551615)", "Int(-1)", "Float(2.5)", "Float(7.0)"]
        );
        let v = Value::List(vec![Value::UInt(16), Value::Dict(vec![]), Value::Str("t".into()), Value::List(vec![])]);
        let mp = rmp_serde::to_vec(&v).unwrap();
        let got = read(&mut Cursor::msgpack(&mp).unwrap(), 1, 4).unwrap();
        assert_eq!(got, ["UInt(16)", "Dict([])", r#"Str("t")"#, "raw 5..6"]);
        for bad in [&[0x92, 0x01][..], &[0x91, 0x01, 0x01], &[0x81, 0x01, 0x01], &[0x91, 0xc1]] {
            assert!(Cursor::msgpack(bad).and_then(|mut c| read(&mut c, 0, 2)).is_err(), "{bad:02x?}");
        }
    }
}
