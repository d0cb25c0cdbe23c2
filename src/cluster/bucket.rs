//! The cluster thread's writes to the interest bucket, on a task of its
//! own so they land in the order the owners sent them: this node's
//! interest entries, its parts of registrations (compare-and-set against
//! the other nodes' writes, `procs::join`), and the syncs that make a new
//! subscription's SUBSCRIBED and a new registration's REGISTERED
//! cluster-wide. Also what a node removes of its own at start and stop.

use super::procs::{self, RegEntry, RegPart};
use super::thread::SYNC_LIMIT;
use super::wire;
use super::{CasOutcome, Claim};
use crate::router::Barrier;
use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;

/// How often a registration's compare-and-set is tried against other
/// nodes writing the same entry.
const CAS_TRIES: usize = 16;

/// One write for the writer task, done in the order the owners sent them.
pub(super) enum Write {
    /// An interest entry; a new key's carries the barrier to ack once the
    /// live nodes (by name) route it.
    Interest { key: String, value: Option<Bytes>, sync: Option<(Barrier, Vec<String>)> },
    /// This node's part of a registration, against the other nodes' parts
    /// (`procs::join`); `known` is what this node knows of the others (name,
    /// incarnation, alive), `live` whom a claim waits for.
    Register { part: RegPart, claim: Option<Claim>, known: Vec<(String, u64, bool)>, live: Vec<String> },
}

/// What the writer answers, once the other nodes route what it wrote.
pub(super) enum Ack {
    Barrier(Barrier),
    /// Granted, or refused with this error URI.
    Claimed(Claim, Option<&'static str>),
}

/// The interest bucket, made if it is not there. Its stream is made here
/// rather than by `create_key_value`, whose account query expects fields
/// that nats-server 2.9 (Debian's) does not send; the configuration is a
/// key-value bucket's (history 1, rollups, direct gets, discard new).
pub(super) async fn open(js: &async_nats::jetstream::Context, bucket: &str) -> Result<kv::Store, String> {
    use async_nats::jetstream::stream;
    if let Ok(kv) = js.get_key_value(bucket).await {
        return Ok(kv);
    }
    let config = stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        storage: stream::StorageType::File,
        num_replicas: 1,
        ..Default::default()
    };
    // Another node may make it meanwhile: then the get below finds it.
    let made = js.get_or_create_stream(config).await.map(drop).map_err(|e| e.to_string());
    js.get_key_value(bucket)
        .await
        .map_err(|e| format!("cluster: no interest bucket {bucket} (is JetStream on? nats-server -js): {e}; {made:?}"))
}

/// Deletes this node's entries from the interest bucket (at start: what a
/// previous life left; at a clean stop: all of them).
pub(super) async fn forget_own_interest(kv: &kv::Store, node: &str) {
    let mine = format!("{node}.");
    let Ok(mut keys) = kv.keys().await else { return };
    let mut own = Vec::new();
    while let Some(Ok(key)) = keys.next().await {
        if key.starts_with(&mine) {
            own.push(key);
        }
    }
    for key in own {
        let _ = kv.delete(&key).await;
    }
}

/// Takes this node's parts out of the registration entries (at start:
/// what a previous life left; at a clean stop: all of them).
pub(super) async fn forget_own_parts(kv: &kv::Store, node: &str) {
    let Ok(mut keys) = kv.keys().await else { return };
    let mut regs = Vec::new();
    while let Some(Ok(key)) = keys.next().await {
        if key.starts_with(procs::REG_KEY) {
            regs.push(key);
        }
    }
    for key in regs {
        for _ in 0..CAS_TRIES {
            let Ok(Some(e)) = kv.entry(&key).await else { break };
            let Ok(mut reg) = serde_json::from_slice::<RegEntry>(&e.value) else { break };
            if e.operation != kv::Operation::Put || !reg.parts.iter().any(|p| p.node == node) {
                break;
            }
            reg.parts.retain(|p| p.node != node);
            let done = if reg.parts.is_empty() {
                kv.delete_expect_revision(&key, Some(e.revision)).await.is_ok()
            } else {
                let value = Bytes::from(serde_json::to_vec(&reg).expect("plain data"));
                kv.update(&key, value, e.revision).await.is_ok()
            };
            if done {
                break;
            }
        }
    }
}

/// What the writer needs to ask the other nodes for a new key's route.
pub(super) struct Ctl {
    pub client: async_nats::Client,
    pub prefix: String,
    pub node: String,
    pub incarnation: u64,
    pub acks: tokio::sync::mpsc::Sender<Ack>,
}

/// Writes this node's part of a registration by compare-and-set against
/// the other nodes' writes: `Ok(Some(revision))` written (0: the entry
/// went), `Ok(None)` refused (another live node holds it so that this
/// node cannot share it).
async fn write_part(
    kv: &kv::Store,
    ctl: &Ctl,
    part: &RegPart,
    known: &[(String, u64, bool)],
) -> Result<Option<u64>, String> {
    let key = part.bucket_key();
    let dead = |name: &str, incarnation: u64| {
        known.iter().any(|(n, i, alive)| n == name && (!alive || (*i != 0 && *i != incarnation)))
    };
    for _ in 0..CAS_TRIES {
        let read = kv.entry(&key).await.map_err(|e| e.to_string())?;
        let (entry, revision) = match read {
            Some(e) if e.operation == kv::Operation::Put => {
                let entry = serde_json::from_slice::<RegEntry>(&e.value).map_err(|e| format!("entry {key}: {e}"))?;
                (Some(entry), Some(e.revision))
            }
            Some(e) => (None, Some(e.revision)),
            None => (None, None),
        };
        // Another registration whose key hashes alike: never shared.
        if entry.as_ref().is_some_and(|e| e.realm != part.realm || e.uri != part.uri || e.policy != part.policy) {
            return Ok(None);
        }
        let written = match (procs::join(entry, &ctl.node, ctl.incarnation, part, dead), revision) {
            (procs::Join::Refused, _) => return Ok(None),
            (procs::Join::Delete, None) => return Ok(Some(0)),
            (procs::Join::Delete, Some(r)) => {
                kv.delete_expect_revision(&key, Some(r)).await.map(|()| 0).map_err(|e| e.to_string())
            }
            (procs::Join::Write(e), r) => {
                let value = Bytes::from(serde_json::to_vec(&e).expect("plain data"));
                match r {
                    Some(r) => kv.update(&key, value, r).await.map_err(|e| e.to_string()),
                    None => kv.create(&key, value).await.map_err(|e| e.to_string()),
                }
            }
        };
        match written {
            Ok(revision) => return Ok(Some(revision)),
            // Another node wrote in between: read again.
            Err(e) => log::debug!("cluster: registration entry {key}: {e}; again"),
        }
    }
    Err(format!("registration entry {key}: still contended after {CAS_TRIES} tries"))
}

/// Asks the live nodes `peers` to answer once their workers route what
/// the bucket holds at `revision` (within `SYNC_LIMIT`: a node that is
/// dying must not hold anything up); then sends `ack`.
fn sync_then(ctl: &Ctl, revision: u64, peers: &[String], ack: Ack) {
    let (client, acks) = (ctl.client.clone(), ctl.acks.clone());
    let subjects: Vec<String> = peers.iter().map(|p| wire::ctl_subject(&ctl.prefix, p)).collect();
    tokio::spawn(async move {
        // Unwritten (revision 0): nobody can route it; answer at once.
        if revision > 0 {
            let payload = Bytes::from(revision.to_be_bytes().to_vec());
            let asks = subjects.into_iter().map(|s| {
                let (client, payload) = (client.clone(), payload.clone());
                async move { tokio::time::timeout(SYNC_LIMIT, client.request(s, payload)).await }
            });
            for answer in futures_util::future::join_all(asks).await {
                if !matches!(answer, Ok(Ok(_))) {
                    log::debug!("cluster: a node did not confirm a change in time");
                }
            }
        }
        let _ = acks.send(ack).await;
    });
}

/// Writes this node's interest entries and registration parts one after
/// the other, so a key's add and remove land in the order its owner
/// decided them. A new key's barrier (a new registration's claim) is
/// answered once each live node has answered that its workers route it
/// (or has not answered within `SYNC_LIMIT`: a node that is dying must not
/// hold a subscription up), without holding up the writes behind it.
pub(super) async fn writer(kv: kv::Store, mut queue: tokio::sync::mpsc::Receiver<Write>, ctl: Ctl) {
    while let Some(write) = queue.recv().await {
        match write {
            Write::Interest { key, value, sync } => {
                let done = match value {
                    Some(v) => kv.put(&key, v).await.map_err(|e| e.to_string()),
                    None => kv.delete(&key).await.map(|()| 0).map_err(|e| e.to_string()),
                };
                let revision = match done {
                    Ok(r) => r,
                    Err(e) => {
                        log::warn!("cluster: interest entry {key} not written: {e}");
                        0
                    }
                };
                if let Some((barrier, peers)) = sync {
                    sync_then(&ctl, revision, &peers, Ack::Barrier(barrier));
                }
            }
            Write::Register { part, claim, known, live } => {
                let (refused, revision) = match write_part(&kv, &ctl, &part, &known).await {
                    Ok(Some(revision)) => (None, revision),
                    Ok(None) => (Some("wamp.error.procedure_already_exists"), 0),
                    // The cluster cannot be asked: a new registration is
                    // refused rather than made here alone (a change of a
                    // registration's part is lost: logged).
                    Err(e) => {
                        log::warn!("cluster: registration {} not written to the cluster: {e}", part.uri);
                        (Some(crate::wamp::session::CLUSTER_UNAVAILABLE), 0)
                    }
                };
                if let Some(claim) = claim {
                    sync_then(&ctl, revision, &live, Ack::Claimed(claim, refused));
                }
            }
        }
    }
}

/// What the deciding task writes by compare-and-set in the keys bucket.
pub(super) enum Cas {
    /// A conditional write (`when`), with the will it ties to its session.
    Write {
        p: std::sync::Arc<crate::router::Publication>,
        when: crate::value::Value,
        will: Option<crate::router::Body>,
    },
    /// The will of a key tied to a session of `node` in its life
    /// `incarnation`, which is over: applied if the entry still says so.
    Will { key: String, node: String, incarnation: u64 },
    /// An MQTT client ID, claimed for this node.
    Own { claim: crate::mqtt::registry::Claim },
    /// A claim that waited for `holder` (a node and life), now gone: the
    /// record it left of the session, to resume.
    Resume { claim: crate::mqtt::registry::Claim, holder: (String, u64) },
    /// This node's MQTT session of client ID `key` has a will (its
    /// publication's wire form, its delay in seconds), or no longer has.
    OwnWill { key: std::sync::Arc<str>, will: Option<(Bytes, u32)> },
    /// The will of an MQTT session of `node`'s life `incarnation`, which
    /// is over: published by the one node whose delete wins (`publish`),
    /// or dropped (`!publish`: the session was resumed here in time).
    MqttWill { bucket_key: String, node: String, incarnation: u64, publish: bool },
    /// A persistent MQTT session `holder` (a node and life, now dead) left:
    /// this node takes it in, offline, if no client claimed it meanwhile.
    Adopt { key: std::sync::Arc<str>, holder: (String, u64) },
    /// A session this node restored from its store: keep the client ID if
    /// it is still this node's (in any life), else say it is not; and if it
    /// has a will (`will`), take its entry back the same way.
    Reclaim { key: std::sync::Arc<str>, will: bool },
}

/// The deciding task's answers, for the key's owner worker.
pub(super) enum Decided {
    /// On a conditional write.
    Write(crate::router::Realm, String, CasOutcome),
    /// A dead session's will this node applied, at this revision.
    Will(crate::router::Publication, u64),
    /// The client ID is this node's; the node (and life) that held it, and
    /// the record of its session that node left (`session_key`), with the
    /// messages it had queued if its queue was read (`true`: `Resume`; a
    /// plain claim does not read it, the holder may be alive).
    Own(crate::mqtt::registry::Claim, Option<(String, u64)>, Option<crate::mqtt::registry::Left>, bool),
    /// A dead node's MQTT session's will, for this node to publish.
    MqttWill(crate::router::Publication),
    /// A dead node's persistent session is this node's now: its record
    /// (its will left out unless this node took it), or `None`: not
    /// adopted (claimed meanwhile, or no record).
    Adopted(std::sync::Arc<str>, Option<crate::mqtt::registry::Left>),
    /// A restored session's client ID is still this node's (`true`), or
    /// another node's now; and whether its will's entry is this life's now
    /// (`false`: gone, or another node's: the will is not to be sent here).
    Restored(std::sync::Arc<str>, bool, bool),
}

/// Decides conditional writes and dead sessions' wills one after the
/// other, in the order this node asked: read the key's entry, check the
/// condition on the bucket's value (or that the will is still there),
/// write with `update` at the revision read (`create` for a key never
/// written), and on a conflict read again. One winner cluster-wide: of two
/// nodes that read revision r, one `update(r)` wins.
pub(super) async fn decide(
    kv: kv::Store,
    queues: Option<Queues>,
    node: String,
    incarnation: u64,
    mut queue: tokio::sync::mpsc::Receiver<Cas>,
    done: tokio::sync::mpsc::Sender<Decided>,
) {
    while let Some(job) = queue.recv().await {
        let answer = match job {
            Cas::Write { p, when, will } => {
                let outcome = match cas(&kv, (&node, incarnation), &p, &when, will.as_ref()).await {
                    Ok(o) => o,
                    Err(e) => {
                        log::warn!("cluster: a conditional write of {} was not decided: {e}", p.topic);
                        CasOutcome::Failed
                    }
                };
                Some(Decided::Write(p.realm.clone(), p.topic.clone(), outcome))
            }
            Cas::Own { claim } => {
                let prev = match own(&kv, (&node, incarnation), &claim.key).await {
                    Ok(prev) => prev,
                    Err(e) => {
                        // The node serves it alone rather than not at all.
                        log::warn!("cluster: MQTT client ID not claimed in the cluster: {e}");
                        None
                    }
                };
                // (The holder may be alive: its queued messages are its
                // own, and not taken here.)
                let record = match &prev {
                    Some(holder) if *holder != (node.clone(), incarnation) => {
                        session_record(&kv, &claim.key, holder).await
                    }
                    _ => None,
                };
                let left = record.map(|record| crate::mqtt::registry::Left { record, queued: Vec::new() });
                Some(Decided::Own(claim, prev, left, false))
            }
            Cas::Adopt { key, holder } => {
                let record = match adopt(&kv, (&node, incarnation), &key, &holder).await {
                    Ok(r) => r,
                    Err(e) => {
                        log::warn!("cluster: a persistent MQTT session of {} was not taken in: {e}", holder.0);
                        None
                    }
                };
                let left = match record {
                    Some(record) => Some(left_by(queues.as_ref(), &key, &holder.0, record).await),
                    None => None,
                };
                Some(Decided::Adopted(key, left))
            }
            Cas::Reclaim { key, will } => {
                let me = (node.as_str(), incarnation);
                let kept = reclaim(&kv, me, &key).await.unwrap_or_else(|e| {
                    // Kept, as without a cluster.
                    log::warn!("cluster: a restored MQTT session's client ID was not checked: {e}");
                    true
                });
                let will_kept = kept
                    && will
                    && reclaim_will(&kv, me, &key).await.unwrap_or_else(|e| {
                        log::warn!("cluster: a restored MQTT session's will was not checked: {e}; kept");
                        true
                    });
                Some(Decided::Restored(key, kept, will_kept))
            }
            Cas::Resume { claim, holder } => {
                let left = match session_record(&kv, &claim.key, &holder).await {
                    Some(record) => {
                        let mut left = left_by(queues.as_ref(), &claim.key, &holder.0, record).await;
                        if claim.clean_start {
                            left.queued.clear(); // the session ends
                        }
                        Some(left)
                    }
                    None => None,
                };
                Some(Decided::Own(claim, Some(holder), left, true))
            }
            Cas::OwnWill { key, will } => {
                if let Err(e) = own_will(&kv, (&node, incarnation), &key, will).await {
                    log::warn!("cluster: an MQTT will is not in the cluster as it should be: {e}");
                }
                None
            }
            Cas::MqttWill { bucket_key, node: of, incarnation: life, publish } => {
                match take_will(&kv, &bucket_key, (&of, life)).await {
                    Ok(Some(p)) if publish => Some(Decided::MqttWill(p)),
                    Ok(_) => None,
                    Err(e) => {
                        log::warn!("cluster: the MQTT will {bucket_key} of a session of {of} was not applied: {e}");
                        None
                    }
                }
            }
            Cas::Will { key, node: of, incarnation: life } => match apply_will(&kv, incarnation, &key, &of, life).await
            {
                Ok(done) => done.map(|(p, r)| Decided::Will(p, r)),
                Err(e) => {
                    log::warn!("cluster: the will on {key} of a session of {of} was not applied: {e}");
                    None
                }
            },
        };
        if let Some(answer) = answer {
            if done.send(answer).await.is_err() {
                return;
            }
        }
    }
}

async fn cas(
    kv: &kv::Store,
    (node, incarnation): (&str, u64),
    p: &crate::router::Publication,
    when: &crate::value::Value,
    will: Option<&crate::router::Body>,
) -> Result<CasOutcome, String> {
    use crate::router::keys::{fits, value_of};
    let key = wire::retained_key(&p.realm, &p.topic);
    for _ in 0..CAS_TRIES {
        let (now, unix) = (std::time::Instant::now(), crate::router::unix_millis());
        let read = kv.entry(&key).await.map_err(|e| e.to_string())?;
        let revision = read.as_ref().map(|e| e.revision);
        let current = read
            .filter(|e| e.operation == kv::Operation::Put)
            .and_then(|e| wire::decode_retained(&e.value, now, unix).ok())
            .map(|e| e.p)
            .filter(|q| !q.expired(now) && q.realm == p.realm && q.topic == p.topic)
            .and_then(|q| value_of(&q.body));
        if !fits(when, current.as_ref()) {
            return Ok(CasOutcome::Refused);
        }
        let Some(value) = wire::encode_retained(p, incarnation, now, unix, will.map(|b| (node, b))) else {
            return Ok(CasOutcome::Refused); // expired meanwhile
        };
        let written = match revision {
            Some(r) => kv.update(&key, Bytes::from(value), r).await.map_err(|e| e.to_string()),
            None => kv.create(&key, Bytes::from(value)).await.map_err(|e| e.to_string()),
        };
        match written {
            Ok(r) => return Ok(CasOutcome::Won(r)),
            Err(e) => log::debug!("cluster: conditional write of {}: {e}; again", p.topic),
        }
    }
    Err(format!("still contended after {CAS_TRIES} tries"))
}

/// Applies the will of `key` if its entry still ties it to a session of
/// `node`'s life `life`: the will's value, untied, by `update` at the
/// revision read. `None`: nothing to apply (written meanwhile, or another
/// node applied it first).
async fn apply_will(
    kv: &kv::Store,
    incarnation: u64,
    key: &str,
    node: &str,
    life: u64,
) -> Result<Option<(crate::router::Publication, u64)>, String> {
    for _ in 0..CAS_TRIES {
        let (now, unix) = (std::time::Instant::now(), crate::router::unix_millis());
        let Some(read) = kv.entry(key).await.map_err(|e| e.to_string())? else { return Ok(None) };
        if read.operation != kv::Operation::Put {
            return Ok(None);
        }
        let entry = wire::decode_retained(&read.value, now, unix)?;
        let Some((of, will)) = entry.will.filter(|(of, _)| of == node && entry.incarnation == life) else {
            return Ok(None);
        };
        let _ = of;
        let Some(value) = wire::encode_retained(&will, incarnation, now, unix, None) else { return Ok(None) };
        match kv.update(key, Bytes::from(value), read.revision).await {
            Ok(r) => return Ok(Some((will, r))),
            Err(e) => log::debug!("cluster: a dead session's will on {key}: {e}; again"),
        }
    }
    Err(format!("still contended after {CAS_TRIES} tries"))
}

/// Who holds an MQTT client ID in the cluster (`mq=<hash>` in the keys
/// bucket): a node and its life.
#[derive(serde::Serialize, serde::Deserialize)]
struct ClientOwner {
    node: String,
    incarnation: u64,
}

/// The bucket key of a client ID (`realm\0client`).
fn client_key(key: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("mq={h:016x}")
}

/// This node's life as a client ID's holder (`mq=` value).
fn owner_value(node: &str, incarnation: u64) -> Bytes {
    Bytes::from(serde_json::to_vec(&ClientOwner { node: node.to_owned(), incarnation }).expect("plain"))
}

/// Writes a client ID's holder at the revision read (`create` for one
/// never written): of nodes writing at once, one wins.
async fn write_owner(kv: &kv::Store, bucket_key: &str, value: Bytes, revision: Option<u64>) -> Result<(), String> {
    match revision {
        Some(r) => kv.update(bucket_key, value, r).await.map(drop).map_err(|e| e.to_string()),
        None => kv.create(bucket_key, value).await.map(drop).map_err(|e| e.to_string()),
    }
}

/// Makes this node the holder of a client ID (by `update` at the revision
/// read, so two nodes claiming at once are put in one order) and returns
/// who held it before.
async fn own(kv: &kv::Store, (node, incarnation): (&str, u64), key: &str) -> Result<Option<(String, u64)>, String> {
    let bucket_key = client_key(key);
    let mine = owner_value(node, incarnation);
    for _ in 0..CAS_TRIES {
        let read = kv.entry(&bucket_key).await.map_err(|e| e.to_string())?;
        let prev = read
            .as_ref()
            .filter(|e| e.operation == kv::Operation::Put)
            .and_then(|e| serde_json::from_slice::<ClientOwner>(&e.value).ok())
            .map(|o| (o.node, o.incarnation));
        let written = write_owner(kv, &bucket_key, mine.clone(), read.map(|e| e.revision)).await;
        match written {
            Ok(()) => return Ok(prev),
            Err(e) => log::debug!("cluster: claim of an MQTT client ID: {e}; again"),
        }
    }
    Err(format!("still contended after {CAS_TRIES} tries"))
}

/// Takes in the persistent session of client ID `key` that `holder` (a
/// node and life, now over) left: the client ID becomes this node's by
/// `update` at the revision read, if it still names `holder` (a client
/// claiming it on any node meanwhile wins, and resumes it itself). The
/// session's will comes along only if this node takes its entry (`take_
/// will`); one already sent, or taken by another node, is left out of the
/// record. The record, or `None`: not this node's to take.
async fn adopt(
    kv: &kv::Store,
    (node, incarnation): (&str, u64),
    key: &str,
    holder: &(String, u64),
) -> Result<Option<Vec<u8>>, String> {
    let bucket_key = client_key(key);
    let mine = owner_value(node, incarnation);
    for _ in 0..CAS_TRIES {
        let Some(read) = kv.entry(&bucket_key).await.map_err(|e| e.to_string())? else { return Ok(None) };
        let owner = (read.operation == kv::Operation::Put)
            .then(|| serde_json::from_slice::<ClientOwner>(&read.value).ok())
            .flatten();
        if owner.is_none_or(|o| o.node != holder.0 || o.incarnation != holder.1) {
            return Ok(None);
        }
        let Some(record) = session_record(kv, key, holder).await else { return Ok(None) };
        match kv.update(&bucket_key, mine.clone(), read.revision).await {
            Ok(_) => {
                // (The client ID is this node's now: a will that does not
                // read is left to the others, the session taken in still.)
                let will = take_will(kv, &will_key(key), (&holder.0, holder.1)).await.unwrap_or_else(|e| {
                    log::debug!("cluster: the will of a session taken in: {e}");
                    None
                });
                if will.is_some() {
                    return Ok(Some(record));
                }
                let mut rec: crate::store::mqtt::SessionRecord = crate::store::mqtt::decode(&record)?;
                rec.will = None;
                rec.will_due_ms = None;
                return Ok(Some(crate::store::mqtt::encode(&rec)));
            }
            Err(e) => log::debug!("cluster: taking in a dead node's MQTT session: {e}; again"),
        }
    }
    Err(format!("still contended after {CAS_TRIES} tries"))
}

/// The queues stream: the messages queued for offline persistent MQTT
/// sessions, one subject per node and client ID
/// (`<prefix>.q.<node>.<hash>`), so that a survivor can take them with the
/// session when that node dies.
#[derive(Clone)]
pub(super) struct Queues {
    pub stream: async_nats::jetstream::stream::Stream,
    pub prefix: String,
}

impl Queues {
    /// The subject of the messages `node` queued for client ID `key`.
    pub fn subject(&self, node: &str, key: &str) -> String {
        format!("{}.q.{node}.{}", self.prefix, &client_key(key)[3..])
    }
}

/// Opens (or makes) the queues stream: file storage, at most `per_subject`
/// messages a subject (the oldest go first, as in a session's queue).
pub(super) async fn open_queues(
    js: &async_nats::jetstream::Context,
    prefix: &str,
    per_subject: usize,
) -> Result<Queues, String> {
    use async_nats::jetstream::stream;
    let config = stream::Config {
        name: format!("{prefix}-queues"),
        subjects: vec![format!("{prefix}.q.>")],
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::Old,
        max_messages_per_subject: per_subject as i64,
        allow_direct: true,
        ..Default::default()
    };
    let stream = js.get_or_create_stream(config).await.map_err(|e| e.to_string())?;
    Ok(Queues { stream, prefix: prefix.to_owned() })
}

/// What the queues stream's writer does, in order.
pub(super) enum QueueOp {
    Write { subject: String, payload: Bytes },
    Purge { subject: String },
}

/// Publishes acknowledged by JetStream that the writer waits for at most
/// before it waits for the oldest.
const QUEUE_ACKS: usize = 1024;

/// Writes queued messages to the queues stream and purges subjects, in the
/// order asked: a purge waits for the acknowledgements of the writes
/// before it, so it never overtakes one (the server orders a stream's
/// writes and its purge requests only once the writes are stored).
pub(super) async fn queue_writer(
    js: async_nats::jetstream::Context,
    queues: Queues,
    mut ops: tokio::sync::mpsc::Receiver<QueueOp>,
) {
    let mut acks = std::collections::VecDeque::new();
    while let Some(op) = ops.recv().await {
        match op {
            QueueOp::Write { subject, payload } => {
                match js.publish(subject, payload).await {
                    Ok(ack) => acks.push_back(ack),
                    Err(e) => log::debug!("cluster: a queued MQTT message was not kept: {e}"),
                }
                if acks.len() > QUEUE_ACKS {
                    if let Some(ack) = acks.pop_front() {
                        if let Err(e) = ack.await {
                            log::debug!("cluster: a queued MQTT message was not kept: {e}");
                        }
                    }
                }
            }
            QueueOp::Purge { subject } => {
                for ack in acks.drain(..) {
                    if let Err(e) = ack.await {
                        log::debug!("cluster: a queued MQTT message was not kept: {e}");
                    }
                }
                if let Err(e) = queues.stream.purge().filter(subject.as_str()).await {
                    log::debug!("cluster: queued MQTT messages were not cleared: {e}");
                }
            }
        }
    }
}

/// The most messages read back for one session (its queue's bound is
/// smaller; this only stops a runaway subject).
const MAX_TAKEN: usize = 1 << 16;

/// The session `holder` (a dead node) left of client ID `key`: its record
/// and the messages it had queued for it, read in order and then purged.
async fn left_by(queues: Option<&Queues>, key: &str, holder: &str, record: Vec<u8>) -> crate::mqtt::registry::Left {
    let mut queued = Vec::new();
    let Some(q) = queues else { return crate::mqtt::registry::Left { record, queued } };
    let subject = q.subject(holder, key);
    let mut next = 1;
    while queued.len() < MAX_TAKEN {
        let Ok(m) = q.stream.direct_get_next_for_subject(subject.as_str(), Some(next)).await else { break };
        next = m.sequence + 1;
        match rmp_serde::from_slice::<(u64, Bytes)>(&m.payload) {
            Ok((seq, message)) => queued.push((seq, message.to_vec())),
            Err(e) => log::debug!("cluster: a queued MQTT message does not read: {e}"),
        }
    }
    if !queued.is_empty() {
        if let Err(e) = q.stream.purge().filter(subject.as_str()).await {
            log::warn!("cluster: the messages of a session taken over from {holder} stay in the queues stream: {e}");
        }
    }
    crate::mqtt::registry::Left { record, queued }
}

/// A session restored from this node's store: its client ID becomes this
/// life's if no entry names another node (an earlier life of this node
/// held it when it stopped); `false` if another node holds it now.
async fn reclaim(kv: &kv::Store, (node, incarnation): (&str, u64), key: &str) -> Result<bool, String> {
    let bucket_key = client_key(key);
    let mine = owner_value(node, incarnation);
    for _ in 0..CAS_TRIES {
        let read = kv.entry(&bucket_key).await.map_err(|e| e.to_string())?;
        let owner = read
            .as_ref()
            .filter(|e| e.operation == kv::Operation::Put)
            .and_then(|e| serde_json::from_slice::<ClientOwner>(&e.value).ok());
        if owner.as_ref().is_some_and(|o| o.node != node) {
            return Ok(false);
        }
        if owner.as_ref().is_some_and(|o| o.incarnation == incarnation) {
            return Ok(true);
        }
        let written = write_owner(kv, &bucket_key, mine.clone(), read.map(|e| e.revision)).await;
        match written {
            Ok(()) => return Ok(true),
            Err(e) => log::debug!("cluster: reclaiming a restored MQTT client ID: {e}; again"),
        }
    }
    Err(format!("still contended after {CAS_TRIES} tries"))
}

/// A restored session's will entry, taken back from an earlier life of
/// this node (rewritten as this life's at the revision read, so a survivor
/// that takes the entry of the earlier life at once finds it changed):
/// `false` if it is gone (a survivor took it to send it, or a client
/// resumed the session elsewhere and took it out) or is another node's.
/// A will whose entry was never written (the node died within its write)
/// is not sent either: at most once.
async fn reclaim_will(kv: &kv::Store, (node, incarnation): (&str, u64), key: &str) -> Result<bool, String> {
    let bucket_key = will_key(key);
    for _ in 0..CAS_TRIES {
        let Some(read) = kv.entry(&bucket_key).await.map_err(|e| e.to_string())? else { return Ok(false) };
        if read.operation != kv::Operation::Put {
            return Ok(false);
        }
        let mut will: SharedWill = rmp_serde::from_slice(&read.value).map_err(|e| e.to_string())?;
        if will.node != node {
            return Ok(false);
        }
        if will.incarnation == incarnation {
            return Ok(true);
        }
        will.incarnation = incarnation;
        let value = rmp_serde::to_vec(&will).map_err(|e| e.to_string())?;
        match kv.update(&bucket_key, Bytes::from(value), read.revision).await {
            Ok(_) => return Ok(true),
            Err(e) => log::debug!("cluster: taking back a restored MQTT will: {e}; again"),
        }
    }
    Err(format!("still contended after {CAS_TRIES} tries"))
}

/// The bucket key of a persistent MQTT session's record.
pub(super) fn session_key(key: &str) -> String {
    format!("ms={}", &client_key(key)[3..])
}

/// A persistent session's record as its node wrote it: (node, its
/// incarnation, the record; empty: the session ended).
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct SharedSession {
    pub node: String,
    pub incarnation: u64,
    pub record: Bytes,
    /// The client ID (`realm\0client`), for a node that takes the session
    /// in when its node dies.
    #[serde(default)]
    pub key: String,
}

/// The bucket key of an MQTT session's will.
pub(super) fn will_key(key: &str) -> String {
    format!("mw={}", &client_key(key)[3..])
}

/// An MQTT session's will as its node wrote it (`mw=<hash>`): published by
/// a survivor when that node's life is over and the session is not resumed
/// within `delay` seconds.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct SharedWill {
    pub node: String,
    pub incarnation: u64,
    pub delay: u32,
    /// The will's publication (`wire::encode`).
    pub p: Bytes,
}

/// Writes (or takes out, if it is still this node's) the will entry of
/// this node's session of client ID `key`.
async fn own_will(kv: &kv::Store, me: (&str, u64), key: &str, will: Option<(Bytes, u32)>) -> Result<(), String> {
    let bucket_key = will_key(key);
    match will {
        Some((p, delay)) => {
            let entry = SharedWill { node: me.0.to_owned(), incarnation: me.1, delay, p };
            let value = rmp_serde::to_vec(&entry).map_err(|e| e.to_string())?;
            kv.put(&bucket_key, Bytes::from(value)).await.map(drop).map_err(|e| e.to_string())
        }
        None => take_will(kv, &bucket_key, me).await.map(drop),
    }
}

/// Deletes a will entry if it is still that of a session of `holder` (a
/// node and life), at the revision read: of nodes that try at once, one
/// gets the will. `None`: it was not (any more).
async fn take_will(
    kv: &kv::Store,
    bucket_key: &str,
    holder: (&str, u64),
) -> Result<Option<crate::router::Publication>, String> {
    let Some(read) = kv.entry(bucket_key).await.map_err(|e| e.to_string())? else { return Ok(None) };
    if read.operation != kv::Operation::Put {
        return Ok(None);
    }
    let will: SharedWill = rmp_serde::from_slice(&read.value).map_err(|e| e.to_string())?;
    if (will.node.as_str(), will.incarnation) != holder {
        return Ok(None);
    }
    if kv.delete_expect_revision(bucket_key, Some(read.revision)).await.is_err() {
        return Ok(None); // another node took it first, or it changed
    }
    wire::decode(&will.p, std::time::Instant::now()).map(|(_, p)| Some(p))
}

/// The record `holder` left of the session of client ID `key`, if any.
async fn session_record(kv: &kv::Store, key: &str, holder: &(String, u64)) -> Option<Vec<u8>> {
    let e = kv.entry(session_key(key)).await.ok()??;
    if e.operation != kv::Operation::Put {
        return None;
    }
    let s: SharedSession = rmp_serde::from_slice(&e.value).ok()?;
    (s.node == holder.0 && s.incarnation == holder.1 && !s.record.is_empty()).then(|| s.record.to_vec())
}
