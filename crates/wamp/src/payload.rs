//! A WAMP message's application payload (Arguments, ArgumentsKw) as the
//! router carries it.
//!
//! A payload a client sent stays in the client's encoding ([`Raw`]): the
//! elements were checked when the message was decoded (`wamp::elements`),
//! and the same bytes are spliced into the EVENT, INVOCATION, RESULT or
//! ERROR for every peer that speaks that serializer. They are decoded into
//! [`Values`] only when something needs the values: a peer with another
//! serializer, an MQTT subscriber, the store, a subscription filter, a meta
//! procedure or the authorizer's answer. That happens once per payload (the
//! result is kept), on whichever worker needs it first. Payloads the router
//! makes itself are `Values`.

use crate::elements::{json_value, msgpack_value};
use crate::message::Serializer;
use crate::value::{Dict, Value};
use bytes::Bytes;
use std::fmt;
use std::sync::OnceLock;

/// Decoded arguments and keyword arguments.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Values {
    pub args: Option<Vec<Value>>,
    pub kwargs: Option<Dict>,
}

#[derive(Clone)]
pub enum Payload {
    Values(Values),
    Raw(Raw),
}

/// Arguments (and keyword arguments) in the encoding their sender used.
#[derive(Clone)]
pub struct Raw {
    ser: Serializer,
    /// The Arguments element, then the ArgumentsKw element if there is one.
    bytes: Bytes,
    args_len: usize,
    /// Boxed: decoded rarely, and a `Payload` moves with every message.
    values: OnceLock<Box<Values>>,
}

impl Default for Payload {
    fn default() -> Payload {
        Payload::Values(Values::default())
    }
}

impl From<Values> for Payload {
    fn from(v: Values) -> Payload {
        Payload::Values(v)
    }
}

impl Payload {
    pub fn new(args: Option<Vec<Value>>, kwargs: Option<Dict>) -> Payload {
        Payload::Values(Values { args, kwargs })
    }

    /// Positional arguments only.
    pub fn args(args: Vec<Value>) -> Payload {
        Payload::new(Some(args), None)
    }

    /// A payload's elements as a message carried them. `args` must be one
    /// checked list element and `kwargs` one checked dictionary element of
    /// `ser` (`wamp::elements`), which is what makes decoding them later
    /// infallible.
    pub(crate) fn raw(ser: Serializer, args: &[u8], kwargs: Option<&[u8]>) -> Payload {
        debug_assert!(ser != Serializer::Cbor, "CBOR payloads are decoded");
        let mut bytes = Vec::with_capacity(args.len() + kwargs.map_or(0, <[u8]>::len));
        bytes.extend_from_slice(args);
        bytes.extend_from_slice(kwargs.unwrap_or_default());
        Payload::Raw(Raw { ser, bytes: Bytes::from(bytes), args_len: args.len(), values: OnceLock::new() })
    }

    /// The raw form's parts: serializer, the elements' bytes, and how many
    /// of them are the Arguments element (`from_parts` takes them back).
    pub fn raw_parts(&self) -> Option<(Serializer, &Bytes, usize)> {
        match self {
            Payload::Raw(r) => Some((r.ser, &r.bytes, r.args_len)),
            Payload::Values(_) => None,
        }
    }

    /// A raw payload from bytes that did not come from this process (another
    /// router node): checked here as a message's elements are, so a payload
    /// that is not one list element (and one dictionary element) of `ser`
    /// is refused rather than trusted.
    pub fn from_parts(ser: Serializer, bytes: Bytes, args_len: usize) -> Result<Payload, String> {
        let check = |b: &[u8]| match ser {
            Serializer::Json => crate::elements::check_json(b),
            Serializer::MsgPack => crate::elements::check_msgpack(b),
            Serializer::Cbor => Err("CBOR payloads travel decoded".into()),
        };
        let kind = |b: &[u8], list: bool| {
            let first = b.iter().copied().find(|c| !matches!(c, b' ' | b'\n' | b'\r' | b'\t'));
            match (ser, first) {
                (Serializer::Json, Some(b'[')) => list,
                (Serializer::Json, Some(b'{')) => !list,
                (Serializer::MsgPack, Some(0x90..=0x9f | 0xdc | 0xdd)) => list,
                (Serializer::MsgPack, Some(0x80..=0x8f | 0xde | 0xdf)) => !list,
                _ => false,
            }
        };
        let (a, k) = bytes.split_at(args_len.min(bytes.len()));
        if args_len > bytes.len() || check(a)? != a.len() || !kind(a, true) {
            return Err("the arguments are not one list".into());
        }
        if !k.is_empty() && (check(k)? != k.len() || !kind(k, false)) {
            return Err("the keyword arguments are not one dictionary".into());
        }
        Ok(Payload::Raw(Raw { ser, bytes, args_len, values: OnceLock::new() }))
    }

    /// The decoded values (decoded now if they were not yet).
    pub fn values(&self) -> &Values {
        match self {
            Payload::Values(v) => v,
            Payload::Raw(r) => r.values.get_or_init(|| Box::new(r.decode())),
        }
    }

    pub fn into_values(self) -> Values {
        match self {
            Payload::Values(v) => v,
            Payload::Raw(r) if r.values.get().is_none() => r.decode(),
            Payload::Raw(r) => r.values.into_inner().map(|v| *v).unwrap_or_default(),
        }
    }

    /// The encoded elements, if the payload is in `ser`'s encoding:
    /// Arguments, and ArgumentsKw if present.
    pub fn encoded(&self, ser: Serializer) -> Option<(&[u8], Option<&[u8]>)> {
        match self {
            Payload::Raw(r) if r.ser == ser => {
                let (a, k) = r.bytes.split_at(r.args_len);
                Some((a, (!k.is_empty()).then_some(k)))
            }
            _ => None,
        }
    }

    /// Neither arguments nor keyword arguments (or only empty ones).
    pub fn is_empty(&self) -> bool {
        let v = self.values();
        v.args.as_ref().is_none_or(|a| a.is_empty()) && v.kwargs.as_ref().is_none_or(|k| k.is_empty())
    }

    /// The number of elements the payload adds to a message (0, 1 or 2).
    pub fn elements(&self) -> usize {
        match self {
            Payload::Raw(r) if r.bytes.len() > r.args_len => 2,
            Payload::Raw(_) => 1,
            Payload::Values(v) if v.kwargs.is_some() => 2,
            Payload::Values(v) if v.args.is_some() => 1,
            Payload::Values(_) => 0,
        }
    }
}

impl Raw {
    fn decode(&self) -> Values {
        let (a, k) = self.bytes.split_at(self.args_len);
        let one = |b: &[u8]| match self.ser {
            Serializer::Json => json_value(b),
            Serializer::MsgPack => msgpack_value(b),
            Serializer::Cbor => Err("CBOR payloads are decoded when they arrive".into()),
        };
        let args = match one(a) {
            Ok(Value::List(l)) => Some(l),
            other => return undecodable(other),
        };
        let kwargs = match (!k.is_empty()).then(|| one(k)) {
            None => None,
            Some(Ok(Value::Dict(d))) => Some(d),
            Some(other) => return undecodable(other),
        };
        Values { args, kwargs }
    }
}

/// A raw payload that does not decode: the elements were checked when they
/// arrived, so this is a bug in the check; the payload reads as empty
/// rather than taking the worker down.
#[cold]
fn undecodable(got: Result<Value, String>) -> Values {
    debug_assert!(false, "a checked payload did not decode: {got:?}");
    Values::default()
}

impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        self.values() == other.values()
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Payload::Values(v) => v.fmt(f),
            Payload::Raw(r) => write!(f, "Raw({:?}, {} bytes: {:?})", r.ser, r.bytes.len(), self.values()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_decodes_once_and_compares_by_value() {
        let p = Payload::raw(Serializer::Json, br#"[1,"a"]"#, Some(br#"{"k":true}"#));
        let v = Payload::new(
            Some(vec![Value::UInt(1), Value::Str("a".into())]),
            Some(vec![("k".into(), Value::Bool(true))]),
        );
        assert_eq!(p, v);
        assert_eq!(p.elements(), 2);
        assert_eq!(p.encoded(Serializer::Json), Some((&br#"[1,"a"]"#[..], Some(&br#"{"k":true}"#[..]))));
        assert_eq!(p.encoded(Serializer::MsgPack), None);
        assert_eq!(v.encoded(Serializer::Json), None);
        let mp = rmp_serde::to_vec(&Value::List(vec![Value::Bin(vec![1])])).unwrap();
        let p = Payload::raw(Serializer::MsgPack, &mp, None);
        assert_eq!(p.values().args, Some(vec![Value::Bin(vec![1])]));
        assert_eq!(p.elements(), 1);
        assert!(!p.is_empty());
        assert!(Payload::raw(Serializer::Json, b"[]", Some(b"{}")).is_empty());
        assert_eq!(p.clone().into_values(), p.values().clone());
    }

    #[test]
    fn parts_round_trip_and_foreign_bytes_are_checked() {
        let p = Payload::raw(Serializer::Json, br#"[1,"a"]"#, Some(br#"{"k":true}"#));
        let (ser, bytes, args_len) = p.raw_parts().unwrap();
        let back = Payload::from_parts(ser, bytes.clone(), args_len).unwrap();
        assert_eq!(back.encoded(Serializer::Json), p.encoded(Serializer::Json));
        let json = |b: &'static [u8], n| Payload::from_parts(Serializer::Json, Bytes::from_static(b), n);
        assert!(json(b"[1]", 3).is_ok());
        assert!(json(b"[1]{}", 3).is_ok());
        assert!(json(b"{}", 2).is_err(), "arguments must be a list");
        assert!(json(b"[1]", 2).is_err(), "a cut element");
        assert!(json(b"[1][2]", 3).is_err(), "keyword arguments must be a dictionary");
        assert!(json(b"[1]{}x", 3).is_err(), "bytes after the dictionary");
        assert!(json(b"[1]", 9).is_err(), "a length past the bytes");
        let mp = rmp_serde::to_vec(&Value::List(vec![Value::UInt(7)])).unwrap();
        let n = mp.len();
        assert!(Payload::from_parts(Serializer::MsgPack, Bytes::from(mp), n).is_ok());
        assert!(Payload::from_parts(Serializer::MsgPack, Bytes::from_static(&[0xc1]), 1).is_err());
        assert!(Payload::from_parts(Serializer::Cbor, Bytes::from_static(b"\x80"), 1).is_err());
        assert_eq!(Payload::args(vec![]).raw_parts(), None);
    }
}
