//! Minimal WAMP value model with JSON and MessagePack encoders/decoders.
//!
//! Decoding borrows strings from the input buffer whenever possible (no
//! escapes in JSON, always for MessagePack), so parsing an EVENT carrying a
//! large payload does not copy the payload.

use std::borrow::Cow;
use std::fmt::Write as _;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ser {
    Json,
    Msgpack,
}

impl Ser {
    pub fn subprotocol(self) -> &'static str {
        match self {
            Ser::Json => "wamp.2.json",
            Ser::Msgpack => "wamp.2.msgpack",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Ser::Json => "json",
            Ser::Msgpack => "msgpack",
        }
    }

    pub fn decode(self, b: &[u8]) -> Result<V<'_>, String> {
        match self {
            Ser::Json => {
                let mut p = JsonParser { b, i: 0 };
                let v = p.value()?;
                p.ws();
                if p.i != b.len() {
                    return Err(format!("trailing bytes in JSON at {}", p.i));
                }
                Ok(v)
            }
            Ser::Msgpack => {
                let mut p = MpParser { b, i: 0 };
                p.value()
            }
        }
    }

    pub fn encode(self, v: &V<'_>, out: &mut Vec<u8>) {
        match self {
            Ser::Json => json_encode(v, out),
            Ser::Msgpack => mp_encode(v, out),
        }
    }
}

/// A decoded WAMP value.
#[derive(Clone, Debug, PartialEq)]
pub enum V<'a> {
    Nil,
    Bool(bool),
    U(u64),
    I(i64),
    F(f64),
    Str(Cow<'a, str>),
    Bin(&'a [u8]),
    Arr(Vec<V<'a>>),
    Map(Vec<(V<'a>, V<'a>)>),
}

impl<'a> V<'a> {
    pub fn s(x: &'a str) -> V<'a> {
        V::Str(Cow::Borrowed(x))
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            V::U(u) => Some(*u),
            V::I(i) if *i >= 0 => Some(*i as u64),
            V::F(f) if *f >= 0.0 && f.fract() == 0.0 => Some(*f as u64),
            _ => None,
        }
    }

    #[cfg(test)]
    pub fn as_str(&self) -> Option<&str> {
        match self {
            V::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Bytes of a string or binary value.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            V::Str(s) => Some(s.as_bytes()),
            V::Bin(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_arr(&self) -> Option<&[V<'a>]> {
        match self {
            V::Arr(a) => Some(a),
            _ => None,
        }
    }

    /// Compact human-readable rendering (for error messages).
    pub fn show(&self) -> String {
        let mut out = Vec::new();
        json_encode(self, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

// ---------------------------------------------------------------- JSON

fn json_str(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let b = s.as_bytes();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: Option<&[u8]> = match c {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.extend_from_slice(&b[start..i]);
        match esc {
            Some(e) => out.extend_from_slice(e),
            None => {
                let mut tmp = String::new();
                let _ = write!(tmp, "\\u{:04x}", c);
                out.extend_from_slice(tmp.as_bytes());
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(&b[start..]);
    out.push(b'"');
}

pub fn json_u64(mut n: u64, out: &mut Vec<u8>) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

fn json_encode(v: &V<'_>, out: &mut Vec<u8>) {
    match v {
        V::Nil => out.extend_from_slice(b"null"),
        V::Bool(true) => out.extend_from_slice(b"true"),
        V::Bool(false) => out.extend_from_slice(b"false"),
        V::U(u) => json_u64(*u, out),
        V::I(i) => {
            if *i < 0 {
                out.push(b'-');
            }
            json_u64(i.unsigned_abs(), out);
        }
        V::F(f) => {
            let s = if f.is_finite() { format!("{f}") } else { "null".into() };
            out.extend_from_slice(s.as_bytes());
        }
        V::Str(s) => json_str(s, out),
        // JSON WAMP encodes binary as "\0" + base64; we never send binary,
        // so a lossy string is good enough for echoing.
        V::Bin(b) => json_str(&String::from_utf8_lossy(b), out),
        V::Arr(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_encode(x, out);
            }
            out.push(b']');
        }
        V::Map(m) => {
            out.push(b'{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match k {
                    V::Str(s) => json_str(s, out),
                    other => json_str(&other.show(), out),
                }
                out.push(b':');
                json_encode(x, out);
            }
            out.push(b'}');
        }
    }
}

struct JsonParser<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> JsonParser<'a> {
    #[inline]
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("JSON parse error at byte {}: {what}", self.i))
    }

    fn value(&mut self) -> Result<V<'a>, String> {
        self.ws();
        let Some(&c) = self.b.get(self.i) else {
            return self.err("unexpected end");
        };
        match c {
            b'[' => {
                self.i += 1;
                let mut a = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(V::Arr(a));
                }
                loop {
                    a.push(self.value()?);
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(V::Arr(a));
                        }
                        _ => return self.err("expected , or ]"),
                    }
                }
            }
            b'{' => {
                self.i += 1;
                let mut m = Vec::new();
                self.ws();
                if self.b.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(V::Map(m));
                }
                loop {
                    self.ws();
                    if self.b.get(self.i) != Some(&b'"') {
                        return self.err("expected object key");
                    }
                    let k = self.string()?;
                    self.ws();
                    if self.b.get(self.i) != Some(&b':') {
                        return self.err("expected :");
                    }
                    self.i += 1;
                    let v = self.value()?;
                    m.push((k, v));
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(V::Map(m));
                        }
                        _ => return self.err("expected , or }"),
                    }
                }
            }
            b'"' => self.string(),
            b't' => self.lit(b"true", V::Bool(true)),
            b'f' => self.lit(b"false", V::Bool(false)),
            b'n' => self.lit(b"null", V::Nil),
            b'-' | b'0'..=b'9' => self.number(),
            _ => self.err("unexpected character"),
        }
    }

    fn lit(&mut self, word: &[u8], v: V<'a>) -> Result<V<'a>, String> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(v)
        } else {
            self.err("bad literal")
        }
    }

    fn number(&mut self) -> Result<V<'a>, String> {
        let start = self.i;
        let neg = self.b[self.i] == b'-';
        if neg {
            self.i += 1;
        }
        let mut n: u64 = 0;
        let mut overflow = false;
        let mut float = false;
        while let Some(&c) = self.b.get(self.i) {
            match c {
                b'0'..=b'9' => {
                    match n.checked_mul(10).and_then(|x| x.checked_add((c - b'0') as u64)) {
                        Some(x) => n = x,
                        None => overflow = true,
                    }
                    self.i += 1;
                }
                b'.' | b'e' | b'E' | b'+' | b'-' => {
                    float = true;
                    self.i += 1;
                }
                _ => break,
            }
        }
        if float || overflow || (neg && n > i64::MAX as u64) {
            let s = std::str::from_utf8(&self.b[start..self.i]).map_err(|e| e.to_string())?;
            return s.parse::<f64>().map(V::F).map_err(|e| format!("bad number {s}: {e}"));
        }
        if self.i == start + neg as usize {
            return self.err("bad number");
        }
        Ok(if neg { V::I(-(n as i64)) } else { V::U(n) })
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let Some(h) = self.b.get(self.i..self.i + 4) else {
            return self.err("short \\u escape");
        };
        let s = std::str::from_utf8(h).map_err(|e| e.to_string())?;
        let v = u32::from_str_radix(s, 16).map_err(|e| e.to_string())?;
        self.i += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<V<'a>, String> {
        self.i += 1; // opening quote
        let start = self.i;
        // Fast path: no escapes.
        while let Some(&c) = self.b.get(self.i) {
            if c == b'"' {
                let s = std::str::from_utf8(&self.b[start..self.i]).map_err(|e| e.to_string())?;
                self.i += 1;
                return Ok(V::Str(Cow::Borrowed(s)));
            }
            if c == b'\\' {
                break;
            }
            self.i += 1;
        }
        // Slow path with escapes.
        let mut out: Vec<u8> = self.b[start..self.i].to_vec();
        loop {
            let Some(&c) = self.b.get(self.i) else {
                return self.err("unterminated string");
            };
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let Some(&e) = self.b.get(self.i) else {
                        return self.err("bad escape");
                    };
                    self.i += 1;
                    match e {
                        b'"' => out.push(b'"'),
                        b'\\' => out.push(b'\\'),
                        b'/' => out.push(b'/'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let mut cp = self.hex4()?;
                            if (0xD800..0xDC00).contains(&cp) && self.b.get(self.i..self.i + 2) == Some(b"\\u") {
                                self.i += 2;
                                let lo = self.hex4()?;
                                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo.wrapping_sub(0xDC00) & 0x3ff);
                            }
                            let ch = char::from_u32(cp).unwrap_or('\u{fffd}');
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => return self.err("bad escape"),
                    }
                }
                _ => out.push(c),
            }
        }
        String::from_utf8(out).map(|s| V::Str(Cow::Owned(s))).map_err(|e| e.to_string())
    }
}

// ---------------------------------------------------------------- MessagePack

pub fn mp_arr(n: usize, out: &mut Vec<u8>) {
    if n < 16 {
        out.push(0x90 | n as u8);
    } else if n <= u16::MAX as usize {
        out.push(0xdc);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

pub fn mp_map(n: usize, out: &mut Vec<u8>) {
    if n < 16 {
        out.push(0x80 | n as u8);
    } else if n <= u16::MAX as usize {
        out.push(0xde);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdf);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

pub fn mp_u64(n: u64, out: &mut Vec<u8>) {
    if n < 128 {
        out.push(n as u8);
    } else if n <= u8::MAX as u64 {
        out.extend_from_slice(&[0xcc, n as u8]);
    } else if n <= u16::MAX as u64 {
        out.push(0xcd);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n <= u32::MAX as u64 {
        out.push(0xce);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// Header of a MessagePack str of length `n` (the bytes follow).
pub fn mp_str_hdr(n: usize, out: &mut Vec<u8>) {
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if n <= u8::MAX as usize {
        out.extend_from_slice(&[0xd9, n as u8]);
    } else if n <= u16::MAX as usize {
        out.push(0xda);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

fn mp_encode(v: &V<'_>, out: &mut Vec<u8>) {
    match v {
        V::Nil => out.push(0xc0),
        V::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        V::U(u) => mp_u64(*u, out),
        V::I(i) => {
            if *i >= 0 {
                mp_u64(*i as u64, out)
            } else if *i >= -32 {
                out.push(*i as i8 as u8)
            } else {
                out.push(0xd3);
                out.extend_from_slice(&i.to_be_bytes());
            }
        }
        V::F(f) => {
            out.push(0xcb);
            out.extend_from_slice(&f.to_be_bytes());
        }
        V::Str(s) => {
            mp_str_hdr(s.len(), out);
            out.extend_from_slice(s.as_bytes());
        }
        V::Bin(b) => {
            if b.len() <= u8::MAX as usize {
                out.extend_from_slice(&[0xc4, b.len() as u8]);
            } else if b.len() <= u16::MAX as usize {
                out.push(0xc5);
                out.extend_from_slice(&(b.len() as u16).to_be_bytes());
            } else {
                out.push(0xc6);
                out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            }
            out.extend_from_slice(b);
        }
        V::Arr(a) => {
            mp_arr(a.len(), out);
            for x in a {
                mp_encode(x, out);
            }
        }
        V::Map(m) => {
            mp_map(m.len(), out);
            for (k, x) in m {
                mp_encode(k, out);
                mp_encode(x, out);
            }
        }
    }
}

struct MpParser<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> MpParser<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.i + n > self.b.len() {
            return Err(format!("msgpack truncated at byte {}", self.i));
        }
        let s = &self.b[self.i..self.i + n];
        self.i += n;
        Ok(s)
    }

    fn be(&mut self, n: usize) -> Result<u64, String> {
        let s = self.take(n)?;
        Ok(s.iter().fold(0u64, |acc, &x| (acc << 8) | x as u64))
    }

    fn str(&mut self, n: usize) -> Result<V<'a>, String> {
        let s = self.take(n)?;
        match std::str::from_utf8(s) {
            Ok(s) => Ok(V::Str(Cow::Borrowed(s))),
            Err(_) => Ok(V::Str(Cow::Owned(String::from_utf8_lossy(s).into_owned()))),
        }
    }

    fn arr(&mut self, n: usize) -> Result<V<'a>, String> {
        let mut a = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            a.push(self.value()?);
        }
        Ok(V::Arr(a))
    }

    fn map(&mut self, n: usize) -> Result<V<'a>, String> {
        let mut m = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let k = self.value()?;
            let v = self.value()?;
            m.push((k, v));
        }
        Ok(V::Map(m))
    }

    fn value(&mut self) -> Result<V<'a>, String> {
        let c = self.take(1)?[0];
        Ok(match c {
            0x00..=0x7f => V::U(c as u64),
            0x80..=0x8f => return self.map((c & 0x0f) as usize),
            0x90..=0x9f => return self.arr((c & 0x0f) as usize),
            0xa0..=0xbf => return self.str((c & 0x1f) as usize),
            0xc0 => V::Nil,
            0xc2 => V::Bool(false),
            0xc3 => V::Bool(true),
            0xc4..=0xc6 => {
                let n = self.be(1 << (c - 0xc4))? as usize;
                V::Bin(self.take(n)?)
            }
            0xc7..=0xc9 => {
                // ext 8/16/32: length, type, data -> skip, report as Nil
                let n = self.be(1 << (c - 0xc7))? as usize;
                self.take(1 + n)?;
                V::Nil
            }
            0xca => V::F(f32::from_bits(self.be(4)? as u32) as f64),
            0xcb => V::F(f64::from_bits(self.be(8)?)),
            0xcc => V::U(self.be(1)?),
            0xcd => V::U(self.be(2)?),
            0xce => V::U(self.be(4)?),
            0xcf => V::U(self.be(8)?),
            0xd0 => V::I(self.be(1)? as u8 as i8 as i64),
            0xd1 => V::I(self.be(2)? as u16 as i16 as i64),
            0xd2 => V::I(self.be(4)? as u32 as i32 as i64),
            0xd3 => V::I(self.be(8)? as i64),
            0xd4..=0xd8 => {
                // fixext 1/2/4/8/16
                let n = 1usize << (c - 0xd4);
                self.take(1 + n)?;
                V::Nil
            }
            0xd9 => {
                let n = self.be(1)? as usize;
                return self.str(n);
            }
            0xda => {
                let n = self.be(2)? as usize;
                return self.str(n);
            }
            0xdb => {
                let n = self.be(4)? as usize;
                return self.str(n);
            }
            0xdc => {
                let n = self.be(2)? as usize;
                return self.arr(n);
            }
            0xdd => {
                let n = self.be(4)? as usize;
                return self.arr(n);
            }
            0xde => {
                let n = self.be(2)? as usize;
                return self.map(n);
            }
            0xdf => {
                let n = self.be(4)? as usize;
                return self.map(n);
            }
            0xe0..=0xff => V::I(c as i8 as i64),
            0xc1 => return Err("msgpack: reserved byte 0xc1".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> V<'static> {
        V::Arr(vec![
            V::U(36),
            V::U(123456789012),
            V::I(-5),
            V::Map(vec![(V::s("a"), V::Bool(true)), (V::s("b\"q"), V::Nil)]),
            V::Arr(vec![V::s("hello world"), V::F(1.5)]),
        ])
    }

    #[test]
    fn roundtrip_both() {
        for ser in [Ser::Json, Ser::Msgpack] {
            let mut out = Vec::new();
            ser.encode(&sample(), &mut out);
            let v = ser.decode(&out).unwrap();
            assert_eq!(v, sample(), "{ser:?}");
        }
    }

    #[test]
    fn json_escapes() {
        let v = Ser::Json.decode(br#"[8, "a\nb\u00e9\ud83d\ude00", 1e3, -0, {"k" : [ ] }]"#).unwrap();
        let a = v.as_arr().unwrap();
        assert_eq!(a[1].as_str().unwrap(), "a\nb\u{e9}\u{1f600}");
        assert_eq!(a[2], V::F(1000.0));
    }

    #[test]
    fn msgpack_long_string() {
        let s = "x".repeat(70000);
        let mut out = Vec::new();
        Ser::Msgpack.encode(&V::Arr(vec![V::s(&s)]), &mut out);
        let v = Ser::Msgpack.decode(&out).unwrap();
        assert_eq!(v.as_arr().unwrap()[0].as_str().unwrap().len(), 70000);
    }
}
