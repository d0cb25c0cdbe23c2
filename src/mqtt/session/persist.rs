//! Persistent sessions in the store (the format is `store::mqtt`): what a
//! session that outlives its connection writes, when, and how it comes
//! back at start.
//!
//! A session is durable when the store is on, its expiry is not 0, and it
//! is this worker's copy (one handed to another worker writes nothing: the
//! new copy writes itself whole, `snapshot`, and deletes the old
//! incarnation's keys). What it writes:
//! - its record (subscriptions, will, expiry, whether connected) when it
//!   opens, when its subscriptions change, when it goes offline;
//! - each QoS 1/2 message toward the client when the session takes it
//!   (queued or in flight), again when it goes in flight or is released
//!   (PUBREC), deleted when acknowledged or dropped;
//! - each QoS 2 packet ID from the client until its PUBREL.
//!
//! Under `--durability sync` a publisher's PUBACK / PUBREC waits until
//! every worker it was routed to has what it queued for persistent
//! sessions on disk (`Publication::durable_ack`, answered with a store
//! `Barrier` after the writes, see `Shard::deliver`), and a QoS 2 packet
//! ID is on disk before its PUBREC.

use super::*;
use crate::mqtt::codec::PubProps;
use crate::store::mqtt::{self as sm, Loaded, MessageRecord, PropsRecord, SessionRecord, SubRecord, WillRecord};
use crate::store::record;
use crate::store::thread::StoreReq;
use crate::store::Write;
use crate::worker::core::Subscribed;

/// Whether this session's state goes to the store (messages, QoS 2 IDs).
pub(super) fn durable(w: &Shard, slot: usize) -> bool {
    let s = &w.mqtt.sessions[slot];
    w.store.is_some() && s.expiry > 0 && s.moving.is_none()
}

/// Whether its record does: a durable session, or one that ends with its
/// connection but has a will, so that a crash does not lose the will (the
/// next start applies it).
fn keeps_record(w: &Shard, slot: usize) -> bool {
    let s = &w.mqtt.sessions[slot];
    w.store.is_some() && s.moving.is_none() && (s.expiry > 0 || s.will.is_some())
}

fn write(w: &mut Shard, write: Write, ack: Option<(u16, u64)>) {
    if let Some(link) = &mut w.store {
        link.send(StoreReq { write, ack });
    }
}

fn client_of(key: &str) -> &str {
    key.split_once('\0').map_or(key, |(_, c)| c)
}

fn version_number(v: Version) -> u8 {
    match v {
        Version::V3 => 3,
        Version::V4 => 4,
        Version::V5 => 5,
    }
}

fn props_record(p: &PubProps) -> PropsRecord {
    PropsRecord {
        payload_format: p.payload_format,
        expiry: p.expiry,
        content_type: p.content_type.clone(),
        response_topic: p.response_topic.clone(),
        correlation: p.correlation.as_ref().map(|c| c.to_vec()),
        user: p.user.clone(),
    }
}

fn props_of(p: PropsRecord) -> PubProps {
    PubProps {
        payload_format: p.payload_format,
        expiry: p.expiry,
        content_type: p.content_type,
        response_topic: p.response_topic,
        correlation: p.correlation.map(Into::into),
        user: p.user,
    }
}

/// Milliseconds since the epoch of a deadline on this worker's clock.
fn wall_ms(at: Instant, now: Instant) -> u64 {
    crate::router::unix_millis() + at.saturating_duration_since(now).as_millis() as u64
}

/// Writes the session's record.
pub(super) fn save(w: &mut Shard, slot: usize) {
    save_acked(w, slot, None);
}

/// `save`; `ack`: tell this ticket once it is on disk (answered at once
/// if nothing is written).
pub(super) fn save_acked(w: &mut Shard, slot: usize, ack: Option<(u16, u64)>) {
    share(w, slot, false);
    if !keeps_record(w, slot) {
        if w.mqtt.sessions[slot].stored {
            // Its will is gone and it ends with its connection: nothing to keep.
            forget(w, slot);
            w.mqtt.sessions[slot].stored = false;
        }
        if let Some((worker, ticket)) = ack {
            w.peers.send(worker, ShardMsg::Stored { tickets: vec![ticket], error: None });
        }
        return;
    }
    let now = w.now;
    let s = &mut w.mqtt.sessions[slot];
    s.stored = true;
    if s.conn.is_some() {
        s.offline_since_ms = None;
    } else if s.offline_since_ms.is_none() {
        s.offline_since_ms = Some(crate::router::unix_millis());
    }
    let rec = record_of(s, now);
    let key = sm::session_key(&s.realm, client_of(&s.key), s.id);
    write(w, Write::Put { key, value: sm::encode(&rec) }, ack);
}

fn record_of(s: &Session, now: Instant) -> SessionRecord {
    SessionRecord {
        id: s.id,
        created_ms: s.created_ms,
        version: version_number(s.version),
        expiry: s.expiry,
        subs: s
            .subs
            .iter()
            .map(|x| SubRecord {
                filter: x.filter.clone(),
                qos: x.opts.qos,
                no_local: x.opts.no_local,
                retain_as_published: x.opts.retain_as_published,
                retain_handling: x.opts.retain_handling,
                id: x.id,
            })
            .collect(),
        will: s.will.as_deref().map(|v| WillRecord {
            topic: v.topic.clone(),
            payload: v.payload.to_vec(),
            qos: v.qos,
            retain: v.retain,
            delay: v.delay,
            props: props_record(&v.props),
        }),
        offline_since_ms: s.offline_since_ms,
        will_due_ms: s.will_at.map(|t| wall_ms(t, now)),
        next_pkid: s.next_pkid,
        authid: s.who.authid.clone(),
        authrole: s.who.authrole.to_string(),
    }
}

/// In a cluster, a persistent session's record (subscriptions, expiry,
/// identity) also goes to the keys bucket, so that another node can
/// resume it if this one dies; one that ends with its connection, or
/// ends, takes it out.
fn share(w: &mut Shard, slot: usize, ends: bool) {
    let Some(link) = &mut w.cluster else { return };
    let s = &mut w.mqtt.sessions[slot];
    if s.reclaiming {
        return; // not known to be this node's yet (`restored`)
    }
    // Its queued messages in the queues stream are kept while it is
    // offline here (`share_queue`), no longer once it has a connection,
    // moves or ends.
    if s.queue_shared && (ends || s.conn.is_some() || s.moving.is_some()) {
        s.queue_shared = false;
        link.send(crate::cluster::ClusterReq::MqttQueueClear { key: s.key.clone() });
    }
    if s.moving.is_some() {
        return; // the new copy writes it
    }
    let keep = s.expiry > 0 && !ends;
    if !keep && !s.shared {
        return;
    }
    s.shared = keep;
    let record = keep.then(|| sm::encode(&record_of(s, w.now)));
    link.send(crate::cluster::ClusterReq::MqttSession { key: s.key.clone(), record });
}

/// In a cluster, an offline persistent session's messages (in flight when
/// its connection went, and queued) go to the queues stream, so that the
/// survivor that takes the session in when this node dies has them too
/// (`cluster::bucket::left_by`). Called when it goes offline (or is taken
/// in); `share_queued` adds each one queued after.
pub(super) fn share_queue(w: &mut Shard, slot: usize) {
    let s = &w.mqtt.sessions[slot];
    if w.cluster.is_none() || s.expiry == 0 || s.conn.is_some() || s.moving.is_some() {
        return;
    }
    let now = w.now;
    let s = &mut w.mqtt.sessions[slot];
    let mut messages = Vec::with_capacity(s.inflight.len() + s.queue.len());
    for f in s.inflight.iter_mut() {
        if f.out.seq == 0 {
            s.next_seq += 1;
            f.out.seq = s.next_seq;
        }
        messages.push((f.out.seq, sm::encode(&message_record(&f.out, f.pkid, f.released, now))));
    }
    for out in s.queue.iter_mut() {
        if out.seq == 0 {
            s.next_seq += 1;
            out.seq = s.next_seq;
        }
        messages.push((out.seq, sm::encode(&message_record(out, 0, false, now))));
    }
    s.queue_shared = true;
    if messages.is_empty() {
        return;
    }
    let key = s.key.clone();
    if let Some(link) = &mut w.cluster {
        link.send(crate::cluster::ClusterReq::MqttQueued { key, messages });
    }
}

/// One more message queued for an offline persistent session (`out` has
/// its sequence from `save_out`, or gets one here).
pub(super) fn share_queued(w: &mut Shard, slot: usize, out: &mut Outgoing) {
    let s = &mut w.mqtt.sessions[slot];
    if w.cluster.is_none() || !s.queue_shared || s.conn.is_some() {
        return;
    }
    if out.seq == 0 {
        s.next_seq += 1;
        out.seq = s.next_seq;
    }
    let messages = vec![(out.seq, sm::encode(&message_record(out, 0, false, w.now)))];
    let key = s.key.clone();
    if let Some(link) = &mut w.cluster {
        link.send(crate::cluster::ClusterReq::MqttQueued { key, messages });
    }
}

/// A stored subscription as the session holds it (not granted yet);
/// `None` for a filter that no longer parses.
fn sub_of(realm: &Realm, r: SubRecord) -> Option<Sub> {
    let parsed = parse_filter(&r.filter).ok()?;
    let share = parsed.share.map(Arc::from);
    let key = SubKey { realm: realm.clone(), topic: parsed.topic, policy: parsed.policy, share, filter: None };
    let opts = SubFilter {
        filter: r.filter.clone(),
        qos: r.qos,
        no_local: r.no_local,
        retain_as_published: r.retain_as_published,
        retain_handling: r.retain_handling,
    };
    Some(Sub { filter: r.filter, key, subscription: 0, opts, id: r.id })
}

/// A stored message toward the client as the session holds it; `None`
/// for one that does not read (or has expired).
fn outgoing_of(m: MessageRecord, seq: u64, now: Instant) -> Option<Outgoing> {
    let Ok(Some(d)) = record::decode(&m.publication, now) else { return None };
    let mut p = d.p;
    p.retain = m.retain;
    Some(Outgoing { msg: Arc::new(p), qos: m.qos, retain: m.retain, sub_ids: m.sub_ids, seq })
}

fn message_record(out: &Outgoing, pkid: u16, released: bool, now: Instant) -> MessageRecord {
    MessageRecord {
        publication: record::encode(&out.msg, None, now),
        qos: out.qos,
        retain: out.retain,
        sub_ids: out.sub_ids.clone(),
        pkid,
        released,
    }
}

/// A session to resume from what a dead node left in the cluster
/// (`share`, `share_queue`): its subscriptions, expiry and next packet
/// ID, and the messages it had queued while offline. `None` if the record
/// does not read.
pub(super) fn state_from_record(w: &Shard, key: &str, left: &crate::mqtt::registry::Left) -> Option<SessionState> {
    let rec: SessionRecord = sm::decode(&left.record).ok()?;
    let (realm, _) = key.split_once('\0')?;
    let realm: Realm = Arc::from(realm);
    let version = match rec.version {
        3 => Version::V3,
        5 => Version::V5,
        _ => Version::V4,
    };
    let subs = rec.subs.into_iter().filter_map(|r| sub_of(&realm, r)).collect();
    let (mut inflight, mut queue) = (Vec::new(), Vec::new());
    for (seq, bytes) in &left.queued {
        let Ok(m) = sm::decode::<MessageRecord>(bytes) else { continue };
        let (pkid, released) = (m.pkid, m.released);
        let Some(out) = outgoing_of(m, *seq, w.now) else { continue };
        match pkid {
            0 => queue.push(out),
            pkid => inflight.push(InFlight { pkid, out, released }),
        }
    }
    Some(SessionState {
        from: (crate::cluster::REMOTE, rec.id),
        realm,
        version,
        expiry: rec.expiry,
        subs,
        inflight,
        queue,
        qos2_in: Vec::new(),
        next_pkid: rec.next_pkid,
    })
}

/// Writes one message toward the client (`pkid` 0: queued). Gives it its
/// sequence number first if it has none.
pub(super) fn save_out(w: &mut Shard, slot: usize, out: &mut Outgoing, pkid: u16, released: bool) {
    if !durable(w, slot) {
        return;
    }
    let now = w.now;
    let s = &mut w.mqtt.sessions[slot];
    if out.seq == 0 {
        s.next_seq += 1;
        out.seq = s.next_seq;
    }
    let rec = message_record(out, pkid, released, now);
    let key = sm::message_key(&s.realm, client_of(&s.key), s.id, out.seq);
    write(w, Write::Put { key, value: sm::encode(&rec) }, None);
    w.delivery_stored = true;
}

/// A message toward the client is done (acknowledged, or dropped).
pub(super) fn forget_out(w: &mut Shard, slot: usize, seq: u64) {
    if seq == 0 || !durable(w, slot) {
        return;
    }
    let s = &w.mqtt.sessions[slot];
    let key = sm::message_key(&s.realm, client_of(&s.key), s.id, seq);
    write(w, Write::Delete { key }, None);
}

/// A QoS 2 packet ID from the client, until its PUBREL; `ack`: tell this
/// ticket when it is on disk.
pub(super) fn save_qos2(w: &mut Shard, slot: usize, pkid: u16, ack: Option<(u16, u64)>) {
    let s = &w.mqtt.sessions[slot];
    let key = sm::qos2_key(&s.realm, client_of(&s.key), s.id, pkid);
    write(w, Write::Put { key, value: Vec::new() }, ack);
}

pub(super) fn forget_qos2(w: &mut Shard, slot: usize, pkid: u16) {
    if !durable(w, slot) {
        return;
    }
    let s = &w.mqtt.sessions[slot];
    let key = sm::qos2_key(&s.realm, client_of(&s.key), s.id, pkid);
    write(w, Write::Delete { key }, None);
}

/// Deletes an incarnation's keys.
fn forget_incarnation(w: &mut Shard, realm: &str, client: &str, id: u64) {
    write(w, Write::Delete { key: sm::session_key(realm, client, id) }, None);
    write(w, Write::DeletePrefix { prefix: sm::incarnation_prefix(sm::MESSAGE, realm, client, id) }, None);
    write(w, Write::DeletePrefix { prefix: sm::incarnation_prefix(sm::QOS2_IN, realm, client, id) }, None);
}

/// The session ends: its keys go.
pub(super) fn forget(w: &mut Shard, slot: usize) {
    share(w, slot, true);
    let s = &w.mqtt.sessions[slot];
    if !s.stored || s.moving.is_some() {
        return;
    }
    let (realm, key, id) = (s.realm.clone(), s.key.clone(), s.id);
    forget_incarnation(w, &realm, client_of(&key), id);
}

/// Writes the whole session (a new incarnation: opened, or handed over
/// from `old`, whose keys go).
pub(super) fn snapshot(w: &mut Shard, slot: usize, old: Option<u64>) {
    save(w, slot);
    if !durable(w, slot) {
        return;
    }
    let mut inflight = std::mem::take(&mut w.mqtt.sessions[slot].inflight);
    for f in inflight.iter_mut() {
        f.out.seq = 0;
        save_out(w, slot, &mut f.out, f.pkid, f.released);
    }
    let mut queue = std::mem::take(&mut w.mqtt.sessions[slot].queue);
    for out in queue.iter_mut() {
        out.seq = 0;
        save_out(w, slot, out, 0, false);
    }
    let s = &mut w.mqtt.sessions[slot];
    s.inflight = inflight;
    s.queue = queue;
    for pkid in s.qos2_in.clone() {
        save_qos2(w, slot, pkid, None);
    }
    if let Some(old) = old {
        let s = &w.mqtt.sessions[slot];
        let (realm, key) = (s.realm.clone(), s.key.clone());
        forget_incarnation(w, &realm, client_of(&key), old);
    }
}

/// The sessions read back from the store for this worker (the owner of
/// their client IDs): each is made offline again, as at the end of its
/// last connection, with its subscriptions routed before the listeners
/// open (`MqttState::starting` counts those not granted yet). A session
/// that was connected when the router stopped went offline then: its will
/// follows its delay, and its expiry runs from now. Deadlines of one that
/// was offline continue from the wall clock.
pub fn restore_at_start(w: &mut Shard, sessions: Vec<Loaded>) {
    for l in sessions {
        // In a cluster, another node may have taken the session while this
        // one was down, or sent its will: asked (`ClusterReq::MqttRestored`,
        // answered in `restored`); until then its record is not shared, and
        // its will and expiry wait.
        let reclaim = w.cluster.is_some() && (l.record.expiry > 0 || l.record.will.is_some());
        let slot = restore_one(w, l, reclaim);
        if reclaim {
            let s = &w.mqtt.sessions[slot];
            let (key, will) = (s.key.clone(), s.will.is_some());
            if let Some(link) = &mut w.cluster {
                link.send(crate::cluster::ClusterReq::MqttRestored { key, will });
            }
        }
    }
    started_if_ready(w);
}

/// The cluster's answer for a session restored from the store: still
/// this node's (`kept`: its record is shared from now on), or another
/// node's now (it took the session in, or its client resumed it there,
/// while this node was down): then this copy is stale and goes, silently
/// (its will and record are the other node's), its keys out of the store.
/// One that a client has connected to meanwhile stays: that client chose
/// it. A kept one's will is sent here only if its entry in the cluster is
/// this life's now (`will_kept`): else a survivor sent it (or a client
/// that resumed the session elsewhere took it out), and one that ends with
/// its connection (expiry 0), kept only for its will, goes too.
pub fn restored(w: &mut Shard, key: &str, kept: bool, will_kept: bool) {
    // (Restored on the client ID's owner worker: this one.)
    let Some((_, id)) = w.mqtt.registry.holder(key).filter(|&(worker, _)| worker == w.id) else { return };
    let Some(&slot) = w.mqtt.by_id.get(&id) else { return };
    let s = &mut w.mqtt.sessions[slot];
    if !s.reclaiming {
        return;
    }
    s.reclaiming = false;
    let offline = s.conn.is_none() && s.moving.is_none() && s.restoring.is_none();
    if kept && offline && !will_kept && s.will.is_some() {
        log::info!("worker {}: the will of the MQTT session of {key:?} was the cluster's to send; not sent here", w.id);
        s.will = None;
        s.will_at = None;
        if s.expiry == 0 {
            return drop_restored(w, slot);
        }
    }
    if kept || !offline {
        save(w, slot);
        super::sync_will(w, slot);
        // Offline (as restored): its queue goes to the queues stream anew
        // (what its earlier life wrote there is cleared first, in order).
        let s = &w.mqtt.sessions[slot];
        if let Some(link) = w.cluster.as_mut().filter(|_| s.expiry > 0) {
            link.send(crate::cluster::ClusterReq::MqttQueueClear { key: s.key.clone() });
        }
        share_queue(w, slot);
        return;
    }
    log::info!("worker {}: the MQTT session of {key:?} is another node's now; the copy restored here goes", w.id);
    drop_restored(w, slot);
}

/// A restored session that is not this node's to keep goes, silently:
/// nothing shared, no will, its keys out of the store.
fn drop_restored(w: &mut Shard, slot: usize) {
    let s = &mut w.mqtt.sessions[slot];
    s.shared = false;
    s.queue_shared = false;
    s.will = None;
    s.will_at = None;
    // Its subscriptions not routed yet no longer hold the start back.
    let pending = s.subs.iter().filter(|x| x.subscription == 0).count();
    w.mqtt.starting = w.mqtt.starting.saturating_sub(pending);
    super::end_session(w, slot, true);
    started_if_ready(w);
}

/// In a cluster: a persistent session of client ID `key` that a dead node
/// left is this node's now (`cluster::bucket::Cas::Adopt` won the client
/// ID). It is made here as a session restored at start is: offline, its
/// subscriptions routed again (what is published for it from now on
/// waits in its queue), its expiry running from when its connection went
/// (from now, if it was connected when its node died), and its will, if
/// the record still has it, following its delay and shared as this
/// node's. A session the client ID already has here is left alone.
pub fn adopt(w: &mut Shard, key: Arc<str>, left: crate::mqtt::registry::Left) {
    if w.mqtt.registry.holds(&key) {
        return;
    }
    let Some((realm, client)) = key.split_once('\0') else { return };
    let record: SessionRecord = match sm::decode(&left.record) {
        Ok(r) => r,
        Err(e) => return log::warn!("worker {}: a dead node's MQTT session does not read: {e}", w.id),
    };
    let messages =
        left.queued.iter().filter_map(|(seq, m)| Some((*seq, sm::decode::<MessageRecord>(m).ok()?))).collect();
    let l = Loaded { realm: realm.to_owned(), client: client.to_owned(), record, messages, qos2_in: Vec::new() };
    let slot = restore_one(w, l, false);
    super::sync_will(w, slot);
    // What it had queued is this node's to keep now.
    share_queue(w, slot);
    log::debug!("worker {}: took in the MQTT session of client {client:?} in realm {realm} from a dead node", w.id);
}

/// One session read back from the store (or taken in from a dead node),
/// made offline on this worker; its slot.
fn restore_one(w: &mut Shard, l: Loaded, reclaiming: bool) -> usize {
    let now = w.now;
    let unix = crate::router::unix_millis();
    let rec = l.record;
    let version = match rec.version {
        3 => Version::V3,
        5 => Version::V5,
        _ => Version::V4,
    };
    let realm = w.shared_name(&l.realm);
    let key: Arc<str> = Arc::from(format!("{}\0{}", l.realm, l.client));
    let slot = new_session(w, rec.id, key.clone(), realm.clone(), version, rec.expiry, u16::MAX, 0);
    w.mqtt.registry.restore(key, w.id, rec.id);
    let rules = w.cfg.realm(&l.realm).and_then(|r| r.auth.rules_of(&rec.authrole));
    let authz_key = w.shared_name(&format!("{}\0{}", l.realm, rec.authrole));
    let authrole = w.shared_name(&rec.authrole);
    let s = &mut w.mqtt.sessions[slot];
    s.reclaiming = reclaiming;
    s.who = MqttIdentity { authid: rec.authid.clone(), authrole, rules, authz_key };
    s.created_ms = rec.created_ms;
    s.stored = true;
    s.next_pkid = rec.next_pkid;
    s.qos2_in = l.qos2_in;
    let since = rec.offline_since_ms.unwrap_or(unix);
    s.offline_since_ms = Some(since);
    let left_ms = |due_ms: u64| Duration::from_millis(due_ms.saturating_sub(unix));
    s.expires_at = (rec.expiry != u32::MAX).then(|| now + left_ms(since.saturating_add(u64::from(rec.expiry) * 1000)));
    if let Some(v) = rec.will {
        let will = Will {
            topic: v.topic,
            payload: v.payload.into(),
            qos: v.qos,
            retain: v.retain,
            delay: v.delay,
            props: props_of(v.props),
        };
        // Connected at the stop: the connection ended then, and the
        // will follows its delay from now. Offline: when it was due.
        // (An offline session with no due will has none left.)
        let at = match (rec.offline_since_ms, rec.will_due_ms) {
            (None, _) => Some(now + Duration::from_secs(u64::from(will.delay.min(rec.expiry)))),
            (Some(_), Some(due)) => Some(now + left_ms(due)),
            (Some(_), None) => None,
        };
        if at.is_some() {
            s.will_at = at;
            s.will = Some(Box::new(will));
        }
    }
    for (seq, m) in l.messages {
        let (pkid, released) = (m.pkid, m.released);
        let Some(out) = outgoing_of(m, seq, now) else { continue };
        let s = &mut w.mqtt.sessions[slot];
        s.next_seq = s.next_seq.max(seq);
        if pkid == 0 {
            s.queue.push_back(out);
        } else {
            s.inflight.push_back(InFlight { pkid, out, released });
        }
    }
    for r in rec.subs {
        let Some(sub) = sub_of(&realm, r) else { continue };
        let sub_key = sub.key.clone();
        w.mqtt.sessions[slot].subs.push(sub);
        match w.subscribe(Member::Mqtt(slot), rec.id, sub_key.clone(), RESTORE, Instant::now()) {
            Subscribed::Now(id) => {
                set_subscription(w, slot, &sub_key, id);
            }
            Subscribed::Later => w.mqtt.starting += 1,
        }
    }
    let s = &w.mqtt.sessions[slot];
    if s.expires_at.is_some() || s.will_at.is_some() {
        w.mqtt.offline.push(slot);
    }
    save(w, slot);
    slot
}

/// Tells the server this worker's restored subscriptions are all routed.
pub(super) fn started_if_ready(w: &mut Shard) {
    if w.mqtt.starting == 0 {
        if let Some(tx) = w.ready.take() {
            let _ = tx.send(w.id);
        }
    }
}
