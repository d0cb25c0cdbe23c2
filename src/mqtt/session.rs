//! MQTT sessions: turns decoded packets into core operations and core
//! deliveries into PUBLISH packets. Owns the per-connection state
//! (`MqttConn`: version, keep-alive, inbound topic aliases) and the
//! per-session state (`Session`: subscriptions, QoS 1/2 flows in both
//! directions, the queue of a session that is offline or whose window is
//! full, the will). A session lives in the worker's `MqttState::sessions`
//! slab, not in a connection, so it outlives its connection when it is
//! persistent.
//!
//! Bounds: `max_inflight` (and the client's receive maximum) QoS 1/2
//! messages unacknowledged toward the client; `max_queued_messages` queued
//! behind them (then dropped and counted); `receive_maximum` QoS 2 messages
//! from the client awaiting PUBREL (then DISCONNECT 0x93); `topic_alias_maximum`
//! inbound aliases; QoS 0 messages go through the connection's bounded
//! outbound queue like WAMP events (dropped and counted when it is full).
//!
//! This file holds the state, the input loop (bytes -> packets -> the
//! handlers), and a session's end (close, expiry, wills, keep-alive). The
//! handlers live beside it, along the protocol's own seams:
//! - `session/connect.rs`: CONNECT, the registry claim, take-over and the
//!   hand-over of a session between workers;
//! - `session/publish.rs`: PUBLISH from the client and its QoS 2 flow;
//! - `session/deliver.rs`: delivery to the client, the in-flight window,
//!   the queue, the client's acknowledgements;
//! - `session/subscribe.rs`: SUBSCRIBE, UNSUBSCRIBE, retained values.
//!
//! They are child modules so they share this file's private state and
//! helpers (`send`, `fail`, `mqtt`, ...) without widening them to the crate.

use super::codec::{self, prop, reason, Connect, Decoded, Packet, Props, PubOut, SubFilter, Version, Will};
use super::payload;
use super::registry::{Claim, Msg};
use super::topic::{parse_filter, swap, swap_owned};
use crate::conn::{Buf, Proto};
use crate::metrics::{CloseReason, Op};
use crate::payload::Payload;
use crate::router::owner::Outbox;
use crate::router::{owner_of, Body, Member, Publication, Realm, RetainedReply, SessionRef, ShardMsg, SubKey};
use crate::worker::core::Subscribed;
use crate::worker::Shard;
use crate::ws::frame::{self, Opcode};
use ahash::AHashMap;
use bytes::Bytes;
use rand::Rng;
use slab::Slab;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod authn;
mod authorize;
mod connect;
mod deliver;
mod persist;
mod publish;
mod subscribe;

use connect::*;
use deliver::*;
use publish::*;
use subscribe::*;

pub use authn::{on_authenticator_answer, MqttAsking};
pub use authorize::{on_authorizer_answer, MqttParked};
pub use connect::{on_node_lost, on_registry, read_first};
pub use deliver::{deliver, deliver_op};
pub use persist::restore_at_start;
pub use publish::on_stored;
pub use subscribe::suback_stored;
pub use subscribe::{on_retained, subscribed};

/// A core subscribe made to restore a moved session (no SUBACK to send).
const RESTORE: u64 = 1 << 40;
/// How often keep-alives are checked.
const KEEPALIVE_CHECK: Duration = Duration::from_millis(500);

/// The MQTT state of a worker.
pub struct MqttState {
    pub sessions: Slab<Session>,
    /// Session ID -> slot in `sessions`.
    pub by_id: AHashMap<u64, usize>,
    /// Client IDs owned by this worker.
    pub registry: super::registry::Registry,
    /// Slots of offline sessions with a deadline (expiry or delayed will).
    offline: Vec<usize>,
    next_keepalive_check: Instant,
    /// Shard 0 with `$SYS` on: the collector.
    pub sys: Option<super::sys::Collector>,
    /// Subscriptions of sessions restored at start not yet routed.
    pub starting: usize,
    /// Offline deadlines (wills, expiry) run: false from a restore at
    /// start until every worker has routed what it restored.
    pub started: bool,
}

impl MqttState {
    pub fn new(worker: u16, sys_interval: u32, now: Instant) -> MqttState {
        MqttState {
            sys: super::sys::Collector::new(worker, sys_interval, now),
            sessions: Slab::new(),
            by_id: AHashMap::new(),
            registry: Default::default(),
            offline: Vec::new(),
            next_keepalive_check: now,
            starting: 0,
            started: true,
        }
    }
}

/// Per-delivery conversions, shared by every subscriber on this worker.
#[derive(Default)]
pub struct Converted {
    pub wamp: Option<Payload>,
    mqtt: Option<Bytes>,
    topic: Option<String>,
    /// Encoded QoS 0 PUBLISH by (version, retain flag).
    qos0: [Option<Bytes>; 4],
}

impl Converted {
    pub fn wamp_payload<'a>(&'a mut self, body: &'a Body) -> &'a Payload {
        match body {
            Body::Wamp(p) => p,
            Body::Mqtt(b) => self.wamp.get_or_insert_with(|| payload::to_wamp(b)),
        }
    }

    fn mqtt_payload(&mut self, body: &Body) -> Bytes {
        match body {
            Body::Mqtt(b) => b.clone(),
            Body::Wamp(p) => self.mqtt.get_or_insert_with(|| payload::from_wamp(p)).clone(),
        }
    }
}

pub enum ConnState {
    /// Waiting for CONNECT.
    New,
    /// CONNECT read; the session registry is asked (input paused).
    Claiming(Box<Pending>),
    /// Attached to the session in this slot.
    Open(usize),
}

/// Who an MQTT session is (`connect::authenticate`).
#[derive(Debug, Clone, Default)]
pub struct MqttIdentity {
    pub authid: String,
    /// Shared with the shard's other sessions of the role (`Shard::shared_name`).
    pub authrole: Arc<str>,
    /// What its role may do; `None`: the realm has no roles.
    pub rules: Option<Arc<crate::auth::rules::RoleRules>>,
    /// Realm NUL role: its key in the authorizer's decision cache (shared
    /// too).
    pub authz_key: Arc<str>,
}

pub struct Pending {
    /// A later CONNECT of the client ID claimed this session before its
    /// own claim was answered: it gets what this one gets.
    superseded: Option<Claim>,
    /// In a cluster: the node whose answer the claim waits for.
    via: Option<u16>,
    who: MqttIdentity,
    connect: Box<Connect>,
    session: u64,
    key: Arc<str>,
    client: String,
    realm: Realm,
    assigned_id: bool,
    keep_alive: u16,
    started: Instant,
}

/// The MQTT state of one connection.
pub struct MqttConn {
    /// MQTT over WebSocket: packets arrive in binary messages and leave in them.
    pub ws: bool,
    pub version: Option<Version>,
    pub state: ConnState,
    keep_alive: Duration,
    last_in: Instant,
    /// Inbound topic aliases (index = alias - 1), core-form topics.
    /// Grown on first use, up to `alias_max` (idle connections hold none).
    alias_in: Vec<Option<String>>,
    alias_max: u16,
    /// The client's maximum packet size.
    max_out: usize,
    /// DISCONNECT with reason 0 was received: the will is discarded.
    normal_disconnect: bool,
    /// The session was handed to a new connection: leave it alone at close.
    taken_over: bool,
    /// MQTT bytes from WebSocket messages not yet parsed.
    ws_in: Buf,
}

impl MqttConn {
    pub fn new(ws: bool, now: Instant) -> MqttConn {
        MqttConn {
            ws,
            version: None,
            state: ConnState::New,
            keep_alive: Duration::ZERO,
            last_in: now,
            alias_in: Vec::new(),
            alias_max: 0,
            max_out: usize::MAX,
            normal_disconnect: false,
            taken_over: false,
            ws_in: Buf::default(),
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self.state, ConnState::Open(_))
    }
}

/// One subscription of a session.
#[derive(Debug, Clone)]
pub struct Sub {
    pub filter: String,
    pub key: SubKey,
    /// Core subscription ID; 0 until the owner granted it.
    pub subscription: u64,
    pub opts: SubFilter,
    pub id: Option<u32>,
}

/// A QoS 1/2 message toward the client.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub msg: Arc<Publication>,
    pub qos: u8,
    pub retain: bool,
    pub sub_ids: Vec<u32>,
    /// Its place in the store (`persist`); 0: not stored.
    pub seq: u64,
}

#[derive(Debug, Clone)]
pub struct InFlight {
    pub pkid: u16,
    pub out: Outgoing,
    /// PUBREC received, PUBREL sent (QoS 2).
    pub released: bool,
}

#[derive(Debug)]
pub struct PendingSuback {
    pkid: u16,
    codes: Vec<u8>,
    waiting: usize,
    /// Filters whose retained values are sent after the SUBACK.
    retained: Vec<String>,
    started: Instant,
}

pub struct Session {
    pub id: u64,
    pub key: Arc<str>,
    pub realm: Realm,
    pub version: Version,
    /// The connection, while online.
    pub conn: Option<usize>,
    pub subs: Vec<Sub>,
    next_pkid: u16,
    pub inflight: VecDeque<InFlight>,
    pub queue: VecDeque<Outgoing>,
    /// QoS 2 packet IDs received and not yet released (PUBREL).
    pub qos2_in: Vec<u16>,
    receive_max: u16,
    /// Seconds the session outlives its connection (u32::MAX: forever).
    pub expiry: u32,
    will: Option<Box<Will>>,
    will_at: Option<Instant>,
    expires_at: Option<Instant>,
    alias_out: AHashMap<String, u16>,
    alias_max: u16,
    subacks: Vec<PendingSuback>,
    /// Old copy of a session handed to another worker: (worker, new session ID).
    moving: Option<(u16, u64)>,
    /// New copy of a moved session while the old copy still forwards.
    restoring: Option<Box<Restoring>>,
    /// A CONNACK not yet sent: a session resumed from a dead node's record
    /// is told "present" once its subscriptions are routed cluster-wide
    /// (`connect::open`). Until then it is offline to deliveries.
    held_connack: Option<Box<HeldConnack>>,
    /// Who it is (its client ID and the anonymous role, or its principal).
    pub who: MqttIdentity,
    /// The dynamic authorizer's decisions for the packet being handled.
    decisions: Vec<(crate::auth::rules::Action, String, bool)>,
    /// This incarnation is in the store (`persist`).
    stored: bool,
    /// In a cluster: its record is in the keys bucket (`persist::share`).
    shared: bool,
    /// In a cluster: its will is in the keys bucket (`sync_will`).
    will_shared: bool,
    /// In a cluster: offline, its queued messages go to the queues stream
    /// (`persist::share_queue`), and are taken out when that ends.
    queue_shared: bool,
    /// In a cluster: restored from the store at start, not yet known to
    /// be still this node's (`persist::restored`); its record is not
    /// shared, and its will and expiry wait, until then.
    reclaiming: bool,
    /// When this incarnation was made (ms since the epoch).
    created_ms: u64,
    /// The last message sequence number given (`persist`).
    next_seq: u64,
    /// When its connection went (ms since the epoch), while offline.
    offline_since_ms: Option<u64>,
    /// Messages not delivered to it (queue full, offline QoS 0, expired,
    /// too large), on this worker.
    pub dropped: u64,
}

struct Restoring {
    /// The old copy: worker and session ID.
    from: (u16, u64),
    /// Restored subscriptions not yet granted.
    waiting: usize,
    done_sent: bool,
    /// Publication IDs delivered while both copies receive.
    seen: ahash::AHashSet<u64>,
}

/// A CONNACK held back (`Session::held_connack`).
struct HeldConnack {
    handle: usize,
    packet: Bytes,
    started: Instant,
}

impl Session {
    /// When the session was created, ms since the Unix epoch.
    pub fn created_ms(&self) -> u64 {
        self.created_ms
    }

    /// The connection deliveries go to: none while offline or while its
    /// CONNACK is held.
    fn online(&self) -> Option<usize> {
        self.conn.filter(|_| self.held_connack.is_none())
    }
}

#[derive(Debug)]
pub struct SessionState {
    /// The old copy: worker and session ID (it forwards until told to stop).
    pub from: (u16, u64),
    pub realm: Realm,
    pub version: Version,
    /// The old copy's session expiry, for a copy that never gets its new
    /// connection (it vanished while the hand-over ran).
    pub expiry: u32,
    pub subs: Vec<Sub>,
    pub inflight: Vec<InFlight>,
    pub queue: Vec<Outgoing>,
    pub qos2_in: Vec<u16>,
    pub next_pkid: u16,
}

fn mqtt(w: &mut Shard, handle: usize) -> Option<&mut MqttConn> {
    match &mut w.conns.get_mut(handle)?.proto {
        Proto::Mqtt(m) => Some(m),
        _ => None,
    }
}

fn version(w: &mut Shard, handle: usize) -> Version {
    mqtt(w, handle).and_then(|m| m.version).unwrap_or(Version::V4)
}

/// Queues a packet that must be sent (acks, CONNACK, ...).
fn send(w: &mut Shard, handle: usize, packet: Bytes) {
    let Some(m) = mqtt(w, handle) else { return };
    let bytes = if m.ws { Bytes::from(frame::frame(Opcode::Binary, &packet)) } else { packet };
    w.send_bytes(handle, bytes);
}

/// Queues a droppable packet (QoS 0 delivery); false if dropped.
fn send_droppable(w: &mut Shard, handle: usize, packet: Bytes) -> bool {
    let Some(m) = mqtt(w, handle) else { return false };
    let bytes = if m.ws { Bytes::from(frame::frame(Opcode::Binary, &packet)) } else { packet };
    w.send_event(handle, crate::conn::Frame::Shared(&bytes))
}

/// Ends the connection after a protocol error: v5 gets a DISCONNECT (or a
/// CONNACK before the session is open) with the reason code first.
fn fail(w: &mut Shard, handle: usize, code: u8, message: &str) {
    let Some(m) = mqtt(w, handle) else { return };
    let (ver, open) = (m.version, m.is_open());
    match ver {
        Some(Version::V5) if open => {
            let max = m.max_out;
            send(w, handle, codec::disconnect(code, message, max))
        }
        Some(Version::V5) => send(w, handle, codec::connack(Version::V5, false, code, &Props::default())),
        _ => {}
    }
    close(w, handle, CloseReason::ProtocolViolation);
}

fn close(w: &mut Shard, handle: usize, reason: CloseReason) {
    let ws = mqtt(w, handle).is_some_and(|m| m.ws);
    let ws_close = ws.then_some((frame::CLOSE_NORMAL, ""));
    w.close(handle, reason, ws_close);
}

/// Bytes from the socket (MQTT over TCP): parse and handle whole packets.
pub fn on_bytes(w: &mut Shard, handle: usize, buf: &mut Buf) {
    let max = w.cfg.mqtt.max_packet_size;
    loop {
        if w.conns.get(handle).is_none_or(|c| c.paused) {
            return;
        }
        let Some(m) = mqtt(w, handle) else { return };
        if matches!(m.state, ConnState::Claiming(_)) || buf.is_empty() {
            return;
        }
        let ver = m.version;
        match codec::decode(ver, buf.data(), max) {
            Ok(Decoded::Incomplete) => return,
            Ok(Decoded::Packet(p, n)) => {
                buf.consume(n);
                on_packet(w, handle, p);
            }
            Ok(Decoded::UnsupportedVersion(_)) => {
                buf.clear();
                return unsupported(w, handle);
            }
            Err(e) => {
                if ver.is_none() && buf.data().first().is_some_and(|b| b >> 4 == 1) {
                    m.version = codec::connect_version(buf.data());
                }
                buf.clear();
                return fail(w, handle, e.reason, &e.message);
            }
        }
    }
}

/// One WebSocket message of MQTT over WebSocket.
pub fn on_ws_message(w: &mut Shard, handle: usize, data: &[u8]) {
    let Some(m) = mqtt(w, handle) else { return };
    m.ws_in.append(data);
    drain_ws(w, handle);
}

fn drain_ws(w: &mut Shard, handle: usize) {
    let Some(m) = mqtt(w, handle) else { return };
    let mut buf = std::mem::take(&mut m.ws_in);
    on_bytes(w, handle, &mut buf);
    if let Some(m) = mqtt(w, handle) {
        if buf.is_empty() {
            buf.release();
        }
        m.ws_in = buf;
    }
}

/// CONNECT with a protocol name and level this broker does not speak
/// (`MQIsdp` 3, `MQTT` 4 and 5 are spoken): answered in the form every
/// version reads, a 3.1.1 CONNACK with return code 1 (unacceptable
/// protocol version).
fn unsupported(w: &mut Shard, handle: usize) {
    send(w, handle, codec::connack(Version::V4, false, reason::UNSUPPORTED_VERSION, &Props::default()));
    close(w, handle, CloseReason::ProtocolViolation);
}

fn on_packet(w: &mut Shard, handle: usize, p: Packet) {
    w.metrics.counters.messages_in += 1;
    w.conns[handle].stats.msgs_in += 1;
    let now = w.now;
    let m = mqtt(w, handle).expect("mqtt");
    m.last_in = now;
    let slot = match m.state {
        ConnState::Open(slot) => slot,
        ConnState::New => {
            let Packet::Connect(c) = p else { return fail(w, handle, reason::PROTOCOL_ERROR, "expected CONNECT") };
            return connect(w, handle, c);
        }
        ConnState::Claiming(_) => unreachable!("input is paused while claiming"),
    };
    match p {
        Packet::Connect(_) => fail(w, handle, reason::PROTOCOL_ERROR, "second CONNECT"),
        Packet::Publish(p) => publish(w, handle, slot, p),
        Packet::PubAck { pkid, .. } => acked(w, slot, pkid, 1),
        Packet::PubRec { pkid, reason: code } => pubrec(w, handle, slot, pkid, code),
        Packet::PubRel { pkid, .. } => pubrel(w, handle, slot, pkid),
        Packet::PubComp { pkid, .. } => acked(w, slot, pkid, 2),
        Packet::Subscribe { pkid, filters, id } => subscribe(w, handle, slot, pkid, filters, id),
        Packet::Unsubscribe { pkid, filters } => unsubscribe(w, handle, slot, pkid, filters),
        Packet::PingReq => send(w, handle, codec::pingresp()),
        Packet::Disconnect { reason: code, session_expiry } => {
            let s = &mut w.mqtt.sessions[slot];
            if let Some(e) = session_expiry {
                if s.expiry == 0 && e > 0 {
                    return fail(w, handle, reason::PROTOCOL_ERROR, "session expiry set at DISCONNECT after 0");
                }
                s.expiry = cap_expiry(e, w.cfg.mqtt.max_session_expiry);
            }
            if code == reason::SUCCESS {
                mqtt(w, handle).expect("mqtt").normal_disconnect = true;
            }
            close(w, handle, CloseReason::Client);
        }
    }
}

fn cap_expiry(e: u32, max: Option<u32>) -> u32 {
    max.map_or(e, |m| e.min(m))
}

// ---------------------------------------------------------------------------
// Closing, expiry, wills

/// The connection is closing.
pub fn on_close(w: &mut Shard, handle: usize, conn: MqttConn, reason: CloseReason) {
    let slot = match conn.state {
        ConnState::Open(slot) => slot,
        // Closed while claiming, after a later CONNECT claimed it: that one
        // goes ahead afresh (what this claim gets when it comes stays
        // offline, as for any claim whose connection went).
        ConnState::Claiming(p) => {
            if let Some(later) = p.superseded {
                let to = later.worker;
                w.peers.send(to, ShardMsg::Mqtt(Msg::Claimed { claim: later, state: None }));
            }
            return;
        }
        _ => return,
    };
    w.metrics.closed(reason);
    let stats = w.conns.get_mut(handle).map(|c| std::mem::take(&mut c.stats)).unwrap_or_default();
    let realm = w.mqtt.sessions[slot].realm.clone();
    crate::inspect::fold_stats(w, &realm, stats, reason);
    log::debug!("worker {}: MQTT connection of session {} closed: {}", w.id, w.mqtt.sessions[slot].id, reason.name());
    let s = &w.mqtt.sessions[slot];
    let close = crate::inspect::CloseInfo {
        session: s.id,
        protocol: "mqtt",
        realm: s.realm.to_string(),
        authid: s.who.authid.clone(),
        reason: reason.name(),
        at_ms: crate::router::unix_millis(),
    };
    crate::inspect::note_close(w, close);
    if conn.taken_over {
        return;
    }
    let s = &mut w.mqtt.sessions[slot];
    s.conn = None;
    s.held_connack = None;
    s.alias_out.clear();
    let will = s.will.take();
    if let Some(will) = will {
        if !conn.normal_disconnect {
            let (delay, expiry) = (will.delay, s.expiry);
            if delay == 0 || expiry == 0 {
                publish_will(w, slot, *will);
            } else {
                let s = &mut w.mqtt.sessions[slot];
                s.will_at = Some(w.now + Duration::from_secs(u64::from(delay.min(expiry))));
                s.will = Some(will);
            }
        }
    }
    sync_will(w, slot);
    if w.mqtt.sessions[slot].expiry == 0 {
        end_session(w, slot, true);
    } else {
        go_offline(w, slot);
    }
}

fn go_offline(w: &mut Shard, slot: usize) {
    let s = &mut w.mqtt.sessions[slot];
    s.conn = None;
    s.held_connack = None;
    s.expires_at = (s.expiry != u32::MAX).then(|| w.now + Duration::from_secs(u64::from(s.expiry)));
    // Messages sent and not acknowledged are sent again on reconnect; QoS 0
    // ones are not kept.
    if s.expires_at.is_some() || s.will_at.is_some() {
        w.mqtt.offline.push(slot);
    }
    persist::save(w, slot);
    persist::share_queue(w, slot);
}

/// Removes a session: its subscriptions are released; `release` also frees
/// its client ID at the registry.
fn end_session(w: &mut Shard, slot: usize, release: bool) {
    handoff_done(w, slot);
    w.mqtt.sessions[slot].will = None;
    sync_will(w, slot);
    persist::forget(w, slot);
    let s = w.mqtt.sessions.remove(slot);
    w.mqtt.by_id.remove(&s.id);
    w.metrics.sessions -= 1;
    w.realm_totals.entry(&s.realm).dropped += s.dropped;
    for sub in &s.subs {
        if sub.subscription != 0 {
            w.unsubscribe(Member::Mqtt(slot), sub.subscription);
        }
    }
    if release {
        let owner = owner_for_key(w, &s.key);
        w.peers.send(owner, ShardMsg::Mqtt(Msg::Release { key: s.key, session: s.id }));
    }
}

fn publish_will(w: &mut Shard, slot: usize, will: Will) {
    let p = will_publication(w, slot, will);
    let p = Publication { id: w.ids.next_id(), ..p };
    route(w, p);
    sync_will(w, slot);
}

/// The publication a will makes (ID 0: given when it is sent).
fn will_publication(w: &Shard, slot: usize, will: Will) -> Publication {
    let s = &w.mqtt.sessions[slot];
    let publisher = SessionRef { worker: w.id, id: s.id };
    let realm = s.realm.clone();
    let props = if will.props.is_empty() { None } else { Some(Box::new(will.props)) };
    let expires = props.as_ref().and_then(|p| p.expiry).map(|e| w.now + Duration::from_secs(u64::from(e)));
    Publication {
        realm,
        topic: swap(&will.topic),
        id: 0,
        publisher,
        exclude_me: false,
        body: Body::Mqtt(will.payload),
        qos: will.qos,
        retain: will.retain,
        props,
        expires,
        started: Instant::now(),
        disclosed: None,
        receivers: None,
        ppt: None,
        durable_ack: None,
    }
}

/// In a cluster, the session's will is in the keys bucket while the
/// session holds one here, so that a survivor sends it if this node dies
/// (`cluster::bucket::SharedWill`); this writes or takes it out when that
/// changes.
pub(super) fn sync_will(w: &mut Shard, slot: usize) {
    if w.cluster.is_none() {
        return;
    }
    let s = &w.mqtt.sessions[slot];
    let want = s.will.is_some() && s.moving.is_none();
    if want == s.will_shared {
        return;
    }
    let will = match s.will.as_deref().filter(|_| want) {
        Some(will) => {
            let delay = will.delay.min(s.expiry);
            Some((will_publication(w, slot, will.clone()), delay))
        }
        None => None,
    };
    let key = s.key.clone();
    w.mqtt.sessions[slot].will_shared = want;
    if let Some(link) = &mut w.cluster {
        link.send(crate::cluster::ClusterReq::MqttWill { key, will });
    }
}

/// Keep-alives, session expiry, delayed wills. Called every worker tick.
pub fn housekeeping(w: &mut Shard) {
    super::sys::tick(w);
    let now = w.now;
    if now >= w.mqtt.next_keepalive_check {
        w.mqtt.next_keepalive_check = now + KEEPALIVE_CHECK;
        let mut late = Vec::new();
        for (h, c) in w.conns.iter() {
            if let Proto::Mqtt(m) = &c.proto {
                if m.is_open() && !m.keep_alive.is_zero() && now.duration_since(m.last_in) > m.keep_alive {
                    late.push(h);
                }
            }
        }
        for h in late {
            if let Some(m) = mqtt(w, h).filter(|m| m.version == Some(Version::V5)) {
                let packet = codec::disconnect(reason::KEEP_ALIVE_TIMEOUT, "keep-alive expired", m.max_out);
                send(w, h, packet);
            }
            close(w, h, CloseReason::KeepAlive);
        }
    }
    if w.mqtt.offline.is_empty() || !w.mqtt.started {
        return;
    }
    let mut offline = std::mem::take(&mut w.mqtt.offline);
    offline.retain(|&slot| {
        let Some(s) = w.mqtt.sessions.get_mut(slot) else { return false };
        if s.conn.is_some() {
            return false;
        }
        if s.reclaiming {
            return true; // its will and expiry wait for the cluster's answer (`persist::restored`)
        }
        if s.will_at.is_some_and(|t| now >= t) {
            s.will_at = None;
            if let Some(will) = s.will.take() {
                publish_will(w, slot, *will);
                persist::save(w, slot);
            }
        }
        let s = &w.mqtt.sessions[slot];
        if s.expires_at.is_some_and(|t| now >= t) {
            if let Some(will) = w.mqtt.sessions[slot].will.take() {
                publish_will(w, slot, *will);
            }
            end_session(w, slot, true);
            return false;
        }
        s.expires_at.is_some() || s.will_at.is_some()
    });
    w.mqtt.offline.append(&mut offline);
}

/// Server shutdown: tell a v5 client why.
pub fn shutdown(w: &mut Shard, handle: usize) {
    last_word(w, handle, reason::SERVER_SHUTTING_DOWN, "server shutdown");
}

/// A slow consumer is about to be closed: tell a v5 client why.
pub fn slow(w: &mut Shard, handle: usize, text: &str) {
    last_word(w, handle, reason::QUOTA_EXCEEDED, text);
}

/// A v5 DISCONNECT queued past the outbound bound: it is the last packet.
fn last_word(w: &mut Shard, handle: usize, code: u8, text: &str) {
    let Some(m) = mqtt(w, handle) else { return };
    if !(m.is_open() && m.version == Some(Version::V5)) {
        return;
    }
    let packet = codec::disconnect(code, text, m.max_out);
    let bytes = if m.ws { Bytes::from(frame::frame(Opcode::Binary, &packet)) } else { packet };
    w.conns[handle].out.push(crate::conn::Frame::Shared(&bytes), &mut w.out_pool);
}
