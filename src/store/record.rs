//! The stored form of a retained publication (MessagePack of `Retained`),
//! and its key: `r`, NUL, realm, NUL, topic. Stable across versions: add
//! fields only with `#[serde(default)]`.

use crate::payload::Payload;
use crate::router::{Body, Identity, MsgProps, Publication, SessionRef};
use crate::value::{Dict, Value};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RETAINED: &[u8] = b"r\0";
const HISTORY: &[u8] = b"h\0";

/// The key prefix of every history event.
pub fn history_prefix() -> &'static [u8] {
    HISTORY
}

/// A history event's key: `h`, NUL, realm, NUL, topic, NUL, the owner's
/// sequence number (big-endian: keys of one topic sort by it).
pub fn history_key(realm: &str, topic: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(HISTORY.len() + realm.len() + topic.len() + 10);
    k.extend_from_slice(HISTORY);
    k.extend_from_slice(realm.as_bytes());
    k.push(0);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The sequence number at the end of a history key.
pub fn history_seq(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// The key prefix of every retained value.
pub fn retained_prefix() -> &'static [u8] {
    RETAINED
}

pub fn retained_key(realm: &str, topic: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(RETAINED.len() + realm.len() + 1 + topic.len());
    k.extend_from_slice(RETAINED);
    k.extend_from_slice(realm.as_bytes());
    k.push(0);
    k.extend_from_slice(topic.as_bytes());
    k
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum StoredBody {
    Wamp { args: Option<Vec<Value>>, kwargs: Option<Dict> },
    Mqtt(#[serde(with = "bytes_as_bin")] Vec<u8>),
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Retained {
    realm: String,
    topic: String,
    id: u64,
    qos: u8,
    body: StoredBody,
    #[serde(default)]
    payload_format: Option<u8>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    response_topic: Option<String>,
    #[serde(default, with = "opt_bytes_as_bin")]
    correlation: Option<Vec<u8>>,
    #[serde(default)]
    user: Vec<(String, String)>,
    /// MQTT 5 message expiry, as a wall-clock deadline (ms since the epoch).
    #[serde(default)]
    expires_unix_ms: Option<u64>,
    /// The disclosed publisher (session, authid, authrole).
    #[serde(default)]
    disclosed: Option<(u64, String, String)>,
    #[serde(default)]
    ppt: Option<Dict>,
    /// The will of the session the key was tied to: applied at the next
    /// start, since that session did not survive the restart.
    #[serde(default)]
    will: Option<StoredBody>,
    /// When a history event was recorded (ms since the epoch).
    #[serde(default)]
    at: u64,
}

/// Bytes as MessagePack `bin` (a plain `Vec<u8>` would be a list of numbers).
pub(crate) mod bytes_as_bin {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, b: &[u8]) -> Result<Vec<u8>, E> {
                Ok(b.to_vec())
            }
            fn visit_byte_buf<E>(self, b: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(b)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// `Option<Vec<u8>>` as MessagePack `bin` or nil.
pub(crate) mod opt_bytes_as_bin {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    struct Bin<'a>(&'a [u8]);

    impl Serialize for Bin<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    #[derive(Deserialize)]
    struct Owned(#[serde(with = "super::bytes_as_bin")] Vec<u8>);

    pub fn serialize<S: Serializer>(b: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match b {
            Some(b) => s.serialize_some(&Bin(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<Owned>::deserialize(d)?.map(|o| o.0))
    }
}

fn unix_now_ms() -> u64 {
    crate::router::unix_millis()
}

fn stored_body(body: &Body) -> StoredBody {
    match body {
        Body::Wamp(pl) => {
            let v = pl.values();
            StoredBody::Wamp { args: v.args.clone(), kwargs: v.kwargs.clone() }
        }
        Body::Mqtt(b) => StoredBody::Mqtt(b.to_vec()),
    }
}

fn body_of(b: StoredBody) -> Body {
    match b {
        StoredBody::Wamp { args, kwargs } => Body::Wamp(Payload::new(args, kwargs)),
        StoredBody::Mqtt(b) => Body::Mqtt(b.into()),
    }
}

/// The stored bytes of a retained publication and the will of the session
/// its key is tied to, if any.
pub fn encode(p: &Publication, will: Option<&Body>, now: Instant) -> Vec<u8> {
    encode_at(p, will, 0, now)
}

/// `encode`, with the time a history event was recorded.
pub fn encode_at(p: &Publication, will: Option<&Body>, at: u64, now: Instant) -> Vec<u8> {
    let body = stored_body(&p.body);
    let props = p.props.as_deref();
    let r = Retained {
        realm: p.realm.to_string(),
        topic: p.topic.clone(),
        id: p.id,
        qos: p.qos,
        body,
        payload_format: props.and_then(|x| x.payload_format),
        content_type: props.and_then(|x| x.content_type.clone()),
        response_topic: props.and_then(|x| x.response_topic.clone()),
        correlation: props.and_then(|x| x.correlation.as_ref().map(|c| c.to_vec())),
        user: props.map(|x| x.user.clone()).unwrap_or_default(),
        expires_unix_ms: p.expires.map(|t| unix_now_ms() + t.saturating_duration_since(now).as_millis() as u64),
        disclosed: p.disclosed.as_ref().map(|i| (i.session, i.authid.clone(), i.authrole.clone())),
        ppt: p.ppt.as_deref().cloned(),
        will: will.map(stored_body),
        at,
    };
    rmp_serde::to_vec(&r).expect("a retained record always encodes")
}

/// A stored record as the router holds it.
pub struct Decoded {
    pub p: Publication,
    /// The will its key had.
    pub will: Option<Body>,
    /// When it was recorded (history events).
    pub at: u64,
}

/// A stored publication (`None`: past its expiry). `Err`: the bytes are
/// not a record (a corrupt store).
pub fn decode(bytes: &[u8], now: Instant) -> Result<Option<Decoded>, String> {
    let r: Retained = rmp_serde::from_slice(bytes).map_err(|e| format!("not a retained record: {e}"))?;
    let will = r.will.map(body_of);
    let at = r.at;
    let expires = match r.expires_unix_ms {
        None => None,
        Some(at) => {
            let unix = unix_now_ms();
            if at <= unix {
                return Ok(None);
            }
            Some(now + Duration::from_millis(at - unix))
        }
    };
    let body = body_of(r.body);
    let props = MsgProps {
        payload_format: r.payload_format,
        // The remaining expiry is recomputed from `expires` when delivered.
        expiry: expires.map(|t| t.saturating_duration_since(now).as_secs().max(1) as u32),
        content_type: r.content_type,
        response_topic: r.response_topic,
        correlation: r.correlation.map(Into::into),
        user: r.user,
    };
    let p = Publication {
        realm: Arc::from(r.realm.as_str()),
        topic: r.topic,
        id: r.id,
        publisher: SessionRef { worker: 0, id: 0 },
        exclude_me: false,
        body,
        qos: r.qos,
        retain: true,
        props: (!props.is_empty()).then(|| Box::new(props)),
        expires,
        started: now,
        disclosed: r.disclosed.map(|(session, authid, authrole)| Box::new(Identity { session, authid, authrole })),
        receivers: None,
        ppt: r.ppt.map(Box::new),
        durable_ack: None,
    };
    Ok(Some(Decoded { p, will, at }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication(body: Body) -> Publication {
        let p = Publication::new("realm1".into(), "a.b".into(), 42, SessionRef { worker: 1, id: 7 }, body);
        Publication { exclude_me: true, qos: 1, retain: true, ..p }
    }

    #[test]
    fn wamp_and_mqtt_records_round_trip() {
        let now = Instant::now();
        let payload = Payload::new(
            Some(vec![Value::Str("x".into()), Value::Bin(vec![0, 255]), Value::UInt(u64::MAX)]),
            Some(vec![("k".into(), Value::Float(1.5))]),
        );
        let mut p = publication(Body::Wamp(payload.clone()));
        p.disclosed = Some(Box::new(Identity { session: 9, authid: "a".into(), authrole: "r".into() }));
        let will = Body::Wamp(Payload::args(vec![Value::Null]));
        let Decoded { p: back, will: w, .. } = decode(&encode(&p, Some(&will), now), now).unwrap().unwrap();
        assert!(matches!(w, Some(Body::Wamp(pl)) if pl.values().args == Some(vec![Value::Null])));
        assert!(matches!(&back.body, Body::Wamp(pl) if *pl == payload));
        assert_eq!((back.realm.as_ref(), back.topic.as_str(), back.id, back.qos), ("realm1", "a.b", 42, 1));
        assert_eq!(back.disclosed.unwrap().session, 9);

        let mut m = publication(Body::Mqtt(bytes::Bytes::from_static(b"\x00\x01raw")));
        m.props = Some(Box::new(MsgProps {
            content_type: Some("text/plain".into()),
            correlation: Some(bytes::Bytes::from_static(b"\xffc")),
            user: vec![("u".into(), "v".into())],
            ..Default::default()
        }));
        m.expires = Some(now + Duration::from_secs(60));
        let Decoded { p: back, will: w, at } = decode(&encode_at(&m, None, 77, now), now).unwrap().unwrap();
        assert_eq!(at, 77);
        assert!(w.is_none());
        assert!(matches!(&back.body, Body::Mqtt(b) if &b[..] == b"\x00\x01raw"));
        let props = back.props.unwrap();
        assert_eq!(props.content_type.as_deref(), Some("text/plain"));
        assert_eq!(props.correlation.as_deref(), Some(&b"\xffc"[..]));
        assert!(back.expires.is_some_and(|t| t > now + Duration::from_secs(58)));
    }

    #[test]
    fn expired_and_corrupt_records() {
        let now = Instant::now();
        let mut m = publication(Body::Mqtt(bytes::Bytes::from_static(b"x")));
        m.expires = Some(now);
        assert!(decode(&encode(&m, None, now), now + Duration::from_millis(5)).unwrap().is_none());
        assert!(decode(b"\xc1garbage", now).is_err());
        assert_eq!(retained_key("r", "a.b"), b"r\0r\0a.b");
        assert_eq!(history_seq(&history_key("r", "a", 258)), Some(258));
        assert!(history_key("r", "a", 1) < history_key("r", "a", 256));
    }
}
