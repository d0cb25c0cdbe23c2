//! The stored form of MQTT persistent sessions (MessagePack), and their
//! keys. Every key names the session's incarnation (its session ID), so
//! writes of two incarnations of one client ID (a session handed from one
//! worker to another, or replaced) never overwrite each other: a new
//! incarnation writes itself whole and deletes the old one's keys, and at
//! start the newest record of a client wins and the rest are deleted.
//!
//! - `ms` NUL realm NUL client NUL id: the session (`SessionRecord`);
//! - `mo` NUL realm NUL client NUL id seq: one QoS 1/2 message toward the
//!   client, queued or in flight (`MessageRecord`), `seq` in the order the
//!   session got it;
//! - `mi` NUL realm NUL client NUL id pkid: a QoS 2 packet ID from the
//!   client awaiting PUBREL (no value).
//!
//! IDs and sequence numbers are big-endian, so one session's messages sort
//! in order. Stable across versions: add fields only with `#[serde(default)]`.

use serde::{Deserialize, Serialize};

pub const SESSION: &[u8] = b"ms\0";
pub const MESSAGE: &[u8] = b"mo\0";
pub const QOS2_IN: &[u8] = b"mi\0";

/// `kind` realm NUL client NUL: every key of one client ID.
pub fn client_prefix(kind: &[u8], realm: &str, client: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(kind.len() + realm.len() + client.len() + 2 + 10);
    k.extend_from_slice(kind);
    k.extend_from_slice(realm.as_bytes());
    k.push(0);
    k.extend_from_slice(client.as_bytes());
    k.push(0);
    k
}

/// Every key of one incarnation of one kind.
pub fn incarnation_prefix(kind: &[u8], realm: &str, client: &str, id: u64) -> Vec<u8> {
    let mut k = client_prefix(kind, realm, client);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub fn session_key(realm: &str, client: &str, id: u64) -> Vec<u8> {
    incarnation_prefix(SESSION, realm, client, id)
}

pub fn message_key(realm: &str, client: &str, id: u64, seq: u64) -> Vec<u8> {
    let mut k = incarnation_prefix(MESSAGE, realm, client, id);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub fn qos2_key(realm: &str, client: &str, id: u64, pkid: u16) -> Vec<u8> {
    let mut k = incarnation_prefix(QOS2_IN, realm, client, id);
    k.extend_from_slice(&pkid.to_be_bytes());
    k
}

/// A key split into (realm, client, session ID, the rest), or `None` if it
/// is not one of ours.
pub fn parse_key<'a>(kind: &[u8], key: &'a [u8]) -> Option<(&'a str, &'a str, u64, &'a [u8])> {
    let rest = key.strip_prefix(kind)?;
    let realm_end = rest.iter().position(|&b| b == 0)?;
    let realm = std::str::from_utf8(&rest[..realm_end]).ok()?;
    let rest = &rest[realm_end + 1..];
    let client_end = rest.iter().position(|&b| b == 0)?;
    let client = std::str::from_utf8(&rest[..client_end]).ok()?;
    let rest = &rest[client_end + 1..];
    let id = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    Some((realm, client, id, &rest[8..]))
}

/// One subscription.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SubRecord {
    pub filter: String,
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: u8,
    pub id: Option<u32>,
}

/// MQTT 5 publication properties.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct PropsRecord {
    pub payload_format: Option<u8>,
    pub expiry: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    #[serde(with = "super::record::opt_bytes_as_bin")]
    pub correlation: Option<Vec<u8>>,
    pub user: Vec<(String, String)>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WillRecord {
    /// MQTT form (`a/b`).
    pub topic: String,
    #[serde(with = "super::record::bytes_as_bin")]
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub delay: u32,
    pub props: PropsRecord,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SessionRecord {
    /// The incarnation's session ID (also in the key).
    pub id: u64,
    /// When the incarnation was made (ms since the epoch): the newest wins.
    pub created_ms: u64,
    /// 3, 4 or 5.
    pub version: u8,
    /// Seconds the session outlives its connection (u32::MAX: forever).
    pub expiry: u32,
    pub subs: Vec<SubRecord>,
    pub will: Option<WillRecord>,
    /// When the connection went (ms since the epoch); `None` while it was
    /// connected, so a session found so at start was alive at the crash.
    pub offline_since_ms: Option<u64>,
    /// An offline session's delayed will is due then (ms since the epoch).
    pub will_due_ms: Option<u64>,
    pub next_pkid: u16,
    /// Who the session is (its authid and role).
    #[serde(default)]
    pub authid: String,
    #[serde(default)]
    pub authrole: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct MessageRecord {
    /// The publication, in the retained-record form (`record::encode`).
    #[serde(with = "super::record::bytes_as_bin")]
    pub publication: Vec<u8>,
    /// The QoS and retain flag it goes out with.
    pub qos: u8,
    pub retain: bool,
    pub sub_ids: Vec<u32>,
    /// The packet ID it was sent with (0: still queued).
    pub pkid: u16,
    /// QoS 2: PUBREC received, PUBREL sent.
    pub released: bool,
}

pub fn encode<T: Serialize>(r: &T) -> Vec<u8> {
    rmp_serde::to_vec(r).expect("a session record always encodes")
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    rmp_serde::from_slice(bytes).map_err(|e| format!("not an MQTT session record: {e}"))
}

/// One session read back at start: its newest incarnation's record, its
/// messages in order, its QoS 2 packet IDs.
#[derive(Debug)]
pub struct Loaded {
    pub realm: String,
    pub client: String,
    pub record: SessionRecord,
    pub messages: Vec<(u64, MessageRecord)>,
    pub qos2_in: Vec<u16>,
}

/// What to do with an unreadable record (key, reason): `Err` stops the load.
pub type Corrupt<'a> = dyn FnMut(&[u8], String) -> Result<(), String> + 'a;

/// Puts the scanned `ms`, `mo` and `mi` pairs together: per client ID the
/// newest incarnation, and the keys of every other one (and of messages
/// whose session is gone) to delete. A record that cannot be read goes to
/// `corrupt` (key, reason): its `Err` stops the load, its `Ok` skips the
/// record (`--repair`; the caller deletes it).
pub fn load(
    sessions: super::Pairs,
    messages: super::Pairs,
    qos2: super::Pairs,
    corrupt: &mut Corrupt,
) -> Result<(Vec<Loaded>, Vec<super::Write>), String> {
    use std::collections::BTreeMap;
    let mut stale = Vec::new();
    let mut newest: BTreeMap<(String, String), Loaded> = BTreeMap::new();
    for (key, value) in sessions {
        let Some((realm, client, id, _)) = parse_key(SESSION, &key) else {
            corrupt(&key, "not a session key".into())?;
            continue;
        };
        let record = match decode::<SessionRecord>(&value) {
            Ok(r) if r.id == id => r,
            Ok(r) => {
                corrupt(&key, format!("the record is of session {}", r.id))?;
                continue;
            }
            Err(e) => {
                corrupt(&key, e)?;
                continue;
            }
        };
        let slot = (realm.to_owned(), client.to_owned());
        let loaded =
            Loaded { realm: slot.0.clone(), client: slot.1.clone(), record, messages: Vec::new(), qos2_in: Vec::new() };
        match newest.get(&slot) {
            Some(old) if (old.record.created_ms, old.record.id) >= (loaded.record.created_ms, loaded.record.id) => {
                stale.push(super::Write::Delete { key: key.clone() });
            }
            Some(old) => {
                stale.push(super::Write::Delete { key: session_key(realm, client, old.record.id) });
                newest.insert(slot, loaded);
            }
            None => {
                newest.insert(slot, loaded);
            }
        }
    }
    let tail =
        |rest: &[u8], n: usize| (rest.len() == n).then(|| rest.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b)));
    for (key, value) in messages {
        let Some((realm, client, id, seq)) =
            parse_key(MESSAGE, &key).and_then(|(r, c, id, rest)| Some((r, c, id, tail(rest, 8)?)))
        else {
            corrupt(&key, "not a message key".into())?;
            continue;
        };
        match newest.get_mut(&(realm.to_owned(), client.to_owned())).filter(|l| l.record.id == id) {
            Some(l) => match decode(&value) {
                Ok(m) => l.messages.push((seq, m)),
                Err(e) => corrupt(&key, e)?,
            },
            None => stale.push(super::Write::Delete { key }),
        }
    }
    for (key, _) in qos2 {
        let Some((realm, client, id, pkid)) =
            parse_key(QOS2_IN, &key).and_then(|(r, c, id, rest)| Some((r, c, id, tail(rest, 2)? as u16)))
        else {
            corrupt(&key, "not a QoS 2 key".into())?;
            continue;
        };
        match newest.get_mut(&(realm.to_owned(), client.to_owned())).filter(|l| l.record.id == id) {
            Some(l) => l.qos2_in.push(pkid),
            None => stale.push(super::Write::Delete { key }),
        }
    }
    Ok((newest.into_values().collect(), stale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_incarnation_then_sequence_and_parse_back() {
        assert!(message_key("r", "c", 1, 2) < message_key("r", "c", 1, 256));
        assert!(message_key("r", "c", 1, u64::MAX) < message_key("r", "c", 2, 0));
        // One client's prefix does not cover another whose ID extends it.
        assert!(!message_key("r", "cd", 1, 1).starts_with(&client_prefix(MESSAGE, "r", "c")));
        let k = qos2_key("realm1", "dev/1", 77, 513);
        let (realm, client, id, rest) = parse_key(QOS2_IN, &k).unwrap();
        assert_eq!((realm, client, id, rest), ("realm1", "dev/1", 77, &513u16.to_be_bytes()[..]));
        assert!(parse_key(SESSION, &k).is_none());
        assert!(parse_key(SESSION, b"ms\0r\0c\0\x01").is_none(), "a short ID");
    }

    #[test]
    fn records_round_trip() {
        let s = SessionRecord {
            id: 9,
            created_ms: 1,
            version: 5,
            expiry: u32::MAX,
            subs: vec![SubRecord {
                filter: "a/+".into(),
                qos: 1,
                no_local: true,
                retain_as_published: false,
                retain_handling: 2,
                id: Some(4),
            }],
            will: Some(WillRecord {
                topic: "w".into(),
                payload: vec![0, 255],
                qos: 1,
                retain: true,
                delay: 5,
                props: PropsRecord { correlation: Some(vec![1]), ..Default::default() },
            }),
            offline_since_ms: Some(3),
            will_due_ms: None,
            next_pkid: 12,
            authid: "dev".into(),
            authrole: "device".into(),
        };
        assert_eq!(decode::<SessionRecord>(&encode(&s)).unwrap(), s);
        let m =
            MessageRecord { publication: vec![1, 2], qos: 2, retain: false, sub_ids: vec![], pkid: 3, released: true };
        assert_eq!(decode::<MessageRecord>(&encode(&m)).unwrap(), m);
        assert!(decode::<SessionRecord>(b"\xc1").is_err());
    }

    fn record(id: u64, created_ms: u64) -> SessionRecord {
        SessionRecord {
            id,
            created_ms,
            version: 4,
            expiry: u32::MAX,
            subs: vec![],
            will: None,
            offline_since_ms: Some(1),
            will_due_ms: None,
            next_pkid: 0,
            authid: String::new(),
            authrole: String::new(),
        }
    }

    #[test]
    fn load_keeps_the_newest_incarnation_and_says_what_to_delete() {
        let m = MessageRecord { publication: vec![], qos: 1, retain: false, sub_ids: vec![], pkid: 0, released: false };
        let sessions = vec![
            (session_key("r", "c", 1), encode(&record(1, 10))),
            (session_key("r", "c", 2), encode(&record(2, 20))),
            (session_key("r", "d", 3), encode(&record(3, 5))),
        ];
        let messages = vec![
            (message_key("r", "c", 1, 1), encode(&m)),
            (message_key("r", "c", 2, 7), encode(&m)),
            (message_key("r", "gone", 9, 1), encode(&m)),
        ];
        let qos2 = vec![(qos2_key("r", "c", 2, 5), vec![]), (qos2_key("r", "c", 1, 6), vec![])];
        let mut never = |k: &[u8], e: String| -> Result<(), String> { panic!("{k:?}: {e}") };
        let (loaded, stale) = load(sessions, messages, qos2, &mut never).unwrap();
        assert_eq!(loaded.len(), 2);
        let c = loaded.iter().find(|l| l.client == "c").unwrap();
        assert_eq!(c.record.id, 2, "the newest");
        assert_eq!(c.messages.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![7]);
        assert_eq!(c.qos2_in, vec![5]);
        let deleted: Vec<Vec<u8>> = stale
            .into_iter()
            .map(|w| match w {
                crate::store::Write::Delete { key } => key,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(deleted.contains(&session_key("r", "c", 1)));
        assert!(deleted.contains(&message_key("r", "c", 1, 1)));
        assert!(deleted.contains(&message_key("r", "gone", 9, 1)));
        assert!(deleted.contains(&qos2_key("r", "c", 1, 6)));
        assert_eq!(deleted.len(), 4);
    }

    #[test]
    fn an_unreadable_record_stops_the_load_or_is_skipped() {
        let bad =
            || vec![(session_key("r", "c", 1), b"\xc1".to_vec()), (session_key("r", "d", 2), encode(&record(2, 1)))];
        let mut stop = |_: &[u8], e: String| -> Result<(), String> { Err(e) };
        assert!(load(bad(), vec![], vec![], &mut stop).is_err());
        let mut seen = Vec::new();
        let mut skip = |k: &[u8], _: String| -> Result<(), String> {
            seen.push(k.to_vec());
            Ok(())
        };
        let (loaded, _) = load(bad(), vec![], vec![], &mut skip).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(seen, vec![session_key("r", "c", 1)]);
    }
}
