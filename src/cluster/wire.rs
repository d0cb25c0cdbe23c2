//! What crosses NATS, pure: subject tokens, the names of subjects and
//! buckets, a node's interest entry, and a publication's travelling form
//! (MessagePack, a version byte first). Decoding never trusts the bytes:
//! another node's payload is checked like a client's (`Payload::from_parts`).

use crate::payload::{Payload, Values};
use crate::router::{Body, Identity, MatchPolicy, MsgProps, Publication, Realm, Receivers, SessionRef, SubKey};
use crate::value::Value;
use crate::wamp::message::Serializer;
use bytes::Bytes;
use fennec_wamp::elements;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A character a subject token may hold as it is.
pub fn plain_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// A non-empty token of plain characters only (node names, the prefix).
pub fn plain_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(plain_char)
}

/// Appends `s` as one subject token: as it is when plain, else `~` and the
/// lowercase hex of its UTF-8 bytes (`~` alone when empty). One to one,
/// and never `.`, `*`, `>` or white space.
pub fn push_token(out: &mut String, s: &str) {
    if plain_token(s) {
        out.push_str(s);
        return;
    }
    out.push('~');
    for b in s.bytes() {
        let _ = write!(out, "{b:02x}");
    }
}

/// The subject a publication to `node` travels on:
/// `<prefix>.n.<node>.ev.<realm>.<topic components…>`.
pub fn event_subject(prefix: &str, node: &str, realm: &str, topic: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + node.len() + realm.len() + topic.len() + 16);
    s.push_str(prefix);
    s.push_str(".n.");
    s.push_str(node);
    s.push_str(".ev.");
    push_token(&mut s, realm);
    for c in topic.split('.') {
        s.push('.');
        push_token(&mut s, c);
    }
    s
}

/// What a node subscribes to for everything sent to it.
pub fn inbox_subject(prefix: &str, node: &str) -> String {
    format!("{prefix}.n.{node}.>")
}

/// Where other nodes ask this one to confirm it routes a new subscription.
pub fn ctl_subject(prefix: &str, node: &str) -> String {
    format!("{prefix}.n.{node}.ctl")
}

/// Where a node is asked whether it is still connected (`cluster::probe`;
/// under its inbox subscription, so it matches while the node does).
pub fn ping_subject(prefix: &str, node: &str) -> String {
    format!("{prefix}.n.{node}.ping")
}

pub fn heartbeat_subject(prefix: &str, node: &str) -> String {
    format!("{prefix}.hb.{node}")
}

pub fn interest_bucket(prefix: &str) -> String {
    format!("{prefix}-interest")
}

/// The bucket of retained values (one entry per key, the last write).
pub fn keys_bucket(prefix: &str) -> String {
    format!("{prefix}-keys")
}

/// A retained key's entry name in the keys bucket: a stable hash of realm
/// and topic (KV keys take fewer characters than subjects; the value
/// names realm and topic in full).
pub fn retained_key(realm: &str, topic: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in realm.bytes().chain([0]).chain(topic.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("ret={h:016x}")
}

/// A retained value's entry: when it was written (ms since the Unix epoch,
/// so an expiry still counts from the write when a node reads it later),
/// the publication's travelling form after its length, and, for a key tied
/// to a session (`will`), the session's node and the will's body as a
/// publication. `None` when it has expired.
pub fn encode_retained(
    p: &Publication,
    incarnation: u64,
    now: Instant,
    unix_ms: u64,
    will: Option<(&str, &Body)>,
) -> Option<Vec<u8>> {
    let one = encode(p, incarnation, now)?;
    let mut b = Vec::with_capacity(12 + one.len());
    b.extend_from_slice(&unix_ms.to_be_bytes());
    b.extend_from_slice(&(one.len() as u32).to_be_bytes());
    b.extend_from_slice(&one);
    if let Some((node, body)) = will {
        let w = Publication::new(p.realm.clone(), p.topic.clone(), p.id, p.publisher, body.clone());
        let w = encode(&Publication { retain: true, ..w }, incarnation, now)?;
        b.push(u8::try_from(node.len()).ok()?);
        b.extend_from_slice(node.as_bytes());
        b.extend_from_slice(&w);
    }
    Some(b)
}

/// A retained value's entry, as `encode_retained` writes it.
pub struct RetainedEntry {
    /// The writer's incarnation.
    pub incarnation: u64,
    pub p: Publication,
    /// The node of the session the key is tied to, and its will.
    pub will: Option<(String, Publication)>,
}

/// Reads a retained value's entry; its expiry counts from the write.
pub fn decode_retained(b: &[u8], now: Instant, unix_ms: u64) -> Result<RetainedEntry, String> {
    let cut = || "a cut retained entry".to_owned();
    let (at, rest) = b.split_first_chunk::<8>().ok_or_else(cut)?;
    let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(cut)?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return Err(cut());
    }
    let (one, rest) = rest.split_at(len);
    let age = Duration::from_millis(unix_ms.saturating_sub(u64::from_be_bytes(*at)));
    let (incarnation, p) = decode(one, now.checked_sub(age).unwrap_or(now))?;
    let will = match rest.split_first() {
        None => None,
        Some((&n, rest)) => {
            let n = usize::from(n);
            if rest.len() < n {
                return Err(cut());
            }
            let node = std::str::from_utf8(&rest[..n]).map_err(|_| "a will's node is not UTF-8".to_owned())?;
            Some((node.to_owned(), decode(&rest[n..], now)?.1))
        }
    };
    Ok(RetainedEntry { incarnation, p, will })
}

/// A node's interest in a subscription key, as its entry in the interest
/// bucket: the key is `<node>.<hash of the subscription key>`.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct InterestEntry {
    pub realm: String,
    pub topic: String,
    pub policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

impl InterestEntry {
    pub fn of(key: &SubKey) -> InterestEntry {
        InterestEntry {
            realm: key.realm.to_string(),
            topic: key.topic.clone(),
            policy: policy_name(key.policy).into(),
            share: key.share.as_deref().map(str::to_owned),
            filter: key.filter.as_deref().map(str::to_owned),
        }
    }

    pub fn key(&self) -> Option<SubKey> {
        let policy = policy_of(&self.policy)?;
        Some(SubKey {
            realm: Realm::from(self.realm.as_str()),
            topic: self.topic.clone(),
            policy,
            share: self.share.as_deref().map(Arc::from),
            filter: self.filter.as_deref().map(Arc::from),
        })
    }

    /// The entry's key in the bucket, for `node`.
    pub fn bucket_key(&self, node: &str) -> String {
        let h = fnv([&self.realm, &self.topic, &self.policy, opt(&self.share), opt(&self.filter)]);
        format!("{node}.{h:016x}")
    }
}

/// A subscription key's hash as every node computes it (the one in its
/// interest entry's bucket key): how a publication names the shared
/// subscriptions a node is to serve (`WirePub::shares`).
pub fn key_hash(key: &SubKey) -> u64 {
    let (share, filter) = (key.share.as_deref(), key.filter.as_deref());
    fnv([&key.realm, &key.topic, policy_name(key.policy), share.unwrap_or(NONE), filter.unwrap_or(NONE)])
}

/// What stands for an absent field in a hash.
const NONE: &str = "\u{1}";

fn opt(field: &Option<String>) -> &str {
    field.as_deref().unwrap_or(NONE)
}

pub(super) fn policy_name(policy: MatchPolicy) -> &'static str {
    match policy {
        MatchPolicy::Exact => "exact",
        MatchPolicy::Prefix => "prefix",
        MatchPolicy::Wildcard => "wildcard",
        MatchPolicy::Filter => "filter",
    }
}

/// `policy_name`'s inverse.
pub(super) fn policy_of(name: &str) -> Option<MatchPolicy> {
    match name {
        "filter" => Some(MatchPolicy::Filter),
        p => MatchPolicy::parse(p),
    }
}

/// FNV-1a over the fields, each ended by a NUL: stable across nodes and
/// builds, unlike the std hasher.
fn fnv(fields: [&str; 5]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in fields {
        for b in f.bytes().chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

/// The first byte of every publication on the wire.
const VERSION: u8 = 1;

#[derive(Serialize, Deserialize)]
pub(super) enum WireBody {
    /// WAMP arguments as the publisher encoded them: serializer (0 JSON,
    /// 1 MessagePack), the elements, the Arguments element's length.
    Raw(u8, Bytes, usize),
    /// WAMP arguments the router made (or CBOR's, decoded on arrival):
    /// encoded here as MessagePack elements, the Arguments element's
    /// length, so they are checked on arrival like `Raw` (never a `Value`
    /// tree decoded straight off the wire: its depth would be unbounded).
    Packed(Bytes, usize),
    /// No arguments at all.
    Empty,
    Mqtt(Bytes),
}

#[derive(Serialize, Deserialize)]
struct WireProps {
    payload_format: Option<u8>,
    expiry: Option<u32>,
    content_type: Option<String>,
    response_topic: Option<String>,
    correlation: Option<Bytes>,
    user: Vec<(String, String)>,
}

#[derive(Serialize, Deserialize)]
struct WireReceivers {
    eligible: Option<Vec<u64>>,
    eligible_authid: Option<Vec<String>>,
    eligible_authrole: Option<Vec<String>>,
    exclude: Vec<u64>,
    exclude_authid: Vec<String>,
    exclude_authrole: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct WirePub {
    /// The origin node's incarnation.
    incarnation: u64,
    id: u64,
    publisher: u64,
    exclude_me: bool,
    realm: String,
    topic: String,
    body: WireBody,
    qos: u8,
    retain: bool,
    props: Option<WireProps>,
    /// Milliseconds left before the message expires (MQTT 5).
    expires_ms: Option<u64>,
    disclosed: Option<(u64, String, String)>,
    receivers: Option<WireReceivers>,
    /// The `ppt_*` options, one MessagePack dictionary (checked on arrival).
    ppt: Option<Bytes>,
    /// The MQTT shared subscriptions it matched in the cluster, each with
    /// the one node that serves it (`key_hash`, node name): a node delivers
    /// to its own members of these only (`Shard::publish_from_cluster`).
    #[serde(default)]
    shares: Vec<(u64, String)>,
}

/// A publication in its travelling form, or `None` when it has expired.
pub fn encode(p: &Publication, incarnation: u64, now: Instant) -> Option<Vec<u8>> {
    encode_shared(p, incarnation, now, Vec::new())
}

/// `encode`, with the shared subscriptions it matched and the node that
/// serves each (`WirePub::shares`).
pub fn encode_shared(p: &Publication, incarnation: u64, now: Instant, shares: Vec<(u64, String)>) -> Option<Vec<u8>> {
    let expires_ms = match p.expires {
        Some(at) if at <= now => return None,
        Some(at) => Some((at - now).as_millis() as u64),
        None => None,
    };
    let body = match &p.body {
        Body::Mqtt(b) => WireBody::Mqtt(b.clone()),
        Body::Wamp(payload) => match payload.raw_parts() {
            Some((Serializer::Json, bytes, n)) => WireBody::Raw(0, bytes.clone(), n),
            Some((Serializer::MsgPack, bytes, n)) => WireBody::Raw(1, bytes.clone(), n),
            _ => pack(payload.values())?,
        },
    };
    let w = WirePub {
        incarnation,
        id: p.id,
        publisher: p.publisher.id,
        exclude_me: p.exclude_me,
        realm: p.realm.to_string(),
        topic: p.topic.clone(),
        body,
        qos: p.qos,
        retain: p.retain,
        props: p.props.as_deref().map(|m| WireProps {
            payload_format: m.payload_format,
            expiry: m.expiry,
            content_type: m.content_type.clone(),
            response_topic: m.response_topic.clone(),
            correlation: m.correlation.clone(),
            user: m.user.clone(),
        }),
        expires_ms,
        disclosed: p.disclosed.as_deref().map(|d| (d.session, d.authid.clone(), d.authrole.clone())),
        receivers: p.receivers.as_deref().map(|r| WireReceivers {
            eligible: r.eligible.clone(),
            eligible_authid: r.eligible_authid.clone(),
            eligible_authrole: r.eligible_authrole.clone(),
            exclude: r.exclude.clone(),
            exclude_authid: r.exclude_authid.clone(),
            exclude_authrole: r.exclude_authrole.clone(),
        }),
        ppt: match p.ppt.as_deref() {
            Some(d) => Some(Bytes::from(rmp_serde::to_vec(&Value::Dict(d.clone())).ok()?)),
            None => None,
        },
        shares,
    };
    let mut out = vec![VERSION];
    rmp_serde::encode::write(&mut out, &w).ok()?;
    Some(out)
}

/// Values as MessagePack elements (an empty Arguments list when there are
/// only keyword arguments).
fn pack(v: &Values) -> Option<WireBody> {
    if v.args.is_none() && v.kwargs.is_none() {
        return Some(WireBody::Empty);
    }
    let mut b = rmp_serde::to_vec(&Value::List(v.args.clone().unwrap_or_default())).ok()?;
    let n = b.len();
    if let Some(k) = &v.kwargs {
        b.extend(rmp_serde::to_vec(&Value::Dict(k.clone())).ok()?);
    }
    Some(WireBody::Packed(Bytes::from(b), n))
}

/// A WAMP payload in its travelling form (`None`: it does not encode).
pub(super) fn wamp_body(payload: &Payload) -> Option<WireBody> {
    match payload.raw_parts() {
        Some((Serializer::Json, bytes, n)) => Some(WireBody::Raw(0, bytes.clone(), n)),
        Some((Serializer::MsgPack, bytes, n)) => Some(WireBody::Raw(1, bytes.clone(), n)),
        _ => pack(payload.values()),
    }
}

/// A WAMP payload from its travelling form, checked like a client's.
pub(super) fn wamp_payload(body: WireBody) -> Result<Payload, String> {
    match body {
        WireBody::Raw(ser, bytes, n) => {
            let ser = match ser {
                0 => Serializer::Json,
                1 => Serializer::MsgPack,
                s => return Err(format!("unknown serializer {s}")),
            };
            Payload::from_parts(ser, bytes, n)
        }
        WireBody::Packed(bytes, n) => Payload::from_parts(Serializer::MsgPack, bytes, n),
        WireBody::Empty => Ok(Payload::Values(Values::default())),
        WireBody::Mqtt(_) => Err("an MQTT body where a WAMP payload belongs".into()),
    }
}

/// A dictionary as MessagePack bytes.
pub(super) fn dict_bytes(d: &crate::value::Dict) -> Option<Bytes> {
    rmp_serde::to_vec(&Value::Dict(d.clone())).ok().map(Bytes::from)
}

/// A dictionary from MessagePack bytes, checked before it is decoded.
pub(super) fn bytes_dict(b: &[u8]) -> Result<crate::value::Dict, String> {
    match checked_msgpack(b)? {
        Value::Dict(d) => Ok(d),
        _ => Err("a value that is not a dictionary".into()),
    }
}

/// One MessagePack value, checked (depth, kinds) before it is decoded.
fn checked_msgpack(b: &[u8]) -> Result<Value, String> {
    if elements::check_msgpack(b)? != b.len() {
        return Err("bytes after a MessagePack value".into());
    }
    elements::msgpack_value(b)
}

/// The first byte of a NATS message that carries publications: several
/// encoded publications to one node and one subject, each after its
/// length (4 bytes, big-endian), in publication order.
const BATCH: u8 = 2;

/// Appends one encoded publication (`encode`) to a batch.
pub fn batch_push(batch: &mut Vec<u8>, one: &[u8]) {
    if batch.is_empty() {
        batch.push(BATCH);
    }
    batch.extend_from_slice(&(one.len() as u32).to_be_bytes());
    batch.extend_from_slice(one);
}

/// Each publication of a batch, in order, to `f`; a frame that does not
/// decode is reported and skipped, a cut length ends the batch.
#[allow(clippy::type_complexity)]
pub fn decode_batch(b: &[u8], now: Instant, mut f: impl FnMut(Result<(u64, Publication, Vec<(u64, String)>), String>)) {
    split_batch(b, |one| match one {
        Ok(one) => f(decode_shared(one, now)),
        Err(e) => f(Err(e)),
    })
}

/// The items of a batch (`batch_push`), in order; an error for a batch
/// that does not read (what came before it was handed on).
pub fn split_batch(b: &[u8], mut f: impl FnMut(Result<&[u8], String>)) {
    let Some((&BATCH, mut rest)) = b.split_first() else {
        return f(Err("not a batch".into()));
    };
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return f(Err("a cut batch".into()));
        };
        let len = u32::from_be_bytes(*len) as usize;
        if len > tail.len() {
            return f(Err("a cut batch".into()));
        }
        let (one, tail) = tail.split_at(len);
        f(Ok(one));
        rest = tail;
    }
}

/// A publication from another node: its origin incarnation and the
/// publication, whose publisher is on the pseudo-worker `REMOTE`.
pub fn decode(b: &[u8], now: Instant) -> Result<(u64, Publication), String> {
    decode_shared(b, now).map(|(incarnation, p, _)| (incarnation, p))
}

/// `decode`, and the shared subscriptions it matched with the node that
/// serves each.
#[allow(clippy::type_complexity)]
pub fn decode_shared(b: &[u8], now: Instant) -> Result<(u64, Publication, Vec<(u64, String)>), String> {
    let Some((&VERSION, rest)) = b.split_first() else {
        return Err("not a version 1 publication".into());
    };
    let w: WirePub = rmp_serde::from_slice(rest).map_err(|e| format!("undecodable publication: {e}"))?;
    let body = match w.body {
        WireBody::Mqtt(b) => Body::Mqtt(b),
        WireBody::Raw(ser, bytes, n) => {
            let ser = match ser {
                0 => Serializer::Json,
                1 => Serializer::MsgPack,
                s => return Err(format!("unknown serializer {s}")),
            };
            Body::Wamp(Payload::from_parts(ser, bytes, n)?)
        }
        WireBody::Packed(bytes, n) => Body::Wamp(Payload::from_parts(Serializer::MsgPack, bytes, n)?),
        WireBody::Empty => Body::Wamp(Payload::Values(Values::default())),
    };
    let publisher = SessionRef { worker: super::REMOTE, id: w.publisher };
    let mut p = Publication::new(Realm::from(w.realm.as_str()), w.topic, w.id, publisher, body);
    p.exclude_me = w.exclude_me;
    p.qos = w.qos.min(2);
    p.retain = w.retain;
    p.started = now;
    p.expires = w.expires_ms.map(|ms| now + Duration::from_millis(ms));
    p.props = w.props.map(|m| {
        Box::new(MsgProps {
            payload_format: m.payload_format,
            expiry: m.expiry,
            content_type: m.content_type,
            response_topic: m.response_topic,
            correlation: m.correlation,
            user: m.user,
        })
    });
    p.disclosed = w.disclosed.map(|(session, authid, authrole)| Box::new(Identity { session, authid, authrole }));
    p.receivers = w.receivers.map(|r| {
        Box::new(
            Receivers {
                eligible: r.eligible,
                eligible_authid: r.eligible_authid,
                eligible_authrole: r.eligible_authrole,
                exclude: r.exclude,
                exclude_authid: r.exclude_authid,
                exclude_authrole: r.exclude_authrole,
            }
            .sorted(),
        )
    });
    p.ppt = match w.ppt {
        Some(b) => match checked_msgpack(&b)? {
            Value::Dict(d) => Some(Box::new(d)),
            _ => return Err("ppt options that are not a dictionary".into()),
        },
        None => None,
    };
    Ok((w.incarnation, p, w.shares))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_one_to_one_and_never_special() {
        let mut s = String::new();
        push_token(&mut s, "room-1_A");
        assert_eq!(s, "room-1_A");
        for (raw, want) in [("", "~"), ("a b", "~612062"), ("*", "~2a"), (">", "~3e"), ("~", "~7e"), ("é", "~c3a9")] {
            let mut s = String::new();
            push_token(&mut s, raw);
            assert_eq!(s, want, "{raw:?}");
        }
        assert_eq!(event_subject("fnc", "a", "realm1", "x.y"), "fnc.n.a.ev.realm1.x.y");
        // MQTT's empty levels and `$SYS`, WAMP's loose components.
        assert_eq!(event_subject("fnc", "a", "r", "a..b"), "fnc.n.a.ev.r.a.~.b");
        assert_eq!(event_subject("fnc", "a", "r", "$SYS.x"), "fnc.n.a.ev.r.~24535953.x");
        assert!(!event_subject("fnc", "a", "my realm", "t*.>").contains(['*', '>', ' ']));
    }

    #[test]
    fn interest_entries_round_trip_with_stable_keys() {
        let key = SubKey {
            realm: "r".into(),
            topic: "a.+.#".into(),
            policy: MatchPolicy::Filter,
            share: Some("g".into()),
            filter: None,
        };
        let e = InterestEntry::of(&key);
        let json = serde_json::to_vec(&e).unwrap();
        let back: InterestEntry = serde_json::from_slice(&json).unwrap();
        assert_eq!(e.bucket_key("a"), format!("a.{:016x}", key_hash(&key)), "one hash for entries and shares");
        assert_eq!(back.key(), Some(key));
        assert_eq!(e.bucket_key("a"), back.bucket_key("a"));
        assert!(e.bucket_key("a").starts_with("a."));
        let other = InterestEntry { share: None, ..back };
        assert_ne!(other.bucket_key("a"), e.bucket_key("a"));
        let bad = InterestEntry { policy: "fuzzy".into(), ..other };
        assert_eq!(bad.key(), None);
    }

    fn sample(body: Body) -> Publication {
        let mut p = Publication::new("r".into(), "a.b".into(), 42, SessionRef { worker: 1, id: 77 }, body);
        p.exclude_me = false;
        p.qos = 1;
        p.retain = true;
        p.props = Some(Box::new(MsgProps {
            content_type: Some("text/plain".into()),
            correlation: Some(Bytes::from_static(b"\x00\x01")),
            user: vec![("k".into(), "v".into())],
            ..Default::default()
        }));
        p.disclosed = Some(Box::new(Identity { session: 77, authid: "joe".into(), authrole: "user".into() }));
        p.receivers = Some(Box::new(Receivers { exclude: vec![9, 3], ..Default::default() }));
        p.ppt = Some(Box::new(vec![("ppt_scheme".into(), Value::Str("x".into()))]));
        p
    }

    #[test]
    fn a_publication_travels_whole() {
        let now = Instant::now();
        let raw =
            crate::payload::Payload::from_parts(Serializer::Json, Bytes::from_static(b"[1]{\"k\":2}"), 3).unwrap();
        for body in [
            Body::Wamp(raw),
            Body::Wamp(Payload::args(vec![Value::Bin(vec![0, 1]), Value::Float(1.5)])),
            Body::Mqtt(Bytes::from_static(b"\xffbytes")),
        ] {
            let mut p = sample(body);
            p.expires = Some(now + Duration::from_secs(5));
            let b = encode(&p, 5, now).unwrap();
            let (inc, q) = decode(&b, now).unwrap();
            assert_eq!(inc, 5);
            assert_eq!(
                (q.id, q.publisher, q.exclude_me),
                (42, SessionRef { worker: crate::cluster::REMOTE, id: 77 }, false)
            );
            assert_eq!((&*q.realm, q.topic.as_str(), q.qos, q.retain), ("r", "a.b", 1, true));
            assert_eq!(q.props, p.props);
            assert_eq!(q.disclosed.as_deref().map(|d| d.authid.as_str()), Some("joe"));
            assert_eq!(q.receivers.as_ref().unwrap().exclude, vec![3, 9], "sorted for `admits`");
            assert_eq!(q.ppt, p.ppt);
            assert_eq!(q.expires, Some(now + Duration::from_secs(5)));
            match (&p.body, &q.body) {
                (Body::Mqtt(a), Body::Mqtt(b)) => assert_eq!(a, b),
                (Body::Wamp(a), Body::Wamp(b)) => {
                    assert_eq!(a, b);
                    assert_eq!(a.encoded(Serializer::Json), b.encoded(Serializer::Json), "raw stays raw");
                }
                _ => panic!("the body changed protocol"),
            }
        }
    }

    #[test]
    fn expired_stays_home_and_bad_bytes_are_refused() {
        let now = Instant::now();
        let mut p = sample(Body::Mqtt(Bytes::new()));
        p.expires = Some(now);
        assert!(encode(&p, 1, now).is_none());
        assert!(decode(b"", now).is_err());
        assert!(decode(b"\x02", now).is_err());
        assert!(decode(b"\x01\xc1", now).is_err());
        // A raw payload that is not what it says is refused, not trusted.
        p.expires = None;
        let raw = crate::payload::Payload::from_parts(Serializer::Json, Bytes::from_static(b"[1]"), 3).unwrap();
        p.body = Body::Wamp(raw);
        let mut b = encode(&p, 1, now).unwrap();
        let at = b.windows(3).position(|w| w == b"[1]").unwrap();
        b[at] = b'{';
        assert!(decode(&b, now).is_err());
        for cut in 0..b.len() {
            let _ = decode(&b[..cut], now);
        }
    }

    #[test]
    fn router_made_values_travel_checked() {
        let now = Instant::now();
        let kwargs_only = Payload::new(None, Some(vec![("k".into(), Value::Int(-1))]));
        for body in [kwargs_only, Payload::default()] {
            let mut p = sample(Body::Wamp(body));
            p.expires = None;
            let (_, q) = decode(&encode(&p, 1, now).unwrap(), now).unwrap();
            match (&p.body, &q.body) {
                (Body::Wamp(a), Body::Wamp(b)) => {
                    assert_eq!(a.values().kwargs, b.values().kwargs);
                    assert_eq!(a.elements() == 0, b.elements() == 0, "no arguments stays none");
                }
                _ => panic!("the body changed protocol"),
            }
        }
        // A value nested far deeper than any client may send is refused
        // (checked, not decoded: no stack to overflow), in the body and in
        // the ppt options.
        let mut deep = vec![0x91u8; 100_000];
        deep.push(0xc0);
        let n = deep.len();
        let wire = |body: WireBody, ppt: Option<Bytes>| {
            let w = WirePub {
                incarnation: 1,
                id: 1,
                publisher: 1,
                exclude_me: true,
                realm: "r".into(),
                topic: "t".into(),
                body,
                qos: 0,
                retain: false,
                props: None,
                expires_ms: None,
                disclosed: None,
                receivers: None,
                ppt,
                shares: Vec::new(),
            };
            let mut out = vec![VERSION];
            rmp_serde::encode::write(&mut out, &w).unwrap();
            decode(&out, now)
        };
        assert!(wire(WireBody::Packed(Bytes::from(deep.clone()), n), None).is_err());
        assert!(wire(WireBody::Empty, Some(Bytes::from(deep))).is_err());
        assert!(wire(WireBody::Empty, Some(Bytes::from_static(&[0x91, 0xc0]))).is_err(), "ppt must be a dictionary");
        assert!(wire(WireBody::Empty, None).is_ok());
    }

    #[test]
    fn a_publication_names_who_serves_its_shared_subscriptions() {
        let now = Instant::now();
        let p = sample(Body::Mqtt(Bytes::from_static(b"x")));
        let shares = vec![(7, "b".to_owned()), (9, "c".to_owned())];
        let b = encode_shared(&p, 5, now, shares.clone()).unwrap();
        let (inc, q, back) = decode_shared(&b, now).unwrap();
        assert_eq!((inc, q.id, back), (5, p.id, shares));
        assert!(decode_shared(&encode(&p, 5, now).unwrap(), now).unwrap().2.is_empty());
    }

    #[test]
    fn batches_keep_order_and_survive_bad_frames() {
        let now = Instant::now();
        let mut batch = Vec::new();
        for id in 1..=3 {
            let mut p = sample(Body::Mqtt(Bytes::from_static(b"x")));
            p.expires = None;
            p.id = id;
            batch_push(&mut batch, &encode(&p, 9, now).unwrap());
        }
        let mut ids = Vec::new();
        decode_batch(&batch, now, |r| ids.push(r.map(|(_, p, _)| p.id)));
        assert_eq!(ids, vec![Ok(1), Ok(2), Ok(3)]);
        // A bad frame in the middle is skipped; a cut end is reported once.
        let mut bad = Vec::new();
        batch_push(&mut bad, &encode(&sample(Body::Mqtt(Bytes::new())), 9, now).unwrap());
        batch_push(&mut bad, b"\x01\xc1");
        batch_push(&mut bad, &encode(&sample(Body::Mqtt(Bytes::new())), 9, now).unwrap());
        bad.extend_from_slice(&[0, 0, 0, 9, 1]);
        let mut got = Vec::new();
        decode_batch(&bad, now, |r| got.push(r.is_ok()));
        assert_eq!(got, vec![true, false, true, false]);
        for cut in 0..batch.len() {
            decode_batch(&batch[..cut], now, |_| {});
        }
        let mut n = 0;
        decode_batch(b"\x01", now, |r| n += usize::from(r.is_err()));
        assert_eq!(n, 1, "not a batch");
    }

    #[test]
    fn a_retained_entry_keeps_its_expiry_from_the_write() {
        let now = Instant::now();
        let body = Body::Mqtt(Bytes::from_static(b"21.5"));
        let mut p = Publication::new("realm1".into(), "s.t".into(), 9, SessionRef { worker: 0, id: 4 }, body);
        p.retain = true;
        p.expires = Some(now + Duration::from_secs(60));
        let b = encode_retained(&p, 77, now, 1_000_000, None).unwrap();
        // Read 20 s after it was written: 40 s are left.
        let e = decode_retained(&b, now, 1_020_000).unwrap();
        assert_eq!((e.incarnation, e.p.topic.as_str(), e.p.retain, e.will.is_none()), (77, "s.t", true, true));
        let left = e.p.expires.unwrap() - now;
        assert!(left <= Duration::from_secs(40) && left > Duration::from_secs(39), "{left:?}");
        assert!(decode_retained(&b[..5], now, 0).is_err());
        assert!(decode_retained(&b[..b.len() - 1], now, 0).is_err());
        // A key tied to a session carries the session's node and its will.
        let will = Body::Mqtt(Bytes::new());
        let b = encode_retained(&p, 77, now, 1_000_000, Some(("node-a", &will))).unwrap();
        let e = decode_retained(&b, now, 1_000_000).unwrap();
        let (node, w) = e.will.expect("the will");
        assert_eq!((node.as_str(), w.topic.as_str(), w.retain), ("node-a", "s.t", true));
        assert!(matches!(w.body, Body::Mqtt(ref b) if b.is_empty()));
        assert_ne!(retained_key("realm1", "s.t"), retained_key("realm1s", ".t"));
        assert!(retained_key("r", "a.b").starts_with("ret="));
    }
}
