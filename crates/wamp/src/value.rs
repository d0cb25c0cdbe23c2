//! The protocol-neutral value tree that payloads (args, kwargs) and option
//! dictionaries are decoded into.
//!
//! One type serves both serializers, so an event published as JSON reaches a
//! MessagePack subscriber intact. Binary data follows the WAMP convention: in
//! MessagePack it is a native `bin`; in JSON (a human-readable format) it is a
//! string whose first character is `\u0000`, followed by the base64 of the bytes.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use std::fmt;

/// A dictionary: string keys in arrival order. WAMP dictionaries are small
/// (options, details, kwargs), so a vector beats a hash map here.
pub type Dict = Vec<(String, Value)>;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// A negative integer. Non-negative integers are always `UInt`.
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Bin(Vec<u8>),
    List(Vec<Value>),
    Dict(Dict),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::UInt(n) => Some(*n),
            _ => None,
        }
    }

    /// Any number, as a float (large integers lose precision).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::UInt(n) => Some(*n as f64),
            Value::Int(n) => Some(*n as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_dict(&self) -> Option<&Dict> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }
}

/// Looks a key up in a dictionary.
/// A key whose value is null is absent: some clients (wampy) send
/// `{"match": null}` for an option they leave unset.
pub fn dict_get<'a>(dict: &'a [(String, Value)], key: &str) -> Option<&'a Value> {
    dict.iter().find(|(k, v)| k == key && *v != Value::Null).map(|(_, v)| v)
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(n) => s.serialize_i64(*n),
            Value::UInt(n) => s.serialize_u64(*n),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(v) => s.serialize_str(v),
            Value::Bin(bytes) => {
                if s.is_human_readable() {
                    let mut text = String::with_capacity(1 + bytes.len().div_ceil(3) * 4);
                    text.push('\0');
                    B64.encode_string(bytes, &mut text);
                    s.serialize_str(&text)
                } else {
                    s.serialize_bytes(bytes)
                }
            }
            Value::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Dict(dict) => serialize_dict(dict, s),
        }
    }
}

pub fn serialize_dict<S: Serializer>(dict: &Dict, s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(dict.len()))?;
    for (k, v) in dict {
        map.serialize_entry(k, v)?;
    }
    map.end()
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        let human_readable = d.is_human_readable();
        d.deserialize_any(ValueVisitor { human_readable })
    }
}

struct ValueVisitor {
    human_readable: bool,
}

impl ValueVisitor {
    fn string(&self, s: &str) -> Value {
        if self.human_readable {
            if let Some(encoded) = s.strip_prefix('\0') {
                if let Ok(bytes) = B64.decode(encoded) {
                    return Value::Bin(bytes);
                }
            }
        }
        Value::Str(s.to_owned())
    }
}

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a WAMP value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(if n >= 0 { Value::UInt(n as u64) } else { Value::Int(n) })
    }
    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::UInt(n))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
        Ok(Value::Float(f))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(self.string(s))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        if self.human_readable && s.starts_with('\0') {
            return Ok(self.string(&s));
        }
        Ok(Value::Str(s))
    }
    fn visit_bytes<E>(self, b: &[u8]) -> Result<Value, E> {
        Ok(Value::Bin(b.to_vec()))
    }
    fn visit_byte_buf<E>(self, b: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bin(b))
    }
    /// A MessagePack extension value (which WAMP does not use): null.
    /// wampy encodes JavaScript `undefined` (an option left unset) so.
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        de::IgnoredAny::deserialize(d)?;
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        // Bound the pre-allocation: a hostile length prefix must not reserve memory.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element::<Value>()? {
            items.push(item);
        }
        Ok(Value::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut dict = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(key) = map.next_key::<Value>()? {
            let Value::Str(key) = key else {
                return Err(de::Error::custom("dictionary keys must be strings"));
            };
            let value = map.next_value::<Value>()?;
            dict.push((key, value));
        }
        Ok(Value::Dict(dict))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_crosses_serializers() {
        let v = Value::List(vec![Value::Bin(vec![0, 1, 2, 255]), Value::Str("x".into())]);
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, r#"["\u0000AAEC/w==","x"]"#);
        let back: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back, v);
        let mp = rmp_serde::to_vec(&v).unwrap();
        // 0x92 = fixarray(2), 0xc4 = bin8
        assert_eq!(&mp[..3], &[0x92, 0xc4, 4]);
        let back: Value = rmp_serde::from_slice(&mp).unwrap();
        assert_eq!(back, v);
        let mut cbor = Vec::new();
        ciborium::ser::into_writer(&v, &mut cbor).unwrap();
        // 0x82 = array(2), 0x44 = bytes(4)
        assert_eq!(&cbor[..2], &[0x82, 0x44]);
        let back: Value = ciborium::de::from_reader(&cbor[..]).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn integers_normalise() {
        let v: Value = serde_json::from_str("[-1, 0, 18446744073709551615, 1.5]").unwrap();
        assert_eq!(v, Value::List(vec![Value::Int(-1), Value::UInt(0), Value::UInt(u64::MAX), Value::Float(1.5)]));
    }

    #[test]
    fn non_string_keys_are_refused() {
        let mp = rmp_serde::to_vec(&std::collections::BTreeMap::from([(1u8, 2u8)])).unwrap();
        assert!(rmp_serde::from_slice::<Value>(&mp).is_err());
    }

    /// JavaScript `undefined` as wampy sends it: a MessagePack extension
    /// (fixext 1) and CBOR's `undefined`. Both read as null, which an
    /// option lookup treats as absent.
    #[test]
    fn undefined_reads_as_null() {
        let mp = [0x81, 0xa1, b'm', 0xd4, 0x00, 0x00];
        let v: Value = rmp_serde::from_slice(&mp).unwrap();
        assert_eq!(v, Value::Dict(vec![("m".into(), Value::Null)]));
        let Value::Dict(d) = v else { unreachable!() };
        assert_eq!(dict_get(&d, "m"), None);
        let cbor = [0xa1, 0x61, b'm', 0xf7];
        let v: Value = ciborium::de::from_reader(&cbor[..]).unwrap();
        assert_eq!(v, Value::Dict(vec![("m".into(), Value::Null)]));
    }
}
