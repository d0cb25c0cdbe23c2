//! Payloads between MQTT (bytes) and WAMP (args, kwargs). README, "MQTT and
//! WAMP together", states these rules for users.
//!
//! MQTT -> WAMP: a JSON array becomes `args`; any other JSON value becomes
//! the single argument; anything that is not JSON (or is empty) becomes one
//! binary argument (no argument for an empty payload).
//! WAMP -> MQTT: one argument and no kwargs becomes that value's JSON (its
//! raw bytes if it is binary); several arguments become a JSON array; with
//! kwargs, `{"args": [...], "kwargs": {...}}`; nothing becomes an empty
//! payload.

use crate::payload::Payload;
use crate::value::Value;
use bytes::Bytes;

pub fn to_wamp(bytes: &[u8]) -> Payload {
    if bytes.is_empty() {
        return Payload::default();
    }
    let args = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::List(items)) => items,
        Ok(v) => vec![v],
        Err(_) => vec![Value::Bin(bytes.to_vec())],
    };
    Payload::args(args)
}

pub fn from_wamp(p: &Payload) -> Bytes {
    let p = p.values();
    let args: &[Value] = p.args.as_deref().unwrap_or(&[]);
    match &p.kwargs {
        Some(kw) if !kw.is_empty() => {
            let obj = Value::Dict(vec![
                ("args".into(), Value::List(args.to_vec())),
                ("kwargs".into(), Value::Dict(kw.clone())),
            ]);
            Bytes::from(serde_json::to_vec(&obj).expect("a Value always serializes"))
        }
        _ => match args {
            [] => Bytes::new(),
            [Value::Bin(b)] => Bytes::copy_from_slice(b),
            [one] => Bytes::from(serde_json::to_vec(one).expect("a Value always serializes")),
            many => Bytes::from(serde_json::to_vec(many).expect("a Value always serializes")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_to_wamp() {
        assert_eq!(to_wamp(b"[1,\"a\"]").values().args, Some(vec![Value::UInt(1), Value::Str("a".into())]));
        assert_eq!(to_wamp(b"{\"t\":1}").values().args, Some(vec![Value::Dict(vec![("t".into(), Value::UInt(1))])]));
        assert_eq!(to_wamp(b"21.5").values().args, Some(vec![Value::Float(21.5)]));
        assert_eq!(to_wamp(b"\xff\x00not json").values().args, Some(vec![Value::Bin(b"\xff\x00not json".to_vec())]));
        assert_eq!(to_wamp(b"hello").values().args, Some(vec![Value::Bin(b"hello".to_vec())]));
        assert_eq!(to_wamp(b""), Payload::default());
    }

    #[test]
    fn wamp_to_mqtt() {
        let p = |args: Vec<Value>| Payload::args(args);
        assert_eq!(&from_wamp(&p(vec![Value::Str("hi".into())]))[..], b"\"hi\"");
        assert_eq!(&from_wamp(&p(vec![Value::Bin(vec![0, 1])]))[..], &[0, 1]);
        assert_eq!(&from_wamp(&p(vec![Value::UInt(1), Value::UInt(2)]))[..], b"[1,2]");
        let kw = Payload::new(Some(vec![Value::UInt(1)]), Some(vec![("k".into(), Value::Bool(true))]));
        assert_eq!(&from_wamp(&kw)[..], b"{\"args\":[1],\"kwargs\":{\"k\":true}}");
        assert_eq!(&from_wamp(&Payload::default())[..], b"");
        // Arrays round-trip as args.
        assert_eq!(
            to_wamp(&from_wamp(&p(vec![Value::UInt(1), Value::UInt(2)]))),
            p(vec![Value::UInt(1), Value::UInt(2)])
        );
    }
}
