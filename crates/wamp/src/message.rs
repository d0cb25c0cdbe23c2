//! WAMP v2 messages and their codec. Pure: bytes in, messages out, no I/O.
//!
//! Decoding splits a JSON or MessagePack message into its elements
//! (`elements`: each checked, none built), decodes the small ones into the
//! neutral [`Value`] tree and keeps the payload (Arguments, ArgumentsKw) as
//! the sender's bytes; CBOR goes through the `Value` tree whole. The shape
//! of each message type is checked strictly; any deviation is a
//! [`DecodeError`] that the session answers with ABORT
//! `wamp.error.protocol_violation`.
//! Encoding writes fields straight into the output buffer with serde; a
//! payload already in the peer's encoding is copied in as it is.

use crate::elements::Cursor;
use crate::payload::Payload;
use crate::value::{serialize_dict, Dict, Value};
use serde::ser::{Serialize, SerializeSeq};
use std::fmt;

pub const HELLO: u64 = 1;
pub const WELCOME: u64 = 2;
pub const ABORT: u64 = 3;
pub const CHALLENGE: u64 = 4;
pub const AUTHENTICATE: u64 = 5;
pub const GOODBYE: u64 = 6;
pub const ERROR: u64 = 8;
pub const PUBLISH: u64 = 16;
pub const PUBLISHED: u64 = 17;
pub const SUBSCRIBE: u64 = 32;
pub const SUBSCRIBED: u64 = 33;
pub const UNSUBSCRIBE: u64 = 34;
pub const UNSUBSCRIBED: u64 = 35;
pub const EVENT: u64 = 36;
pub const CALL: u64 = 48;
pub const CANCEL: u64 = 49;
pub const RESULT: u64 = 50;
pub const REGISTER: u64 = 64;
pub const REGISTERED: u64 = 65;
pub const UNREGISTER: u64 = 66;
pub const UNREGISTERED: u64 = 67;
pub const INVOCATION: u64 = 68;
pub const INTERRUPT: u64 = 69;
pub const YIELD: u64 = 70;

/// Largest WAMP ID: IDs are integers in [0, 2^53].
pub const MAX_ID: u64 = 1 << 53;

/// The serializers, by their WebSocket subprotocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serializer {
    Json,
    MsgPack,
    Cbor,
}

/// Every serializer, in the router's order of preference.
pub const SERIALIZERS: [Serializer; 3] = [Serializer::Json, Serializer::MsgPack, Serializer::Cbor];

impl Serializer {
    pub fn subprotocol(self) -> &'static str {
        match self {
            Serializer::Json => "wamp.2.json",
            Serializer::MsgPack => "wamp.2.msgpack",
            Serializer::Cbor => "wamp.2.cbor",
        }
    }

    pub fn from_subprotocol(name: &str) -> Option<Serializer> {
        match name {
            "wamp.2.json" => Some(Serializer::Json),
            "wamp.2.msgpack" => Some(Serializer::MsgPack),
            "wamp.2.cbor" => Some(Serializer::Cbor),
            _ => None,
        }
    }

    /// Index into per-serializer caches.
    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Msg {
    Hello {
        realm: String,
        details: Dict,
    },
    Welcome {
        session: u64,
        details: Dict,
    },
    Abort {
        details: Dict,
        reason: String,
    },
    Challenge {
        method: String,
        extra: Dict,
    },
    Authenticate {
        signature: String,
        extra: Dict,
    },
    Goodbye {
        details: Dict,
        reason: String,
    },
    Error {
        request_type: u64,
        request: u64,
        details: Dict,
        error: String,
        payload: Payload,
    },
    Publish {
        request: u64,
        options: Dict,
        topic: String,
        payload: Payload,
    },
    Published {
        request: u64,
        publication: u64,
    },
    Subscribe {
        request: u64,
        options: Dict,
        topic: String,
    },
    Subscribed {
        request: u64,
        subscription: u64,
    },
    Unsubscribe {
        request: u64,
        subscription: u64,
    },
    Unsubscribed {
        request: u64,
    },
    Event {
        subscription: u64,
        publication: u64,
        details: Dict,
        payload: Payload,
    },
    Call {
        request: u64,
        options: Dict,
        procedure: String,
        payload: Payload,
    },
    Result {
        request: u64,
        details: Dict,
        payload: Payload,
    },
    Register {
        request: u64,
        options: Dict,
        procedure: String,
    },
    Registered {
        request: u64,
        registration: u64,
    },
    Unregister {
        request: u64,
        registration: u64,
    },
    Unregistered {
        request: u64,
    },
    Invocation {
        request: u64,
        registration: u64,
        details: Dict,
        payload: Payload,
    },
    Yield {
        request: u64,
        options: Dict,
        payload: Payload,
    },
    Cancel {
        request: u64,
        options: Dict,
    },
    /// Router to callee only (a client library decodes it; the router
    /// refuses it from a client).
    Interrupt {
        request: u64,
        options: Dict,
    },
}

/// Why a message could not be decoded; becomes the ABORT message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(msg.into()))
}

/// One CBOR data item, and nothing after it.
fn cbor_value(bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut rest = bytes;
    let value = ciborium::de::from_reader(&mut rest).map_err(|e| DecodeError(format!("invalid CBOR: {e}")))?;
    if !rest.is_empty() {
        return err(format!("{} bytes after the CBOR message", rest.len()));
    }
    Ok(value)
}

/// Decodes one WAMP message from one WebSocket message.
pub fn decode(ser: Serializer, bytes: &[u8]) -> Result<Msg, DecodeError> {
    decode_with::<false>(ser, bytes)
}

/// Decodes a message as a client takes it from a router: as [`decode`],
/// except that a `null` where arguments or keyword arguments go is taken
/// as none (fox-wamp sends RESULT as `[50, request, {}, [...], null]` and
/// INVOCATION as `[68, request, registration, {}, null, {}]`). The router
/// decodes its clients' messages with [`decode`], to the letter.
pub fn decode_lenient(ser: Serializer, bytes: &[u8]) -> Result<Msg, DecodeError> {
    decode_with::<true>(ser, bytes)
}

/// `LENIENT` is a constant, so the router's strict decoding carries none
/// of the lenient checks.
fn decode_with<const LENIENT: bool>(ser: Serializer, bytes: &[u8]) -> Result<Msg, DecodeError> {
    let source = match ser {
        Serializer::Json => Source::Cursor(ser, Cursor::json(bytes).map_err(DecodeError)?),
        Serializer::MsgPack => Source::Cursor(ser, Cursor::msgpack(bytes).map_err(DecodeError)?),
        Serializer::Cbor => match cbor_value(bytes)? {
            Value::List(items) => Source::Tree(items.into_iter()),
            _ => return err("a WAMP message must be an array"),
        },
    };
    let mut f = Fields::<LENIENT> { source, at: 0 };
    let ty = f.int("message type")?;
    let msg = match ty {
        HELLO => Msg::Hello { realm: f.string("realm")?, details: f.dict("details")? },
        WELCOME => Msg::Welcome { session: f.id("session")?, details: f.dict("details")? },
        ABORT => Msg::Abort { details: f.dict("details")?, reason: f.string("reason")? },
        CHALLENGE => Msg::Challenge { method: f.string("authmethod")?, extra: f.dict("extra")? },
        AUTHENTICATE => Msg::Authenticate { signature: f.string("signature")?, extra: f.dict("extra")? },
        GOODBYE => Msg::Goodbye { details: f.dict("details")?, reason: f.string("reason")? },
        ERROR => Msg::Error {
            request_type: f.int("request type")?,
            request: f.id("request")?,
            details: f.dict("details")?,
            error: f.string("error")?,
            payload: f.payload()?,
        },
        PUBLISH => Msg::Publish {
            request: f.id("request")?,
            options: f.dict("options")?,
            topic: f.string("topic")?,
            payload: f.payload()?,
        },
        PUBLISHED => Msg::Published { request: f.id("request")?, publication: f.id("publication")? },
        SUBSCRIBE => {
            Msg::Subscribe { request: f.id("request")?, options: f.dict("options")?, topic: f.string("topic")? }
        }
        SUBSCRIBED => Msg::Subscribed { request: f.id("request")?, subscription: f.id("subscription")? },
        UNSUBSCRIBE => Msg::Unsubscribe { request: f.id("request")?, subscription: f.id("subscription")? },
        UNSUBSCRIBED => Msg::Unsubscribed { request: f.id("request")? },
        EVENT => Msg::Event {
            subscription: f.id("subscription")?,
            publication: f.id("publication")?,
            details: f.dict("details")?,
            payload: f.payload()?,
        },
        CALL => Msg::Call {
            request: f.id("request")?,
            options: f.dict("options")?,
            procedure: f.string("procedure")?,
            payload: f.payload()?,
        },
        RESULT => Msg::Result { request: f.id("request")?, details: f.dict("details")?, payload: f.payload()? },
        REGISTER => {
            Msg::Register { request: f.id("request")?, options: f.dict("options")?, procedure: f.string("procedure")? }
        }
        REGISTERED => Msg::Registered { request: f.id("request")?, registration: f.id("registration")? },
        UNREGISTER => Msg::Unregister { request: f.id("request")?, registration: f.id("registration")? },
        UNREGISTERED => Msg::Unregistered { request: f.id("request")? },
        INVOCATION => Msg::Invocation {
            request: f.id("request")?,
            registration: f.id("registration")?,
            details: f.dict("details")?,
            payload: f.payload()?,
        },
        YIELD => Msg::Yield { request: f.id("request")?, options: f.dict("options")?, payload: f.payload()? },
        CANCEL => Msg::Cancel { request: f.id("request")?, options: f.dict("options")? },
        INTERRUPT => Msg::Interrupt { request: f.id("request")?, options: f.dict("options")? },
        other => return err(format!("unknown or unsupported message type {other}")),
    };
    f.end()?;
    Ok(msg)
}

/// Where a message's elements come from.
enum Source<'a> {
    /// A decoded CBOR array.
    Tree(std::vec::IntoIter<Value>),
    /// A JSON or MessagePack array, read element by element.
    Cursor(Serializer, Cursor<'a>),
}

struct Fields<'a, const LENIENT: bool> {
    source: Source<'a>,
    /// Elements taken so far.
    at: usize,
}

impl<const LENIENT: bool> Fields<'_, LENIENT> {
    /// The next element, decoded; `None` past the end.
    #[inline]
    fn take(&mut self) -> Result<Option<Value>, DecodeError> {
        let v = match &mut self.source {
            Source::Tree(items) => items.next(),
            Source::Cursor(_, c) => c.value().map_err(DecodeError)?,
        };
        if v.is_some() {
            self.at += 1;
        }
        Ok(v)
    }

    /// The next element in a plain form the cursor reads by hand
    /// (integers, strings, `{}`), if it is one.
    #[inline]
    fn plain<T>(&mut self, read: impl FnOnce(&mut Cursor) -> Option<T>) -> Option<T> {
        let Source::Cursor(_, c) = &mut self.source else { return None };
        let v = read(c)?;
        self.at += 1;
        Some(v)
    }

    #[inline]
    fn next(&mut self, what: &str) -> Result<Value, DecodeError> {
        match self.take()? {
            Some(v) => Ok(v),
            None => err(format!("missing {what} (element {})", self.at)),
        }
    }

    #[inline]
    fn int(&mut self, what: &str) -> Result<u64, DecodeError> {
        if let Some(n) = self.plain(|c| c.plain_uint()) {
            return Ok(n);
        }
        match self.next(what)? {
            Value::UInt(n) => Ok(n),
            other => err(format!("{what} must be a non-negative integer, got {}", kind(&other))),
        }
    }

    #[inline]
    fn id(&mut self, what: &str) -> Result<u64, DecodeError> {
        let n = self.int(what)?;
        if n > MAX_ID {
            return err(format!("{what} {n} is out of the ID range [0, 2^53]"));
        }
        Ok(n)
    }

    #[inline]
    fn string(&mut self, what: &str) -> Result<String, DecodeError> {
        if let Some(s) = self.plain(|c| c.plain_str()) {
            return Ok(s);
        }
        match self.next(what)? {
            Value::Str(s) => Ok(s),
            other => err(format!("{what} must be a string, got {}", kind(&other))),
        }
    }

    #[inline]
    fn dict(&mut self, what: &str) -> Result<Dict, DecodeError> {
        if self.plain(|c| c.plain_empty_dict().then_some(())).is_some() {
            return Ok(Dict::new());
        }
        match self.next(what)? {
            Value::Dict(d) => Ok(d),
            other => err(format!("{what} must be a dictionary, got {}", kind(&other))),
        }
    }

    /// The optional trailing `Arguments|list, ArgumentsKw|dict`: kept as the
    /// sender's bytes when the message is read element by element.
    fn payload(&mut self) -> Result<Payload, DecodeError> {
        let Source::Cursor(ser, c) = &mut self.source else { return self.payload_values() };
        let ser = *ser;
        match c.peek() {
            None => return Ok(Payload::default()),
            Some(first) if !is_container(ser, first, b'[') => return self.payload_values(),
            Some(_) => {}
        }
        let bytes = c.bytes();
        let args = c.raw().map_err(DecodeError)?.expect("peeked");
        let kwargs = match c.peek() {
            None => None,
            Some(first) if is_container(ser, first, b'{') => Some(c.raw().map_err(DecodeError)?.expect("peeked")),
            // Not a dictionary: decoded, to say what it is.
            Some(_) => match c.value().map_err(DecodeError)? {
                Some(Value::Null) if LENIENT => None,
                Some(other) => return err(format!("keyword arguments must be a dictionary, got {}", kind(&other))),
                None => None,
            },
        };
        self.at += 1 + usize::from(kwargs.is_some());
        Ok(Payload::raw(ser, &bytes[args], kwargs.map(|k| &bytes[k])))
    }

    fn payload_values(&mut self) -> Result<Payload, DecodeError> {
        let args = match self.take()? {
            None => return Ok(Payload::default()),
            Some(Value::Null) if LENIENT => None,
            Some(Value::List(l)) => Some(l),
            Some(other) => return err(format!("arguments must be a list, got {}", kind(&other))),
        };
        let kwargs = match self.take()? {
            None => None,
            Some(Value::Null) if LENIENT => None,
            Some(Value::Dict(d)) => Some(d),
            Some(other) => return err(format!("keyword arguments must be a dictionary, got {}", kind(&other))),
        };
        Ok(Payload::new(args, kwargs))
    }

    fn end(mut self) -> Result<(), DecodeError> {
        if let Source::Cursor(_, c) = &self.source {
            return c.finish().map_err(DecodeError);
        }
        match self.take()? {
            None => Ok(()),
            Some(_) => err("too many elements in message"),
        }
    }
}

/// Whether a checked element starting with byte `first` is a list (`open`
/// is `[`) or a dictionary (`{`).
fn is_container(ser: Serializer, first: u8, open: u8) -> bool {
    match (ser, open) {
        (Serializer::Json, _) => first == open,
        (_, b'[') => matches!(first, 0x90..=0x9f | 0xdc | 0xdd),
        _ => matches!(first, 0x80..=0x8f | 0xde | 0xdf),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Int(_) => "a negative integer",
        Value::UInt(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Str(_) => "a string",
        Value::Bin(_) => "binary",
        Value::List(_) => "a list",
        Value::Dict(_) => "a dictionary",
    }
}

/// One element of an outgoing message.
#[derive(Clone, Copy)]
pub enum Field<'a> {
    Int(u64),
    Str(&'a str),
    Dict(&'a Dict),
    /// Arguments and keyword arguments; writes nothing when both are absent.
    Payload(&'a Payload),
}

struct Fields2<'a>(&'a [Field<'a>]);

static EMPTY_LIST: Vec<Value> = Vec::new();

/// How many array elements `fields` make.
fn count(fields: &[Field]) -> usize {
    fields.iter().map(|f| if let Field::Payload(p) = f { p.elements() } else { 1 }).sum()
}

impl Serialize for Fields2<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(count(self.0)))?;
        for f in self.0 {
            match f {
                Field::Int(v) => seq.serialize_element(v)?,
                Field::Str(v) => seq.serialize_element(v)?,
                Field::Dict(d) => seq.serialize_element(&DictRef(d))?,
                Field::Payload(p) => {
                    let p = p.values();
                    if let Some(kwargs) = &p.kwargs {
                        seq.serialize_element(p.args.as_ref().unwrap_or(&EMPTY_LIST))?;
                        seq.serialize_element(&DictRef(kwargs))?;
                    } else if let Some(args) = &p.args {
                        seq.serialize_element(args)?;
                    }
                }
            }
        }
        seq.end()
    }
}

struct DictRef<'a>(&'a Dict);

impl Serialize for DictRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_dict(self.0, s)
    }
}

/// Appends the encoding of a message made of `fields` to `out`.
pub fn encode_fields(ser: Serializer, fields: &[Field], out: &mut Vec<u8>) {
    let raw = fields.iter().find_map(|f| match f {
        Field::Payload(p) => p.encoded(ser),
        _ => None,
    });
    if let Some(raw) = raw {
        return encode_spliced(ser, fields, raw, out);
    }
    let fields = Fields2(fields);
    // Writing into a Vec cannot fail, and every value we produce is
    // representable in both formats (keys are strings, floats are finite or
    // written as null by serde_json).
    match ser {
        Serializer::Json => serde_json::to_writer(out, &fields).expect("JSON encoding into a Vec"),
        Serializer::MsgPack => {
            let mut s = rmp_serde::Serializer::new(out);
            fields.serialize(&mut s).expect("MessagePack encoding into a Vec")
        }
        Serializer::Cbor => ciborium::ser::into_writer(&fields, out).expect("CBOR encoding into a Vec"),
    }
}

/// A message whose payload is already in `ser`'s encoding (JSON or
/// MessagePack): the array written by hand, the payload's bytes (`raw`:
/// Arguments, ArgumentsKw) copied in for its one `Field::Payload`.
fn encode_spliced(ser: Serializer, fields: &[Field], raw: (&[u8], Option<&[u8]>), out: &mut Vec<u8>) {
    let json = ser == Serializer::Json;
    if json {
        out.push(b'[');
    } else {
        match count(fields) {
            n @ 0..=15 => out.push(0x90 | n as u8),
            n => {
                out.push(0xdc);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
    }
    for (i, f) in fields.iter().enumerate() {
        if json && i > 0 {
            out.push(b',');
        }
        match f {
            Field::Int(v) => one(ser, v, out),
            Field::Str(v) => one(ser, v, out),
            Field::Dict(d) => one(ser, &DictRef(d), out),
            Field::Payload(_) => {
                let (args, kwargs) = raw;
                out.extend_from_slice(args);
                if let Some(kwargs) = kwargs {
                    if json {
                        out.push(b',');
                    }
                    out.extend_from_slice(kwargs);
                }
            }
        }
    }
    if json {
        out.push(b']');
    }
}

/// One element in JSON or MessagePack.
fn one<T: Serialize + ?Sized>(ser: Serializer, v: &T, out: &mut Vec<u8>) {
    match ser {
        Serializer::Json => serde_json::to_writer(&mut *out, v).expect("JSON encoding into a Vec"),
        _ => v.serialize(&mut rmp_serde::Serializer::new(&mut *out)).expect("MessagePack encoding into a Vec"),
    }
}

/// Appends the encoding of `msg` to `out`.
pub fn encode(ser: Serializer, msg: &Msg, out: &mut Vec<u8>) {
    use Field::*;
    let d = |d| Dict(d);
    match msg {
        Msg::Hello { realm, details } => encode_fields(ser, &[Int(HELLO), Str(realm), d(details)], out),
        Msg::Welcome { session, details } => encode_fields(ser, &[Int(WELCOME), Int(*session), d(details)], out),
        Msg::Abort { details, reason } => encode_fields(ser, &[Int(ABORT), d(details), Str(reason)], out),
        Msg::Challenge { method, extra } => encode_fields(ser, &[Int(CHALLENGE), Str(method), d(extra)], out),
        Msg::Authenticate { signature, extra } => {
            encode_fields(ser, &[Int(AUTHENTICATE), Str(signature), d(extra)], out)
        }
        Msg::Goodbye { details, reason } => encode_fields(ser, &[Int(GOODBYE), d(details), Str(reason)], out),
        Msg::Error { request_type, request, details, error, payload } => encode_fields(
            ser,
            &[Int(ERROR), Int(*request_type), Int(*request), d(details), Str(error), Payload(payload)],
            out,
        ),
        Msg::Publish { request, options, topic, payload } => {
            encode_fields(ser, &[Int(PUBLISH), Int(*request), d(options), Str(topic), Payload(payload)], out)
        }
        Msg::Published { request, publication } => {
            encode_fields(ser, &[Int(PUBLISHED), Int(*request), Int(*publication)], out)
        }
        Msg::Subscribe { request, options, topic } => {
            encode_fields(ser, &[Int(SUBSCRIBE), Int(*request), d(options), Str(topic)], out)
        }
        Msg::Subscribed { request, subscription } => {
            encode_fields(ser, &[Int(SUBSCRIBED), Int(*request), Int(*subscription)], out)
        }
        Msg::Unsubscribe { request, subscription } => {
            encode_fields(ser, &[Int(UNSUBSCRIBE), Int(*request), Int(*subscription)], out)
        }
        Msg::Unsubscribed { request } => encode_fields(ser, &[Int(UNSUBSCRIBED), Int(*request)], out),
        Msg::Event { subscription, publication, details, payload } => {
            encode_fields(ser, &[Int(EVENT), Int(*subscription), Int(*publication), d(details), Payload(payload)], out)
        }
        Msg::Call { request, options, procedure, payload } => {
            encode_fields(ser, &[Int(CALL), Int(*request), d(options), Str(procedure), Payload(payload)], out)
        }
        Msg::Result { request, details, payload } => {
            encode_fields(ser, &[Int(RESULT), Int(*request), d(details), Payload(payload)], out)
        }
        Msg::Register { request, options, procedure } => {
            encode_fields(ser, &[Int(REGISTER), Int(*request), d(options), Str(procedure)], out)
        }
        Msg::Registered { request, registration } => {
            encode_fields(ser, &[Int(REGISTERED), Int(*request), Int(*registration)], out)
        }
        Msg::Unregister { request, registration } => {
            encode_fields(ser, &[Int(UNREGISTER), Int(*request), Int(*registration)], out)
        }
        Msg::Unregistered { request } => encode_fields(ser, &[Int(UNREGISTERED), Int(*request)], out),
        Msg::Invocation { request, registration, details, payload } => {
            encode_fields(ser, &[Int(INVOCATION), Int(*request), Int(*registration), d(details), Payload(payload)], out)
        }
        Msg::Yield { request, options, payload } => {
            encode_fields(ser, &[Int(YIELD), Int(*request), d(options), Payload(payload)], out)
        }
        Msg::Interrupt { request, options } => encode_fields(ser, &[Int(INTERRUPT), Int(*request), d(options)], out),
        Msg::Cancel { request, options } => encode_fields(ser, &[Int(CANCEL), Int(*request), d(options)], out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(msg: Msg) {
        for ser in SERIALIZERS {
            let mut out = Vec::new();
            encode(ser, &msg, &mut out);
            assert_eq!(decode(ser, &out).unwrap(), msg, "{ser:?}");
        }
    }

    #[test]
    fn every_message_roundtrips() {
        let p = Payload::new(
            Some(vec![Value::UInt(1), Value::Bin(vec![1, 2])]),
            Some(vec![("k".into(), Value::Str("v".into()))]),
        );
        let d: Dict = vec![("acknowledge".into(), Value::Bool(true))];
        let msgs = vec![
            Msg::Hello { realm: "realm1".into(), details: d.clone() },
            Msg::Welcome { session: 5, details: d.clone() },
            Msg::Abort { details: d.clone(), reason: "wamp.error.no_such_realm".into() },
            Msg::Challenge { method: "wampcra".into(), extra: d.clone() },
            Msg::Authenticate { signature: "c2ln".into(), extra: Dict::new() },
            Msg::Goodbye { details: Dict::new(), reason: "wamp.close.close_realm".into() },
            Msg::Error {
                request_type: CALL,
                request: 3,
                details: Dict::new(),
                error: "com.x".into(),
                payload: p.clone(),
            },
            Msg::Publish { request: 1, options: d.clone(), topic: "a.b".into(), payload: p.clone() },
            Msg::Published { request: 1, publication: 2 },
            Msg::Subscribe { request: 1, options: d.clone(), topic: "a.b".into() },
            Msg::Subscribed { request: 1, subscription: 2 },
            Msg::Unsubscribe { request: 1, subscription: 2 },
            Msg::Unsubscribed { request: 1 },
            Msg::Event { subscription: 1, publication: 2, details: Dict::new(), payload: p.clone() },
            Msg::Call { request: 1, options: Dict::new(), procedure: "a.b".into(), payload: Payload::default() },
            Msg::Result { request: 1, details: Dict::new(), payload: p.clone() },
            Msg::Register { request: 1, options: Dict::new(), procedure: "a.b".into() },
            Msg::Registered { request: 1, registration: 2 },
            Msg::Unregister { request: 1, registration: 2 },
            Msg::Unregistered { request: 1 },
            Msg::Invocation { request: 1, registration: 2, details: Dict::new(), payload: p.clone() },
            Msg::Yield { request: 1, options: Dict::new(), payload: Payload::new(Some(vec![]), Some(vec![])) },
        ];
        for m in msgs {
            roundtrip(m);
        }
    }

    /// A payload decoded from JSON or MessagePack is kept as the sender's
    /// bytes; encoding it for a peer of the same serializer copies them in
    /// and gives exactly what encoding the values gives; another peer gets
    /// the values converted.
    #[test]
    fn payload_is_carried_as_sent() {
        let values = Payload::new(
            Some(vec![Value::Str("x".repeat(64)), Value::Bin(vec![0, 255]), Value::Float(1.5)]),
            Some(vec![("k".into(), Value::Dict(vec![("n".into(), Value::Int(-3))]))]),
        );
        for payload in [values, Payload::args(vec![]), Payload::new(Some(vec![]), Some(vec![]))] {
            for ser in [Serializer::Json, Serializer::MsgPack] {
                let mut publish = Vec::new();
                let msg =
                    Msg::Publish { request: 1, options: Dict::new(), topic: "a.b".into(), payload: payload.clone() };
                encode(ser, &msg, &mut publish);
                let Msg::Publish { payload: carried, .. } = decode(ser, &publish).unwrap() else { panic!() };
                assert!(carried.encoded(ser).is_some(), "{ser:?}: carried as bytes");
                assert_eq!(carried, payload);
                let event = |p: &Payload, ser| {
                    let mut out = Vec::new();
                    let msg = Msg::Event { subscription: 7, publication: 9, details: Dict::new(), payload: p.clone() };
                    encode(ser, &msg, &mut out);
                    out
                };
                assert_eq!(event(&carried, ser), event(&payload, ser), "{ser:?}: spliced = encoded");
                for other in SERIALIZERS {
                    let Msg::Event { payload: got, .. } = decode(other, &event(&carried, other)).unwrap() else {
                        panic!()
                    };
                    assert_eq!(got, payload, "{ser:?} -> {other:?}");
                }
            }
        }
    }

    #[test]
    fn payload_elements_are_checked() {
        // Not a list, not a dictionary, a number serde_json cannot read, a
        // lone surrogate, a key JSON reads as binary.
        for bad in [
            r#"[16, 1, {}, "t", {}]"#,
            r#"[16, 1, {}, "t", [], []]"#,
            r#"[16, 1, {}, "t", [1e400]]"#,
            r#"[16, 1, {}, "t", ["\ud800"]]"#,
            r#"[16, 1, {}, "t", [], {"\u0000AAEC": 1}]"#,
        ] {
            assert!(decode(Serializer::Json, bad.as_bytes()).is_err(), "{bad} accepted");
        }
        // MessagePack: PUBLISH with `[]`; then a dictionary with an integer
        // key; then a truncated string.
        assert!(decode(Serializer::MsgPack, &[0x95, 0x10, 0x01, 0x80, 0xa1, b't', 0x90]).is_ok());
        assert!(decode(Serializer::MsgPack, &[0x96, 0x10, 0x01, 0x80, 0xa1, b't', 0x90, 0x81, 0x01, 0x02]).is_err());
        assert!(decode(Serializer::MsgPack, &[0x95, 0x10, 0x01, 0x80, 0xa1, b't', 0x91, 0xa3, b'x']).is_err());
    }

    #[test]
    fn kwargs_without_args_writes_empty_args() {
        let mut out = Vec::new();
        let payload = Payload::new(None, Some(vec![("a".into(), Value::UInt(1))]));
        encode(Serializer::Json, &Msg::Result { request: 7, details: Dict::new(), payload }, &mut out);
        assert_eq!(std::str::from_utf8(&out).unwrap(), r#"[50,7,{},[],{"a":1}]"#);
    }

    #[test]
    fn only_lenient_decoding_takes_null_keyword_arguments() {
        let fox = br#"[50,1,{},[5,"sum"],null]"#;
        assert!(decode(Serializer::Json, fox).is_err());
        match decode_lenient(Serializer::Json, fox) {
            Ok(Msg::Result { payload, .. }) => {
                assert_eq!(payload.values().args, Some(vec![Value::UInt(5), Value::Str("sum".into())]));
                assert_eq!(payload.values().kwargs, None);
            }
            other => panic!("{other:?}"),
        }
        let invocation = br#"[68,1,2,{},null,{}]"#;
        assert!(decode(Serializer::Json, invocation).is_err());
        match decode_lenient(Serializer::Json, invocation) {
            Ok(Msg::Invocation { payload, .. }) => {
                assert_eq!(payload.values().args, None);
                assert_eq!(payload.values().kwargs, Some(vec![]));
            }
            other => panic!("{other:?}"),
        }
        // Anything else in those places is still an error.
        assert!(decode_lenient(Serializer::Json, br#"[50,1,{},[5],7]"#).is_err());
        assert!(decode_lenient(Serializer::Json, br#"[50,1,{},7]"#).is_err());
        let mut cbor = Vec::new();
        ciborium::ser::into_writer(
            &Value::List(vec![Value::UInt(50), Value::UInt(1), Value::Dict(vec![]), Value::List(vec![]), Value::Null]),
            &mut cbor,
        )
        .unwrap();
        assert!(decode(Serializer::Cbor, &cbor).is_err());
        assert!(decode_lenient(Serializer::Cbor, &cbor).is_ok());
    }

    #[test]
    fn malformed_messages_are_errors() {
        let bad: &[&str] = &[
            "",
            "{}",
            "[]",
            r#"["x"]"#,
            "[99]",
            r#"[1, 5, {}]"#,
            r#"[1, "realm1"]"#,
            r#"[1, "realm1", {}, 5]"#,
            r#"[16, 1, {}, "t", {}]"#,
            r#"[16, 1, {}, "t", [], []]"#,
            r#"[32, 9007199254740993, {}, "t"]"#,
            r#"[32, -1, {}, "t"]"#,
            r#"[32, 1.5, {}, "t"]"#,
        ];
        for b in bad {
            assert!(decode(Serializer::Json, b.as_bytes()).is_err(), "{b} accepted");
        }
        assert!(decode(Serializer::MsgPack, &[0xc1]).is_err());
        // CBOR: a break code alone, a message with bytes after it, nesting past the limit.
        assert!(decode(Serializer::Cbor, &[0xff]).is_err());
        assert!(decode(Serializer::Cbor, &[0x83, 0x06, 0xa0, 0x61, b'x', 0x00]).is_err());
        assert!(decode(Serializer::Cbor, &[0x81; 10_000]).is_err());
        assert!(decode(Serializer::Cbor, &[0x83, 0x06, 0xa0, 0x61, b'x']).is_ok(), "GOODBYE");
    }
}
