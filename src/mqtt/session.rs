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

use super::codec::{self, prop, reason, Connect, Decoded, Packet, Props, PubOut, SubFilter, Version, Will};
use super::payload;
use super::registry::{Claim, Msg};
use super::topic::{parse_filter, swap, swap_owned};
use crate::conn::{Buf, Proto};
use crate::metrics::{CloseReason, Op};
use crate::router::owner::Outbox;
use crate::router::{owner_of, Body, Member, Publication, Realm, RetainedReply, SessionRef, ShardMsg, SubKey};
use crate::value::Payload;
use crate::worker::core::Subscribed;
use crate::worker::Worker;
use crate::ws::frame::{self, Opcode};
use ahash::AHashMap;
use bytes::Bytes;
use rand::Rng;
use slab::Slab;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// Worker 0 with `$SYS` on: the collector.
    pub sys: Option<super::sys::Collector>,
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

pub struct Pending {
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
}

#[derive(Debug, Clone)]
pub struct InFlight {
    pub pkid: u16,
    pub out: Outgoing,
    /// PUBREC received, PUBREL sent (QoS 2).
    pub released: bool,
}

struct PendingSuback {
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

/// A session on its way to another worker (takeover with clean start off).
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

fn mqtt(w: &mut Worker, handle: usize) -> Option<&mut MqttConn> {
    match &mut w.conns.get_mut(handle)?.proto {
        Proto::Mqtt(m) => Some(m),
        _ => None,
    }
}

fn version(w: &mut Worker, handle: usize) -> Version {
    mqtt(w, handle).and_then(|m| m.version).unwrap_or(Version::V4)
}

/// Queues a packet that must be sent (acks, CONNACK, ...).
fn send(w: &mut Worker, handle: usize, packet: Bytes) {
    let Some(m) = mqtt(w, handle) else { return };
    let bytes = if m.ws { Bytes::from(frame::frame(Opcode::Binary, &packet)) } else { packet };
    w.send_bytes(handle, bytes);
}

/// Queues a droppable packet (QoS 0 delivery); false if dropped.
fn send_droppable(w: &mut Worker, handle: usize, packet: Bytes) -> bool {
    let Some(m) = mqtt(w, handle) else { return false };
    let bytes = if m.ws { Bytes::from(frame::frame(Opcode::Binary, &packet)) } else { packet };
    w.send_event(handle, bytes)
}

/// Ends the connection after a protocol error: v5 gets a DISCONNECT (or a
/// CONNACK before the session is open) with the reason code first.
fn fail(w: &mut Worker, handle: usize, code: u8, message: &str) {
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

fn close(w: &mut Worker, handle: usize, reason: CloseReason) {
    let ws = mqtt(w, handle).is_some_and(|m| m.ws);
    let ws_close = ws.then_some((frame::CLOSE_NORMAL, ""));
    w.close(handle, reason, ws_close);
}

/// Bytes from the socket (MQTT over TCP): parse and handle whole packets.
pub fn on_bytes(w: &mut Worker, handle: usize, buf: &mut Buf) {
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
pub fn on_ws_message(w: &mut Worker, handle: usize, data: &[u8]) {
    let Some(m) = mqtt(w, handle) else { return };
    m.ws_in.append(data);
    drain_ws(w, handle);
}

fn drain_ws(w: &mut Worker, handle: usize) {
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
fn unsupported(w: &mut Worker, handle: usize) {
    send(w, handle, codec::connack(Version::V4, false, reason::UNSUPPORTED_VERSION, &Props::default()));
    close(w, handle, CloseReason::ProtocolViolation);
}

fn on_packet(w: &mut Worker, handle: usize, p: Packet) {
    w.metrics.counters.messages_in += 1;
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
// CONNECT

fn connect(w: &mut Worker, handle: usize, c: Box<Connect>) {
    let started = Instant::now();
    w.metrics.counters.mqtt_connects += 1;
    let m = mqtt(w, handle).expect("mqtt");
    m.version = Some(c.version);
    if c.auth_method.is_some() {
        return fail(w, handle, reason::BAD_AUTH_METHOD, "extended authentication is not supported");
    }
    if let Some(will) = &c.will {
        if levels_by(&will.topic, b'/') > w.cfg.mqtt.max_topic_levels {
            return fail(w, handle, reason::TOPIC_NAME_INVALID, "will topic has too many levels");
        }
        if super::sys::is_sys(&swap(&will.topic)) {
            return fail_connack(w, handle, reason::NOT_AUTHORIZED);
        }
        if will.props.payload_format == Some(1) && std::str::from_utf8(&will.payload).is_err() {
            return fail(w, handle, reason::PAYLOAD_FORMAT_INVALID, "will payload is not UTF-8 as its format says");
        }
    }
    let mut client = c.client_id.clone();
    let mut assigned_id = false;
    // MQTT 3.1 (3.1): a client identifier of 1 to 23 characters, no assigned IDs.
    if c.version == Version::V3 && !(1..=23).contains(&client.chars().count()) {
        return fail_connack(w, handle, reason::BAD_CLIENT_ID);
    }
    if client.is_empty() {
        if c.version != Version::V5 && !c.clean_start {
            return fail_connack(w, handle, reason::BAD_CLIENT_ID);
        }
        client = format!("fennec-{:016x}", rand::thread_rng().gen::<u64>());
        assigned_id = true;
    }
    // The realm: `user@realm` (fox-wamp's convention) or the configured one.
    let realm_name = match c.username.as_deref().and_then(|u| u.rsplit_once('@')) {
        Some((_, r)) if !r.is_empty() => r.to_owned(),
        _ => w.cfg.mqtt.realm.clone(),
    };
    if w.cfg.realm(&realm_name).is_none() {
        return fail_connack(w, handle, reason::NOT_AUTHORIZED);
    }
    let max_ka = w.cfg.mqtt.max_keepalive;
    let keep_alive = if max_ka > 0 && c.keep_alive > max_ka { max_ka } else { c.keep_alive };
    let realm: Realm = realm_name.into();
    let key: Arc<str> = format!("{realm}\0{client}").into();
    let mut session = rand::thread_rng().gen_range(1..=crate::wamp::message::MAX_ID);
    while w.mqtt.by_id.contains_key(&session) {
        session = rand::thread_rng().gen_range(1..=crate::wamp::message::MAX_ID);
    }
    let owner = owner_of(&realm, &client, w.workers);
    let m = mqtt(w, handle).expect("mqtt");
    m.keep_alive = Duration::from_millis(u64::from(keep_alive) * 1500);
    m.max_out = c.max_packet_size.map_or(usize::MAX, |n| n as usize);
    let clean_start = c.clean_start;
    let pending = Pending { connect: c, session, key: key.clone(), client, realm, assigned_id, keep_alive, started };
    m.state = ConnState::Claiming(Box::new(pending));
    w.conns[handle].paused = true;
    let serial = w.conns[handle].serial;
    let claim = Claim { key, session, worker: w.id, handle, serial, clean_start };
    w.peers.send(owner, ShardMsg::Mqtt(Msg::Claim(claim)));
}

fn fail_connack(w: &mut Worker, handle: usize, code: u8) {
    let ver = version(w, handle);
    send(w, handle, codec::connack(ver, false, code, &Props::default()));
    close(w, handle, CloseReason::ProtocolViolation);
}

/// Registry messages arriving at this worker.
pub fn on_registry(w: &mut Worker, msg: Msg) {
    match msg {
        Msg::Claim(claim) => w.mqtt.registry.claim(claim, &mut w.peers),
        Msg::Release { key, session } => w.mqtt.registry.release(key, session),
        Msg::Takeover { old, claim } => takeover(w, old, claim),
        Msg::Claimed { claim, state } => claimed(w, claim, state),
        Msg::Forward { session, out } => {
            let Some(&slot) = w.mqtt.by_id.get(&session) else {
                w.metrics.counters.mqtt_dropped += 1;
                return;
            };
            if first_sight(w, slot, out.msg.id) {
                offer_recorded(w, slot, *out, &mut Converted::default());
            }
        }
        Msg::HandoffDone { old, new: (to, new) } => {
            if let Some(&slot) = w.mqtt.by_id.get(&old) {
                if w.mqtt.sessions[slot].moving.is_some() {
                    end_session(w, slot, false);
                }
            }
            // Always answered, so the new copy stops deduplicating (and
            // frees its set) even if the old copy was already gone.
            w.peers.send(to, ShardMsg::Mqtt(Msg::ForwardEnd { session: new }));
        }
        Msg::ForwardEnd { session } => {
            if let Some(&slot) = w.mqtt.by_id.get(&session) {
                w.mqtt.sessions[slot].restoring = None;
            }
        }
    }
}

/// While a moved session receives both directly and forwarded: whether this
/// publication is new to it.
fn first_sight(w: &mut Worker, slot: usize, publication: u64) -> bool {
    match &mut w.mqtt.sessions[slot].restoring {
        Some(r) => r.seen.insert(publication),
        None => true,
    }
}

/// The session `old` is claimed by a new connection.
fn takeover(w: &mut Worker, old: u64, claim: Claim) {
    // What the old connection sent before the new one connected comes
    // first: a DISCONNECT (maybe setting the session expiry to 0) or an EOF
    // still unread in its socket decides what is left to take over.
    if let Some(h) = w.mqtt.by_id.get(&old).and_then(|&slot| w.mqtt.sessions[slot].conn) {
        w.read_now(h);
    }
    let Some(&slot) = w.mqtt.by_id.get(&old) else {
        // Already gone (a race with its end): nothing to hand over.
        let to = claim.worker;
        return w.peers.send(to, ShardMsg::Mqtt(Msg::Claimed { claim, state: None }));
    };
    if let Some(h) = w.mqtt.sessions[slot].conn {
        if let Some(m) = mqtt(w, h).filter(|m| m.version == Some(Version::V5)) {
            let packet =
                codec::disconnect(reason::SESSION_TAKEN_OVER, "another connection took the client ID", m.max_out);
            send(w, h, packet);
        }
        detach_for_takeover(w, h, slot);
        close(w, h, CloseReason::TakenOver);
    } else {
        // Offline: a new connection for the client ID within the will delay
        // cancels the will (MQTT 5, 3.1.3.2.2), clean start or not.
        let s = &mut w.mqtt.sessions[slot];
        s.will = None;
        s.will_at = None;
    }
    // A session that ends with its connection (clean session 1, or v5
    // expiry 0) has nothing to hand over: the new connection starts afresh
    // and is told so (session present 0), whatever its clean-start flag.
    let state = if claim.clean_start || w.mqtt.sessions[slot].expiry == 0 {
        let s = &mut w.mqtt.sessions[slot];
        if let Some(will) = s.will.take() {
            publish_will(w, slot, *will);
        }
        end_session(w, slot, false);
        None
    } else {
        Some(Box::new(pack(w, slot, claim.worker, claim.session)))
    };
    let to = claim.worker;
    w.peers.send(to, ShardMsg::Mqtt(Msg::Claimed { claim, state }));
}

/// The connection on `h` loses its session to a new connection. The old
/// connection's will is published if it had no delay (its network
/// connection closes abnormally); a delayed will is cancelled by the new
/// connection.
fn detach_for_takeover(w: &mut Worker, h: usize, slot: usize) {
    if let Some(m) = mqtt(w, h) {
        m.taken_over = true;
    }
    let s = &mut w.mqtt.sessions[slot];
    s.conn = None;
    if let Some(will) = s.will.take() {
        if will.delay == 0 {
            publish_will(w, slot, *will);
        }
    }
}

/// Takes a session apart for another worker: its subscriptions are released
/// here and re-made there.
///
/// Its subscriptions stay here, and what they deliver is forwarded, until
/// the new copy's subscriptions are routed (`HandoffDone`).
fn pack(w: &mut Worker, slot: usize, to: u16, new: u64) -> SessionState {
    let me = w.id;
    let s = &mut w.mqtt.sessions[slot];
    s.moving = Some((to, new));
    s.will = None;
    s.will_at = None;
    s.expires_at = None;
    s.subacks.clear();
    SessionState {
        from: (me, s.id),
        realm: s.realm.clone(),
        version: s.version,
        expiry: s.expiry,
        subs: s.subs.clone(),
        inflight: s.inflight.drain(..).collect(),
        queue: s.queue.drain(..).collect(),
        qos2_in: std::mem::take(&mut s.qos2_in),
        next_pkid: s.next_pkid,
    }
}

/// The registry's answer to our CONNECT.
fn claimed(w: &mut Worker, claim: Claim, state: Option<Box<SessionState>>) {
    let alive = w.conns.get(claim.handle).is_some_and(|c| c.serial == claim.serial)
        && matches!(mqtt(w, claim.handle).map(|m| &m.state), Some(ConnState::Claiming(p)) if p.session == claim.session);
    if !alive {
        // The connection went away while the registry answered. Keep a
        // handed-over session offline (it may still expire); else release.
        match state {
            Some(state) => {
                let (realm, version, expiry) = (state.realm.clone(), state.version, state.expiry);
                let slot = new_session(w, claim.session, claim.key.clone(), realm, version, expiry, u16::MAX, 0);
                restore(w, slot, *state);
                go_offline(w, slot);
            }
            None => {
                let owner = owner_for_key(w, &claim.key);
                w.peers.send(owner, ShardMsg::Mqtt(Msg::Release { key: claim.key, session: claim.session }));
            }
        }
        return;
    }
    let handle = claim.handle;
    let m = mqtt(w, handle).expect("mqtt");
    let ConnState::Claiming(p) = std::mem::replace(&mut m.state, ConnState::New) else { unreachable!() };
    let c = p.connect;
    let cfg = &w.cfg.mqtt;
    let expiry = cap_expiry(c.session_expiry, cfg.max_session_expiry);
    let (receive_maximum, alias_max, max_packet) = (cfg.receive_maximum, cfg.topic_alias_maximum, cfg.max_packet_size);
    let slot = new_session(w, p.session, p.key, p.realm, c.version, expiry, c.receive_max, c.topic_alias_max);
    let s = &mut w.mqtt.sessions[slot];
    s.conn = Some(handle);
    s.will = c.will.map(Box::new);
    let present = state.is_some();
    if let Some(state) = state {
        restore(w, slot, *state);
    }
    let m = mqtt(w, handle).expect("mqtt");
    m.state = ConnState::Open(slot);
    m.alias_in = Vec::new();
    m.alias_max = alias_max;
    let mut props = Props::default();
    if c.version == Version::V5 {
        if expiry != c.session_expiry {
            props.u32(prop::SESSION_EXPIRY, expiry);
        }
        props.u16(prop::RECEIVE_MAXIMUM, receive_maximum);
        props.u32(prop::MAXIMUM_PACKET_SIZE, max_packet.min(268_435_460) as u32);
        props.u16(prop::TOPIC_ALIAS_MAXIMUM, alias_max);
        if p.assigned_id {
            props.str(prop::ASSIGNED_CLIENT_ID, &p.client);
        }
        if p.keep_alive != c.keep_alive {
            props.u16(prop::SERVER_KEEP_ALIVE, p.keep_alive);
        }
    }
    send(w, handle, codec::connack(c.version, present, reason::SUCCESS, &props));
    w.metrics.record(Op::MqttConnect, p.started, Instant::now());
    resend_inflight(w, slot);
    pump(w, slot);
    // Input that arrived after CONNECT.
    if w.conns.contains(handle) {
        unpause(w, handle);
    }
}

fn owner_for_key(w: &Worker, key: &str) -> u16 {
    let (realm, client) = key.split_once('\0').unwrap_or(("", key));
    owner_of(realm, client, w.workers)
}

#[allow(clippy::too_many_arguments)]
fn new_session(
    w: &mut Worker,
    id: u64,
    key: Arc<str>,
    realm: Realm,
    version: Version,
    expiry: u32,
    receive_max: u16,
    alias_max: u16,
) -> usize {
    let slot = w.mqtt.sessions.insert(Session {
        id,
        key,
        realm,
        version,
        conn: None,
        subs: Vec::new(),
        next_pkid: 0,
        inflight: VecDeque::new(),
        queue: VecDeque::new(),
        qos2_in: Vec::new(),
        receive_max,
        expiry,
        will: None,
        will_at: None,
        expires_at: None,
        alias_out: AHashMap::new(),
        alias_max,
        subacks: Vec::new(),
        moving: None,
        restoring: None,
    });
    w.mqtt.by_id.insert(id, slot);
    w.metrics.sessions += 1;
    w.metrics.counters.sessions_opened += 1;
    slot
}

/// Re-creates a handed-over session here: subscriptions are made again
/// (without SUBACK), flows and queue carried over.
fn restore(w: &mut Worker, slot: usize, state: SessionState) {
    let sid = w.mqtt.sessions[slot].id;
    w.mqtt.sessions[slot].restoring =
        Some(Box::new(Restoring { from: state.from, waiting: 0, done_sent: false, seen: Default::default() }));
    let mut waiting = 0;
    for mut sub in state.subs {
        sub.subscription = 0;
        let key = sub.key.clone();
        w.mqtt.sessions[slot].subs.push(sub);
        match w.subscribe(Member::Mqtt(slot), sid, key.clone(), RESTORE, Instant::now()) {
            Subscribed::Now(id) => {
                set_subscription(w, slot, &key, id);
            }
            Subscribed::Later => waiting += 1,
        }
    }
    if let Some(r) = &mut w.mqtt.sessions[slot].restoring {
        r.waiting = waiting;
    }
    if waiting == 0 {
        handoff_done(w, slot);
    }
    let s = &mut w.mqtt.sessions[slot];
    s.inflight = state.inflight.into();
    s.queue = state.queue.into();
    s.qos2_in = state.qos2_in;
    s.next_pkid = state.next_pkid;
}

/// Tells the old copy of a moved session that it can go.
fn handoff_done(w: &mut Worker, slot: usize) {
    let new = (w.id, w.mqtt.sessions[slot].id);
    let Some(r) = &mut w.mqtt.sessions[slot].restoring else { return };
    if !r.done_sent {
        r.done_sent = true;
        let (worker, old) = r.from;
        w.peers.send(worker, ShardMsg::Mqtt(Msg::HandoffDone { old, new }));
    }
}

fn set_subscription(w: &mut Worker, slot: usize, key: &SubKey, id: u64) -> bool {
    match w.mqtt.sessions[slot].subs.iter_mut().find(|s| s.key == *key && s.subscription == 0) {
        Some(sub) => {
            sub.subscription = id;
            true
        }
        None => false,
    }
}

// ---------------------------------------------------------------------------
// Closing, expiry, wills

/// The connection is closing.
pub fn on_close(w: &mut Worker, _handle: usize, conn: MqttConn, reason: CloseReason) {
    let ConnState::Open(slot) = conn.state else { return };
    w.metrics.closed(reason);
    if conn.taken_over {
        return;
    }
    let s = &mut w.mqtt.sessions[slot];
    s.conn = None;
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
    if w.mqtt.sessions[slot].expiry == 0 {
        end_session(w, slot, true);
    } else {
        go_offline(w, slot);
    }
}

fn go_offline(w: &mut Worker, slot: usize) {
    let s = &mut w.mqtt.sessions[slot];
    s.conn = None;
    s.expires_at = (s.expiry != u32::MAX).then(|| w.now + Duration::from_secs(u64::from(s.expiry)));
    // Messages sent and not acknowledged are sent again on reconnect; QoS 0
    // ones are not kept.
    if s.expires_at.is_some() || s.will_at.is_some() {
        w.mqtt.offline.push(slot);
    }
}

/// Removes a session: its subscriptions are released; `release` also frees
/// its client ID at the registry.
fn end_session(w: &mut Worker, slot: usize, release: bool) {
    handoff_done(w, slot);
    let s = w.mqtt.sessions.remove(slot);
    w.mqtt.by_id.remove(&s.id);
    w.metrics.sessions -= 1;
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

fn publish_will(w: &mut Worker, slot: usize, will: Will) {
    let s = &w.mqtt.sessions[slot];
    let publisher = SessionRef { worker: w.id, id: s.id };
    let realm = s.realm.clone();
    let props = if will.props.is_empty() { None } else { Some(Box::new(will.props)) };
    let expires = props.as_ref().and_then(|p| p.expiry).map(|e| w.now + Duration::from_secs(u64::from(e)));
    let p = Publication {
        realm,
        topic: swap(&will.topic),
        id: w.ids.next_id(),
        publisher,
        exclude_me: false,
        body: Body::Mqtt(will.payload),
        qos: will.qos,
        retain: will.retain,
        props,
        expires,
        started: Instant::now(),
    };
    route(w, p);
}

/// Keep-alives, session expiry, delayed wills. Called every worker tick.
pub fn housekeeping(w: &mut Worker) {
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
    if w.mqtt.offline.is_empty() {
        return;
    }
    let mut offline = std::mem::take(&mut w.mqtt.offline);
    offline.retain(|&slot| {
        let Some(s) = w.mqtt.sessions.get_mut(slot) else { return false };
        if s.conn.is_some() {
            return false;
        }
        if s.will_at.is_some_and(|t| now >= t) {
            s.will_at = None;
            if let Some(will) = s.will.take() {
                publish_will(w, slot, *will);
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
pub fn shutdown(w: &mut Worker, handle: usize) {
    last_word(w, handle, reason::SERVER_SHUTTING_DOWN, "server shutdown");
}

/// A slow consumer is about to be closed: tell a v5 client why.
pub fn slow(w: &mut Worker, handle: usize, text: &str) {
    last_word(w, handle, reason::QUOTA_EXCEEDED, text);
}

/// A v5 DISCONNECT queued past the outbound bound: it is the last packet.
fn last_word(w: &mut Worker, handle: usize, code: u8, text: &str) {
    let Some(m) = mqtt(w, handle) else { return };
    if !(m.is_open() && m.version == Some(Version::V5)) {
        return;
    }
    let packet = codec::disconnect(code, text, m.max_out);
    let bytes = if m.ws { Bytes::from(frame::frame(Opcode::Binary, &packet)) } else { packet };
    w.conns[handle].out.push(bytes);
}

// ---------------------------------------------------------------------------
// PUBLISH from the client

fn publish(w: &mut Worker, handle: usize, slot: usize, p: codec::Publish) {
    let started = Instant::now();
    let m = mqtt(w, handle).expect("mqtt");
    // Topic aliases (v5): set or resolve.
    let topic = match p.alias {
        None => swap_owned(p.topic),
        Some(a) => {
            if a > m.alias_max {
                return fail(w, handle, reason::TOPIC_ALIAS_INVALID, "topic alias over the maximum");
            }
            let i = usize::from(a) - 1;
            if m.alias_in.len() <= i {
                m.alias_in.resize(i + 1, None);
            }
            let Some(entry) = m.alias_in.get_mut(i) else {
                return fail(w, handle, reason::TOPIC_ALIAS_INVALID, "topic alias over the maximum");
            };
            if p.topic.is_empty() {
                match entry {
                    Some(t) => t.clone(),
                    None => return fail(w, handle, reason::PROTOCOL_ERROR, "unknown topic alias"),
                }
            } else {
                let t = swap(&p.topic);
                *entry = Some(t.clone());
                t
            }
        }
    };
    let ver = m.version.unwrap_or(Version::V4);
    if levels(&topic) > w.cfg.mqtt.max_topic_levels {
        return fail(w, handle, reason::TOPIC_NAME_INVALID, "topic name has too many levels");
    }
    // `$SYS` topics are the broker's: v5 is told (the flow ends there),
    // 3.1.1 (which has no way to say no) gets its acknowledgement and the
    // message is dropped.
    let denied = super::sys::is_sys(&topic);
    if denied {
        w.metrics.counters.mqtt_denied += 1;
        if ver == Version::V5 {
            return ack_publish(w, handle, ver, p.qos, p.pkid, reason::NOT_AUTHORIZED);
        }
    }
    let s = &mut w.mqtt.sessions[slot];
    if p.qos == 2 {
        if s.qos2_in.contains(&p.pkid) {
            // A resend of a message we have: acknowledge, do not publish again.
            return ack_publish(w, handle, ver, 2, p.pkid, reason::SUCCESS);
        }
        if s.qos2_in.len() >= usize::from(w.cfg.mqtt.receive_maximum) {
            return fail(w, handle, reason::RECEIVE_MAXIMUM_EXCEEDED, "too many QoS 2 messages awaiting PUBREL");
        }
        s.qos2_in.push(p.pkid);
    }
    if p.props.as_ref().is_some_and(|pp| pp.payload_format == Some(1)) && std::str::from_utf8(&p.payload).is_err() {
        return fail(w, handle, reason::PAYLOAD_FORMAT_INVALID, "payload is not UTF-8 as its format says");
    }
    let publisher = SessionRef { worker: w.id, id: s.id };
    let realm = s.realm.clone();
    let expires = p.props.as_ref().and_then(|pp| pp.expiry).map(|e| w.now + Duration::from_secs(u64::from(e)));
    let (qos, pkid) = (p.qos, p.pkid);
    if denied {
        return ack_publish(w, handle, ver, qos, pkid, reason::SUCCESS);
    }
    let publication = Publication {
        realm,
        topic,
        id: w.ids.next_id(),
        publisher,
        exclude_me: false,
        body: Body::Mqtt(p.payload),
        qos: p.qos,
        retain: p.retain,
        props: p.props,
        expires,
        started,
    };
    // The publishing worker's routing table knows whether anything matches:
    // v5 says so in the acknowledgement (0x10), as Mosquitto and HiveMQ do.
    w.metrics.counters.mqtt_publish_in += 1;
    let code = if route(w, publication) { reason::SUCCESS } else { reason::NO_MATCHING_SUBSCRIBERS };
    ack_publish(w, handle, ver, qos, pkid, code);
}

/// PUBACK (QoS 1) or PUBREC (QoS 2) for a client PUBLISH.
fn ack_publish(w: &mut Worker, handle: usize, ver: Version, qos: u8, pkid: u16, code: u8) {
    match qos {
        1 => send(w, handle, codec::ack_packet(ver, codec::PUBACK, pkid, code)),
        2 => send(w, handle, codec::ack_packet(ver, codec::PUBREC, pkid, code)),
        _ => {}
    }
}

fn route(w: &mut Worker, p: Publication) -> bool {
    w.route(p)
}

/// Levels of a core-form topic (`.` separated).
fn levels(topic: &str) -> usize {
    levels_by(topic, b'.')
}

fn levels_by(topic: &str, separator: u8) -> usize {
    1 + topic.bytes().filter(|&b| b == separator).count()
}

fn pubrel(w: &mut Worker, handle: usize, slot: usize, pkid: u16) {
    let ver = version(w, handle);
    let s = &mut w.mqtt.sessions[slot];
    let code = match s.qos2_in.iter().position(|&id| id == pkid) {
        Some(i) => {
            s.qos2_in.swap_remove(i);
            0
        }
        None => reason::PACKET_ID_NOT_FOUND,
    };
    send(w, handle, codec::ack_packet(ver, codec::PUBCOMP, pkid, code));
}

// ---------------------------------------------------------------------------
// Delivery to the client

/// A publication for this session, which holds the matching core
/// subscriptions `subs` (one copy per message, at the highest QoS of the
/// matching subscriptions, with all their subscription identifiers).
///
/// Returns the QoS it went out with if it was queued on the connection now
/// (the caller records the latency, once per QoS for a whole delivery).
pub fn deliver(w: &mut Worker, slot: usize, p: &Arc<Publication>, subs: &[u64], conv: &mut Converted) -> Option<u8> {
    let s = w.mqtt.sessions.get(slot)?;
    let mine = p.publisher.worker == w.id && p.publisher.id == s.id;
    let mut qos = None;
    let mut retain = false;
    let mut sub_ids = Vec::new();
    for sub in s.subs.iter().filter(|x| x.subscription != 0 && subs.contains(&x.subscription)) {
        if mine && sub.opts.no_local {
            continue;
        }
        let q = p.qos.min(sub.opts.qos);
        qos = Some(qos.map_or(q, |x: u8| x.max(q)));
        retain |= sub.opts.retain_as_published && p.retain;
        if let Some(id) = sub.id {
            sub_ids.push(id);
        }
    }
    let qos = qos?;
    if p.expired(w.now) {
        w.metrics.counters.mqtt_dropped += 1;
        return None;
    }
    let out = Outgoing { msg: p.clone(), qos, retain, sub_ids };
    if let Some((to, session)) = s.moving {
        w.peers.send(to, ShardMsg::Mqtt(Msg::Forward { session, out: Box::new(out) }));
        return None;
    }
    if first_sight(w, slot, p.id) {
        return offer(w, slot, out, conv).then_some(qos);
    }
    None
}

/// The publish->deliver histogram of a QoS.
pub fn deliver_op(qos: u8) -> Op {
    match qos {
        0 => Op::MqttDeliver0,
        1 => Op::MqttDeliver1,
        _ => Op::MqttDeliver2,
    }
}

/// `offer`, recording the latency of a message sent now.
fn offer_recorded(w: &mut Worker, slot: usize, out: Outgoing, conv: &mut Converted) {
    let (op, started) = (deliver_op(out.qos), out.msg.started);
    if offer(w, slot, out, conv) {
        w.metrics.record(op, started, Instant::now());
    }
}

/// Sends a message now (true), or queues it (QoS 1/2) behind the window,
/// or drops it (QoS 0 offline or over the queue, a full queue).
fn offer(w: &mut Worker, slot: usize, out: Outgoing, conv: &mut Converted) -> bool {
    let s = &mut w.mqtt.sessions[slot];
    if out.qos == 0 {
        let Some(h) = s.conn else {
            w.metrics.counters.mqtt_dropped += 1;
            return false;
        };
        return transmit(w, slot, h, 0, &out, false, conv);
    }
    let window = usize::from(s.receive_max.min(w.cfg.mqtt.max_inflight));
    match s.conn {
        Some(h) if s.inflight.len() < window && s.queue.is_empty() => {
            let pkid = next_pkid(s);
            // One too large for the client was dropped as if delivered: it
            // takes no place in the window (MQTT 5, 3.1.2.25).
            if !transmit(w, slot, h, pkid, &out, false, conv) {
                return false;
            }
            w.mqtt.sessions[slot].inflight.push_back(InFlight { pkid, out, released: false });
            true
        }
        _ => {
            if s.queue.len() >= w.cfg.mqtt.max_queued_messages {
                w.metrics.counters.mqtt_dropped += 1;
                return false;
            }
            s.queue.push_back(out);
            false
        }
    }
}

fn next_pkid(s: &mut Session) -> u16 {
    loop {
        s.next_pkid = s.next_pkid.wrapping_add(1);
        if s.next_pkid != 0 && !s.inflight.iter().any(|f| f.pkid == s.next_pkid) {
            return s.next_pkid;
        }
    }
}

/// Encodes and queues one PUBLISH; false if it was dropped.
fn transmit(w: &mut Worker, slot: usize, h: usize, pkid: u16, out: &Outgoing, dup: bool, conv: &mut Converted) -> bool {
    let now = w.now;
    let Some(m) = mqtt(w, h) else { return false };
    let max_out = m.max_out;
    let s = &mut w.mqtt.sessions[slot];
    let ver = s.version;
    let p = &out.msg;
    let body = conv.mqtt_payload(&p.body);
    let topic: &str = conv.topic.get_or_insert_with(|| swap(&p.topic));
    // Topic alias toward a client that accepts them.
    let (alias, send_topic) = if ver == Version::V5 && s.alias_max > 0 {
        match s.alias_out.get(topic) {
            Some(&a) => (Some(a), false),
            None if s.alias_out.len() < usize::from(s.alias_max) => {
                let a = s.alias_out.len() as u16 + 1;
                s.alias_out.insert(topic.to_owned(), a);
                (Some(a), true)
            }
            None => (None, true),
        }
    } else {
        (None, true)
    };
    let expiry = p.expires.map(|t| t.saturating_duration_since(now).as_secs().max(1) as u32);
    // A QoS 0 packet with nothing subscriber-specific is the same for every
    // subscriber of this version: encode it once per delivery.
    let shared = out.qos == 0 && alias.is_none() && out.sub_ids.is_empty() && expiry.is_none();
    let slot_of = usize::from(ver == Version::V5) * 2 + usize::from(out.retain);
    let packet = match &conv.qos0[slot_of] {
        Some(b) if shared => b.clone(),
        _ => {
            let o = PubOut {
                qos: out.qos,
                retain: out.retain,
                dup,
                pkid,
                alias,
                send_topic,
                sub_ids: &out.sub_ids,
                props: p.props.as_deref(),
                expiry,
            };
            let packet = codec::publish(ver, topic, &body, &o);
            if shared {
                conv.qos0[slot_of] = Some(packet.clone());
            }
            packet
        }
    };
    if packet.len() > max_out {
        // MQTT 5: a message over the client's maximum is discarded, and an
        // alias it would have set is not set.
        if send_topic && alias.is_some() {
            w.mqtt.sessions[slot].alias_out.remove(topic);
        }
        w.metrics.counters.mqtt_dropped += 1;
        return false;
    }
    let sent = if out.qos == 0 {
        send_droppable(w, h, packet)
    } else {
        send(w, h, packet);
        true
    };
    w.metrics.counters.mqtt_publish_out += u64::from(sent);
    sent
}

/// On reconnect: unacknowledged PUBLISHes again with DUP, PUBRELs again.
/// One now over the new connection's maximum packet size is dropped as if
/// delivered, and frees its slot.
fn resend_inflight(w: &mut Worker, slot: usize) {
    let Some(h) = w.mqtt.sessions[slot].conn else { return };
    let flights: Vec<InFlight> = w.mqtt.sessions[slot].inflight.iter().cloned().collect();
    let ver = w.mqtt.sessions[slot].version;
    let mut dropped = Vec::new();
    for f in flights {
        if f.released {
            send(w, h, codec::ack_packet(ver, codec::PUBREL, f.pkid, 0));
        } else if !transmit(w, slot, h, f.pkid, &f.out, true, &mut Converted::default()) {
            dropped.push(f.pkid);
        }
    }
    if !dropped.is_empty() {
        w.mqtt.sessions[slot].inflight.retain(|f| !dropped.contains(&f.pkid));
    }
}

/// Moves queued messages into the window.
fn pump(w: &mut Worker, slot: usize) {
    loop {
        let s = &mut w.mqtt.sessions[slot];
        let Some(h) = s.conn else { return };
        let window = usize::from(s.receive_max.min(w.cfg.mqtt.max_inflight));
        if s.inflight.len() >= window {
            return;
        }
        let Some(out) = s.queue.pop_front() else { return };
        if out.msg.expired(w.now) {
            w.metrics.counters.mqtt_dropped += 1;
            continue;
        }
        let pkid = next_pkid(s);
        let (op, started) = (deliver_op(out.qos), out.msg.started);
        if transmit(w, slot, h, pkid, &out, false, &mut Converted::default()) {
            w.mqtt.sessions[slot].inflight.push_back(InFlight { pkid, out, released: false });
            w.metrics.record(op, started, Instant::now());
        }
    }
}

/// PUBACK (QoS 1) or PUBCOMP (QoS 2).
fn acked(w: &mut Worker, slot: usize, pkid: u16, qos: u8) {
    let s = &mut w.mqtt.sessions[slot];
    let found = s.inflight.iter().position(|f| f.pkid == pkid && f.out.qos == qos && (qos == 1 || f.released));
    if let Some(i) = found {
        s.inflight.remove(i);
        pump(w, slot);
    }
}

fn pubrec(w: &mut Worker, handle: usize, slot: usize, pkid: u16, code: u8) {
    let ver = version(w, handle);
    let s = &mut w.mqtt.sessions[slot];
    match s.inflight.iter().position(|f| f.pkid == pkid && f.out.qos == 2) {
        Some(i) if code >= 0x80 => {
            // The client refused it: the flow ends here.
            s.inflight.remove(i);
            pump(w, slot);
        }
        Some(i) => {
            s.inflight[i].released = true;
            send(w, handle, codec::ack_packet(ver, codec::PUBREL, pkid, 0));
        }
        None => send(w, handle, codec::ack_packet(ver, codec::PUBREL, pkid, reason::PACKET_ID_NOT_FOUND)),
    }
}

// ---------------------------------------------------------------------------
// SUBSCRIBE / UNSUBSCRIBE

fn subscribe(w: &mut Worker, handle: usize, slot: usize, pkid: u16, filters: Vec<SubFilter>, id: Option<u32>) {
    let started = Instant::now();
    let realm = w.mqtt.sessions[slot].realm.clone();
    let sid = w.mqtt.sessions[slot].id;
    let mut pending = PendingSuback { pkid, codes: vec![0; filters.len()], waiting: 0, retained: Vec::new(), started };
    let max_levels = w.cfg.mqtt.max_topic_levels;
    // What closes the connection is found before any filter takes effect.
    for f in &filters {
        if f.no_local && f.filter.starts_with("$share/") {
            return fail(w, handle, reason::PROTOCOL_ERROR, "no-local on a shared subscription");
        }
        if w.mqtt.sessions[slot].version != Version::V5 && levels_by(&f.filter, b'/') > max_levels {
            return fail(w, handle, reason::TOPIC_FILTER_INVALID, "topic filter has too many levels");
        }
    }
    for (i, f) in filters.into_iter().enumerate() {
        // Bounded before anything walks it (the trie, the matcher).
        if levels_by(&f.filter, b'/') > max_levels {
            pending.codes[i] = reason::TOPIC_FILTER_INVALID;
            continue;
        }
        let parsed = match parse_filter(&f.filter) {
            Ok(p) => p,
            Err(_) => {
                pending.codes[i] = reason::TOPIC_FILTER_INVALID;
                continue;
            }
        };
        if denied(w, &f.filter) {
            // 0x80, not 0x87: the Paho suite (and v3.1.1 clients) expect it.
            pending.codes[i] = reason::UNSPECIFIED;
            continue;
        }
        let share = parsed.share.map(Arc::from);
        let key = SubKey { realm: realm.clone(), topic: parsed.topic, policy: parsed.policy, share };
        let granted = f.qos.min(2);
        pending.codes[i] = granted;
        let s = &mut w.mqtt.sessions[slot];
        let full = s.subs.len() >= w.cfg.mqtt.max_subscriptions;
        let existing = s.subs.iter_mut().find(|x| x.filter == f.filter);
        let is_new = existing.is_none();
        // Shared subscriptions get no retained values (MQTT 5, 4.8.2).
        if key.share.is_none() && (f.retain_handling == 0 || (f.retain_handling == 1 && is_new)) {
            pending.retained.push(f.filter.clone());
        }
        match existing {
            Some(sub) => {
                // Same filter again: the new options replace the old.
                sub.opts = f;
                sub.id = id;
            }
            None if full => {
                pending.codes[i] = reason::QUOTA_EXCEEDED;
                pending.retained.retain(|x| *x != f.filter);
            }
            None => {
                s.subs.push(Sub { filter: f.filter.clone(), key: key.clone(), subscription: 0, opts: f, id });
                let request = (u64::from(pkid) << 16) | i as u64;
                match w.subscribe(Member::Mqtt(slot), sid, key.clone(), request, started) {
                    Subscribed::Now(sub) => {
                        set_subscription(w, slot, &key, sub);
                    }
                    Subscribed::Later => pending.waiting += 1,
                }
            }
        }
    }
    if pending.waiting == 0 {
        finish_suback(w, slot, pending);
    } else {
        // Nothing after this SUBSCRIBE is read until it is in effect on every
        // worker: a PUBLISH that follows it on this connection must reach it.
        w.mqtt.sessions[slot].subacks.push(pending);
        w.conns[handle].paused = true;
    }
}

/// Reads input again after a pause.
fn unpause(w: &mut Worker, handle: usize) {
    if !w.conns.get(handle).is_some_and(|c| c.paused) {
        return;
    }
    w.conns[handle].paused = false;
    if mqtt(w, handle).is_some_and(|m| m.ws) {
        drain_ws(w, handle);
    } else {
        w.resume_reading(handle);
    }
}

fn denied(w: &Worker, filter: &str) -> bool {
    w.cfg.mqtt.deny_subscribe.iter().any(|d| {
        d == filter
            || parse_filter(d).is_ok_and(|p| {
                p.policy == crate::router::MatchPolicy::Filter
                    && super::topic::filter_matches(&super::topic::filter_parts(&p.topic), &swap(filter))
            })
    })
}

/// The core's answer to a subscribe of this session.
pub fn subscribed(w: &mut Worker, slot: usize, request: u64, key: &SubKey, subscription: u64) {
    if !set_subscription(w, slot, key, subscription) {
        // Unsubscribed meanwhile.
        w.unsubscribe(Member::Mqtt(slot), subscription);
    }
    if request & RESTORE != 0 {
        let Some(r) = &mut w.mqtt.sessions[slot].restoring else { return };
        r.waiting = r.waiting.saturating_sub(1);
        if r.waiting == 0 {
            handoff_done(w, slot);
        }
        return;
    }
    let pkid = (request >> 16) as u16;
    let s = &mut w.mqtt.sessions[slot];
    let Some(i) = s.subacks.iter().position(|p| p.pkid == pkid) else { return };
    s.subacks[i].waiting -= 1;
    if s.subacks[i].waiting == 0 {
        let pending = s.subacks.remove(i);
        finish_suback(w, slot, pending);
    }
}

fn finish_suback(w: &mut Worker, slot: usize, pending: PendingSuback) {
    let s = &w.mqtt.sessions[slot];
    let Some(h) = s.conn else { return };
    let ver = s.version;
    send(w, h, codec::suback(ver, pending.pkid, &pending.codes));
    w.metrics.record(Op::Subscribe, pending.started, Instant::now());
    if w.mqtt.sessions[slot].subacks.is_empty() {
        unpause(w, h);
    }
    for filter in pending.retained {
        let s = &w.mqtt.sessions[slot];
        let Some(sub) = s.subs.iter().find(|x| x.filter == filter && x.subscription != 0) else { continue };
        let reply = RetainedReply {
            worker: w.id,
            member: Member::Mqtt(slot),
            session: s.id,
            subscription: sub.subscription,
            policy: sub.key.policy,
        };
        let (realm, pattern) = (sub.key.realm.clone(), sub.key.topic.clone());
        w.query_retained(realm, pattern, reply);
    }
}

/// Retained values for one subscription of this session.
pub fn on_retained(w: &mut Worker, slot: usize, session: u64, subscription: u64, values: Vec<Arc<Publication>>) {
    if w.mqtt.by_id.get(&session) != Some(&slot) {
        return;
    }
    let s = &w.mqtt.sessions[slot];
    let Some(sub) = s.subs.iter().find(|x| x.subscription == subscription) else { return };
    let (qos, ids) = (sub.opts.qos, sub.id.into_iter().collect::<Vec<u32>>());
    for p in values {
        if p.expired(w.now) {
            continue;
        }
        let out = Outgoing { qos: p.qos.min(qos), retain: true, sub_ids: ids.clone(), msg: p };
        match w.mqtt.sessions[slot].moving {
            Some((to, session)) => w.peers.send(to, ShardMsg::Mqtt(Msg::Forward { session, out: Box::new(out) })),
            None => offer_recorded(w, slot, out, &mut Converted::default()),
        }
    }
}

fn unsubscribe(w: &mut Worker, handle: usize, slot: usize, pkid: u16, filters: Vec<String>) {
    let ver = version(w, handle);
    let mut codes = Vec::with_capacity(filters.len());
    for f in filters {
        if parse_filter(&f).is_err() {
            // (3.1.1 has no UNSUBACK codes: it is acknowledged.)
            codes.push(reason::TOPIC_FILTER_INVALID);
            continue;
        }
        let s = &mut w.mqtt.sessions[slot];
        match s.subs.iter().position(|x| x.filter == f) {
            Some(i) => {
                let sub = s.subs.swap_remove(i);
                if sub.subscription != 0 {
                    w.unsubscribe(Member::Mqtt(slot), sub.subscription);
                }
                codes.push(reason::SUCCESS);
            }
            None => codes.push(reason::NO_SUBSCRIPTION_EXISTED),
        }
    }
    send(w, handle, codec::unsuback(ver, pkid, &codes));
}
