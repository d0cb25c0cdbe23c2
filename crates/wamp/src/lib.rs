//! The WAMP v2 wire format, shared by the Fennec router and its client
//! library `fennec-client`: pure code, bytes in and values out, no I/O.
//!
//! - [`value`]: [`value::Value`], the neutral value tree of arguments and
//!   details, with the JSON binary convention (`"\u0000" + base64`).
//! - [`message`]: every WAMP message ([`message::Msg`]), strict decoding
//!   with a reason for each rejection, encoding in JSON, MessagePack or CBOR.
//! - [`payload`]: a message's arguments as the sender's bytes, decoded once
//!   when something needs the values.
//! - [`elements`]: reading a JSON or MessagePack message element by element.
//! - [`rawsocket`]: the WAMP-over-RawSocket handshake and frame prefixes.
//! - [`auth`]: the cryptography of WAMP authentication, for the side that
//!   signs and the side that checks: WAMP-CRA, salted keys, cryptosign.
//!
//! ```
//! use fennec_wamp::message::{decode, encode, Msg, Serializer};
//! use fennec_wamp::value::Value;
//!
//! let hello = Msg::Hello { realm: "realm1".into(), details: vec![("roles".into(), Value::Dict(vec![]))] };
//! let mut bytes = Vec::new();
//! encode(Serializer::Json, &hello, &mut bytes);
//! assert_eq!(bytes, br#"[1,"realm1",{"roles":{}}]"#);
//! assert!(matches!(decode(Serializer::Json, &bytes), Ok(Msg::Hello { .. })));
//! ```

pub mod auth;
pub mod elements;
pub mod message;
pub mod payload;
pub mod rawsocket;
pub mod value;
