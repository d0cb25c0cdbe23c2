//! WAMP sessions: turns decoded WAMP messages into core operations and core
//! completions into WAMP messages. Owns the per-session state (open
//! subscriptions, registrations, calls in flight as caller and as callee).
//!
//! This file holds the state, framing, HELLO / GOODBYE / ABORT and the
//! dispatch of every message; the roles live beside it:
//! - `session/broker.rs`: PUBLISH, SUBSCRIBE, UNSUBSCRIBE, EVENT encoding;
//! - `session/dealer.rs`: REGISTER, UNREGISTER, CALL, INVOCATION, YIELD.
//!
//! They are child modules, sharing this file's private state and helpers
//! (`send`, `error`, `violation`, `session`, ...).

use super::message::{self as m, decode, encode, encode_fields, Field, Msg, Serializer};
use super::uri::{short_enough, valid_pattern, valid_uri};
use crate::auth::rules::Action;
use crate::config::{Disclose, SlowPolicy};
use crate::conn::Frame;
use crate::metrics::{CloseReason, Op};
use crate::mqtt::session::Converted;
use crate::payload::Payload;
use crate::rawsocket;
use crate::router::owner::Outbox;
use crate::router::procs::InvokePolicy;
use crate::router::{
    owner_of, Body, CallDone, CallOutcome, Identity, Interruption, Invoke, KeyWrite, MatchPolicy, Member, Publication,
    Realm, Receivers, RegRelease, RegRequest, RetainedReply, SessionRef, ShardMsg, SubKey,
};
use crate::value::{dict_get, Dict, Value};
use crate::worker::core::{PendingAck, Subscribed};
use crate::worker::Shard;
use crate::ws::frame::{self, Opcode, MAX_HEADER};
use ahash::AHashMap;
use bytes::Bytes;
use rand::Rng;
use std::time::Instant;

mod auth;
mod authorizer;
mod broker;
mod dealer;
mod meta;

use broker::*;
use dealer::*;

pub use auth::{Asking, Throttle, CLUSTER_UNAVAILABLE, FAIL_BUDGET, FAIL_WINDOW};
pub(crate) use authorizer::{read_answer as read_decision, router_call as authorizer_call};
pub use authorizer::{Decision, DecisionCache, Parked, ROUTER_CALLER};
pub use broker::{
    event_for, expire_replays, on_history, on_retained, on_stored, replays_without, subscribed, EventCache,
};
pub use dealer::{
    expire_calls, on_call_done, on_caller_gone, on_interrupt, on_invoke, on_node_lost, on_picked, registered, InCall,
    LocalReg, OutCall, RegResult,
};
pub use meta::{
    expire_gathers, gathers_without, on_meta_answer, on_meta_query, on_revoke, reg_deleted, sub_created, sub_deleted,
    Gathering,
};

/// How a connection's WAMP messages are framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    WebSocket,
    /// WAMP over RawSocket; the client takes messages of at most `max_out` octets.
    RawSocket {
        max_out: usize,
    },
}

impl Framing {
    /// Index into per-framing caches.
    fn index(self) -> usize {
        match self {
            Framing::WebSocket => 0,
            Framing::RawSocket { .. } => 1,
        }
    }

    /// Whether a framed message can go to this peer (RawSocket: its limit).
    fn fits(self, framed: &[u8]) -> bool {
        match self {
            Framing::WebSocket => true,
            Framing::RawSocket { max_out } => framed.len() - 4 <= max_out,
        }
    }
}

/// The WAMP state of one connection (WebSocket or RawSocket).
pub struct WampConn {
    pub ser: Serializer,
    pub framing: Framing,
    /// `None` until HELLO is accepted, and again after GOODBYE.
    pub session: Option<WampSession>,
    /// The router ended the session with GOODBYE (`wamp.session.kill`):
    /// the client's GOODBYE reply is expected.
    goodbye_sent: bool,
    /// A HELLO challenged, waiting for AUTHENTICATE.
    auth: Option<Box<auth::PendingAuth>>,
}

// Every WAMP connection holds one, idle or not (perf/RESULTS.md, idle
// sessions): state only some sessions need goes in `WampSession::busy`.
const _: () = assert!(std::mem::size_of::<WampConn>() <= 256, "keep what idle sessions do not use out of WampConn");

impl WampConn {
    pub fn new(ser: Serializer, framing: Framing) -> WampConn {
        WampConn { ser, framing, session: None, goodbye_sent: false, auth: None }
    }
}

pub struct WampSession {
    pub id: u64,
    pub realm: Realm,
    /// Who it is, as disclosed.
    authid: String,
    /// Shared with the shard's other sessions of the role (`Shard::shared_name`).
    authrole: std::sync::Arc<str>,
    authmethod: crate::auth::Method,
    authprovider: &'static str,
    /// What its role may do; `None`: the realm has no roles (everything).
    rules: Option<std::sync::Arc<crate::auth::rules::RoleRules>>,
    /// Realm NUL role: its key in the authorizer's decision cache, made
    /// when a role with an authorizer first asks (`authz_key`).
    authz_key: Option<std::sync::Arc<str>>,
    /// The dynamic authorizer's decision for the message being handled.
    decided: Option<authorizer::Decision>,
    /// The realm's disclosure policy.
    disclose: Disclose,
    slow: SlowPolicy,
    /// Subscription IDs (a session rarely has many).
    subs: Vec<u64>,
    regs: Vec<LocalReg>,
    /// The caller announced `progressive_call_invocations`.
    progressive_calls: bool,
    /// The callee announced `call_canceling`: it is sent INTERRUPT.
    call_canceling: bool,
    /// The callee announced `progressive_call_invocations`.
    progressive_invocations: bool,
    /// The peer announced `payload_passthru_mode` (in any role).
    ppt: bool,
    /// What only a session that calls, is called, asks for retained or
    /// replayed events or leaves testaments or keys needs: made on first
    /// use (`busy`), so an idle session allocates none of it.
    busy: Option<Box<Busy>>,
    /// The last topic or procedure this session published to or called
    /// that `uri_ok` passed (`concrete_uri_ok`); empty at first.
    last_uri: String,
    /// When it opened (the admin listener shows its age).
    opened: Instant,
    /// The callee announced `registration_revocation`: it is told with UNREGISTERED.
    revocation: bool,
}

/// A session's calls, invocations, pending SUBSCRIBE options, replays,
/// testaments and keys (`WampSession::busy`).
#[derive(Default)]
struct Busy {
    /// Calls in flight as caller, by request ID.
    calls: AHashMap<u64, OutCall>,
    /// Request IDs of the last calls that ended while their caller was still
    /// sending progressive input: a late continuation is ignored.
    ended_inputs: std::collections::VecDeque<u64>,
    /// Invocations in flight as callee, by invocation ID.
    invocations: AHashMap<u64, InCall>,
    /// Invocations still taking progressive input: the caller's
    /// (session, request) -> invocation ID.
    open_inputs: AHashMap<(SessionRef, u64), u64>,
    next_invocation: u64,
    /// SUBSCRIBE requests in progress that asked for retained events.
    want_retained: Vec<u64>,
    /// SUBSCRIBE requests in progress with `after` (request, publication).
    want_after: Vec<(u64, u64)>,
    /// Subscriptions replaying their history (`after`): live events wait.
    replays: Vec<broker::Replay>,
    /// Published when the session ends (at most `meta::MAX_TESTAMENTS`).
    testaments: Vec<meta::Testament>,
    /// Retained keys this session has a `will` or a waiting (`watch`)
    /// publish on: their owners are told when it ends.
    keys: Vec<(Realm, String)>,
}

impl WampSession {
    /// The session's key in the dynamic authorizer's decision cache.
    fn authz_key(&mut self) -> std::sync::Arc<str> {
        let (realm, role) = (&self.realm, &self.authrole);
        self.authz_key.get_or_insert_with(|| format!("{realm}\0{role}").into()).clone()
    }

    /// The session's `Busy` state, made on first use. Paths that only
    /// read it take `busy.as_deref()` instead, and allocate nothing.
    fn busy(&mut self) -> &mut Busy {
        self.busy.get_or_insert_with(Box::default)
    }
}

fn opcode(ser: Serializer) -> Opcode {
    match ser {
        Serializer::Json => Opcode::Text,
        Serializer::MsgPack | Serializer::Cbor => Opcode::Binary,
    }
}

/// Encodes and frames a message in one buffer: the payload is written after
/// room for the largest header, then the header (WebSocket, or the 4-octet
/// RawSocket prefix) is written right before it.
pub fn frame_fields(ser: Serializer, framing: Framing, fields: &[Field]) -> Bytes {
    let mut buf = Vec::with_capacity(128);
    let start = frame_fields_into(ser, framing, fields, &mut buf);
    Bytes::from(buf).slice(start..)
}

/// `frame_fields` into `buf` (cleared first, its memory reused); the frame
/// is `buf[start..]`, and `start` is returned.
pub fn frame_fields_into(ser: Serializer, framing: Framing, fields: &[Field], buf: &mut Vec<u8>) -> usize {
    buf.clear();
    buf.resize(MAX_HEADER, 0);
    encode_fields(ser, fields, buf);
    finish_frame(ser, framing, buf)
}

fn frame_msg_into(ser: Serializer, framing: Framing, msg: &Msg, buf: &mut Vec<u8>) -> usize {
    buf.clear();
    buf.resize(MAX_HEADER, 0);
    encode(ser, msg, buf);
    finish_frame(ser, framing, buf)
}

fn frame_msg(ser: Serializer, framing: Framing, msg: &Msg) -> Bytes {
    let mut buf = Vec::with_capacity(128);
    let start = frame_msg_into(ser, framing, msg, &mut buf);
    Bytes::from(buf).slice(start..)
}

/// Writes the header before the message encoded after `MAX_HEADER` bytes of
/// room; returns where the frame starts.
fn finish_frame(ser: Serializer, framing: Framing, buf: &mut [u8]) -> usize {
    let len = buf.len() - MAX_HEADER;
    match framing {
        Framing::WebSocket => frame::header_into(&mut buf[..MAX_HEADER], opcode(ser), len),
        Framing::RawSocket { .. } => {
            // A message over 2^24 octets has no prefix; `fits` refuses it.
            let prefix = rawsocket::prefix(rawsocket::Kind::Message, len.min(rawsocket::MAX_LENGTH));
            buf[MAX_HEADER - 4..MAX_HEADER].copy_from_slice(&prefix);
            MAX_HEADER - 4
        }
    }
}

/// Queues a reply. One that a RawSocket client cannot take (over the
/// length it asked for) ends the connection: the transport cannot carry it.
///
/// The reply is framed in the shard's `frame_buf`: a small one is copied
/// from there into the queue (no allocation), a large one takes the buffer
/// with it (no copy).
fn send(w: &mut Shard, handle: usize, msg: &Msg) {
    let Some((ser, framing)) = w.conns[handle].wamp().map(|c| (c.ser, c.framing)) else { return };
    let mut buf = std::mem::take(&mut w.frame_buf);
    let start = frame_msg_into(ser, framing, msg, &mut buf);
    if !framing.fits(&buf[start..]) {
        w.frame_buf = buf;
        return w.close(handle, CloseReason::ProtocolViolation, None);
    }
    if buf.len() - start <= crate::conn::COPY_MAX {
        w.send_frame(handle, Frame::Slice(&buf[start..]));
        w.frame_buf = buf;
    } else {
        w.send_bytes(handle, Bytes::from(buf).slice(start..));
    }
}

fn error(w: &mut Shard, handle: usize, request_type: u64, request: u64, error: &str, message: Option<String>) {
    let payload = Payload::new(message.map(|t| vec![Value::Str(t)]), None);
    let msg = Msg::Error { request_type, request, details: Dict::new(), error: error.to_owned(), payload };
    send(w, handle, &msg);
}

/// Sends ABORT and closes the connection.
fn abort(w: &mut Shard, handle: usize, reason: &str, message: &str, why: CloseReason) {
    let details = vec![("message".to_owned(), Value::Str(message.to_owned()))];
    send(w, handle, &Msg::Abort { details, reason: reason.to_owned() });
    let code = if why == CloseReason::ProtocolViolation { frame::CLOSE_PROTOCOL_ERROR } else { frame::CLOSE_NORMAL };
    w.close(handle, why, Some((code, reason)));
}

fn violation(w: &mut Shard, handle: usize, message: &str) {
    abort(w, handle, "wamp.error.protocol_violation", message, CloseReason::ProtocolViolation);
}

fn session(w: &mut Shard, handle: usize) -> &mut WampSession {
    w.conns[handle].wamp().and_then(|c| c.session.as_mut()).expect("open WAMP session")
}

/// A boolean option: absent is `None`; any other type is a protocol violation.
fn bool_opt(d: &Dict, key: &str) -> Result<Option<bool>, String> {
    match dict_get(d, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(format!("option '{key}' must be a boolean")),
    }
}

/// The session's identity if it is to be disclosed: asked for with
/// `disclose_me` (or by the other side: `wanted`, a callee's
/// `disclose_caller`), as the realm allows (`Err`: a protocol violation, or
/// the realm forbids what was asked).
/// What the session's role allows for `uri` (everything in a realm
/// without roles).
fn perms(s: &WampSession, uri: &str) -> crate::auth::rules::Perms {
    use crate::auth::rules::Perms;
    match &s.rules {
        None => Perms::ALL,
        // A dynamic role: what the authorizer decided for this message.
        Some(r) if r.authorizer.is_some() => s.decided.map_or(Perms::default(), |d| Perms {
            call: d.allow,
            register: d.allow,
            publish: d.allow,
            subscribe: d.allow,
            disclose_caller: d.disclose,
            disclose_publisher: d.disclose,
        }),
        Some(r) => r.lookup(uri),
    }
}

/// Whether the session's role allows `action` on `uri`; if not, the
/// request gets ERROR `wamp.error.not_authorized` (a PUBLISH only if it
/// asked for an acknowledgement) and the session goes on.
fn authorized(
    w: &mut Shard,
    handle: usize,
    action: crate::auth::rules::Action,
    uri: &str,
    request_type: u64,
    request: u64,
    answer: bool,
) -> bool {
    let s = session(w, handle);
    if perms(s, uri).allows(action) {
        return true;
    }
    if answer {
        let text = format!("role '{}' may not {} '{uri}'", s.authrole, action.name());
        error(w, handle, request_type, request, "wamp.error.not_authorized", Some(text));
    }
    false
}

/// The identity to disclose, if any: as asked (`disclose_me`), as the
/// callee wants (`wanted`), as the role forces (`forced`), within the
/// realm's policy.
fn disclosed(
    s: &WampSession,
    options: &Dict,
    wanted: bool,
    forced: bool,
) -> Result<Option<Box<Identity>>, DiscloseError> {
    let asked = bool_opt(options, "disclose_me").map_err(DiscloseError::Violation)?.unwrap_or(false);
    let disclose = match s.disclose {
        Disclose::Allow => asked || wanted || forced,
        Disclose::Force => true,
        Disclose::Forbid if asked => return Err(DiscloseError::Forbidden),
        Disclose::Forbid => false,
    };
    Ok(disclose
        .then(|| Box::new(Identity { session: s.id, authid: s.authid.clone(), authrole: s.authrole.to_string() })))
}

enum DiscloseError {
    Violation(String),
    Forbidden,
}

const DISCLOSE_FORBIDDEN: &str = "wamp.error.option_disallowed.disclose_me";

/// The payload passthru options a message may carry.
const PPT_KEYS: [&str; 4] = ["ppt_scheme", "ppt_serializer", "ppt_cipher", "ppt_keyid"];

/// A PUBLISH, CALL or YIELD's payload passthru options: `None` when
/// `ppt_scheme` is absent (the mode is off). The payload itself is passed
/// on as it came, never interpreted. `Err` (a protocol violation): a peer
/// that did not announce `payload_passthru_mode`, a value that is not a
/// string, or `ppt_*` options without `ppt_scheme`.
fn ppt_options(s: &WampSession, options: &Dict) -> Result<Option<Box<Dict>>, String> {
    if !options.iter().any(|(k, _)| k.starts_with("ppt_")) {
        return Ok(None);
    }
    let mut ppt = Dict::new();
    for key in PPT_KEYS {
        match dict_get(options, key) {
            None => {}
            Some(Value::Str(v)) if !v.is_empty() => ppt.push((key.to_owned(), Value::Str(v.clone()))),
            Some(_) => return Err(format!("option '{key}' must be a non-empty string")),
        }
    }
    if dict_get(options, "ppt_scheme").is_none() {
        return Err("payload passthru options without ppt_scheme".into());
    }
    if !s.ppt {
        return Err("payload passthru options, but the peer did not announce payload_passthru_mode".into());
    }
    Ok(Some(Box::new(ppt)))
}

/// Adds an identity to EVENT or INVOCATION details (`publisher`,
/// `publisher_authid`, ... with `role` "publisher" or "caller").
fn identity_details(details: &mut Dict, role: &str, who: &Identity) {
    details.push((role.to_owned(), Value::UInt(who.session)));
    details.push((format!("{role}_authid"), Value::Str(who.authid.clone())));
    details.push((format!("{role}_authrole"), Value::Str(who.authrole.clone())));
}

/// A concrete URI (topic, procedure) within the router's rules and bounds.
fn uri_ok(w: &Shard, uri: &str) -> bool {
    valid_uri(uri, w.cfg.uri_check) && short_enough(uri, w.cfg.limits.max_uri_components)
}

/// `uri_ok` for a PUBLISH's topic or a CALL's procedure: a session that
/// uses the same URI as last time is not checked again.
fn concrete_uri_ok(w: &mut Shard, handle: usize, uri: &str) -> bool {
    if session(w, handle).last_uri == uri {
        return true;
    }
    if !uri_ok(w, uri) {
        return false;
    }
    let s = session(w, handle);
    s.last_uri.clear();
    s.last_uri.push_str(uri);
    true
}

/// A subscription or registration pattern within the rules and bounds.
fn pattern_ok(w: &Shard, uri: &str, policy: MatchPolicy) -> bool {
    valid_pattern(uri, policy, w.cfg.uri_check) && short_enough(uri, w.cfg.limits.max_uri_components)
}

/// An option naming a policy (`match`, `invoke`): absent is `default`; a
/// name `parse` does not know is `Err(Some(message))`, to be answered with
/// `wamp.error.invalid_argument`; another type is `Err(None)`, a protocol
/// violation.
fn policy_opt<T>(
    options: &Dict,
    key: &str,
    default: T,
    parse: impl Fn(&str) -> Option<T>,
    names: &str,
) -> Result<T, Option<String>> {
    match dict_get(options, key) {
        None => Ok(default),
        Some(Value::Str(p)) => parse(p).ok_or_else(|| Some(format!("unknown {key} policy '{p}' ({names})"))),
        Some(_) => Err(None),
    }
}

fn request_ok(id: u64) -> bool {
    (1..=m::MAX_ID).contains(&id)
}

/// One WebSocket message from the client.
pub fn on_message(w: &mut Shard, handle: usize, bytes: &[u8]) {
    let Some(conn) = w.conns[handle].wamp() else { return };
    let ser = conn.ser;
    let open = conn.session.is_some();
    let msg = match decode(ser, bytes) {
        Ok(msg) => msg,
        Err(e) => return violation(w, handle, &e.0),
    };
    let conn = w.conns[handle].wamp().expect("wamp");
    if !open {
        let challenged = conn.auth.is_some();
        return match msg {
            Msg::Hello { .. } if challenged => violation(w, handle, "HELLO while authenticating"),
            Msg::Hello { realm, details } => auth::hello(w, handle, realm, details),
            Msg::Authenticate { signature, extra } => auth::authenticate(w, handle, signature, extra),
            // The reply to the router's GOODBYE (a killed session).
            Msg::Goodbye { .. } if conn.goodbye_sent => conn.goodbye_sent = false,
            Msg::Abort { .. } => w.close(handle, CloseReason::Client, Some((frame::CLOSE_NORMAL, ""))),
            other => violation(w, handle, &format!("{} before HELLO", name(&other))),
        };
    }
    // Latencies run on the loop's clock, read once per iteration.
    let started = w.now;
    // A role with a dynamic authorizer: decided from the cache, or parked.
    let Some(msg) = authorizer::admit(w, handle, msg) else { return };
    dispatch(w, handle, msg, started);
}

/// One message of an open session (`on_message`, or a parked one the
/// authorizer let through).
fn dispatch(w: &mut Shard, handle: usize, msg: Msg, started: Instant) {
    match msg {
        Msg::Hello { .. } => violation(w, handle, "HELLO on an open session"),
        Msg::Goodbye { .. } => {
            send(w, handle, &Msg::Goodbye { details: Dict::new(), reason: "wamp.close.goodbye_and_out".into() });
            let conn = w.conns[handle].wamp().expect("wamp");
            let s = conn.session.take().expect("open");
            end_session(w, handle, s, CloseReason::Client);
        }
        Msg::Abort { .. } => w.close(handle, CloseReason::Client, Some((frame::CLOSE_NORMAL, ""))),
        Msg::Publish { request, options, topic, payload } => {
            publish(w, handle, request, options, topic, payload, started)
        }
        Msg::Subscribe { request, options, topic } => subscribe(w, handle, request, options, topic, started),
        Msg::Unsubscribe { request, subscription } => unsubscribe(w, handle, request, subscription),
        Msg::Call { request, options, procedure, payload } => {
            call(w, handle, request, options, procedure, payload, started)
        }
        Msg::Register { request, options, procedure } => register(w, handle, request, options, procedure, started),
        Msg::Unregister { request, registration } => unregister(w, handle, request, registration),
        Msg::Yield { request, options, payload } => yielded(w, handle, request, options, payload),
        Msg::Cancel { request, options } => cancel(w, handle, request, options),
        Msg::Error { request_type: m::INVOCATION, request, details, error, payload } => {
            if !valid_uri(&error, w.cfg.uri_check) {
                return violation(w, handle, &format!("invalid error URI '{error}'"));
            }
            callee_done(w, handle, request, CallOutcome::Error { error, details, payload })
        }
        other => violation(w, handle, &format!("{} is not a message a client sends", name(&other))),
    }
    if let Some(s) = w.conns.get_mut(handle).and_then(|c| c.wamp()).and_then(|c| c.session.as_mut()) {
        s.decided = None;
    }
}

fn name(msg: &Msg) -> &'static str {
    match msg {
        Msg::Hello { .. } => "HELLO",
        Msg::Welcome { .. } => "WELCOME",
        Msg::Abort { .. } => "ABORT",
        Msg::Challenge { .. } => "CHALLENGE",
        Msg::Authenticate { .. } => "AUTHENTICATE",
        Msg::Goodbye { .. } => "GOODBYE",
        Msg::Error { .. } => "ERROR",
        Msg::Publish { .. } => "PUBLISH",
        Msg::Published { .. } => "PUBLISHED",
        Msg::Subscribe { .. } => "SUBSCRIBE",
        Msg::Subscribed { .. } => "SUBSCRIBED",
        Msg::Unsubscribe { .. } => "UNSUBSCRIBE",
        Msg::Unsubscribed { .. } => "UNSUBSCRIBED",
        Msg::Event { .. } => "EVENT",
        Msg::Call { .. } => "CALL",
        Msg::Result { .. } => "RESULT",
        Msg::Register { .. } => "REGISTER",
        Msg::Registered { .. } => "REGISTERED",
        Msg::Unregister { .. } => "UNREGISTER",
        Msg::Unregistered { .. } => "UNREGISTERED",
        Msg::Invocation { .. } => "INVOCATION",
        Msg::Yield { .. } => "YIELD",
        Msg::Interrupt { .. } => "INTERRUPT",
        Msg::Cancel { .. } => "CANCEL",
    }
}

/// The roles and features announced in WELCOME: exactly what works.
fn router_roles() -> Value {
    let features = |list: &[&str]| {
        let f: Dict = list.iter().map(|k| ((*k).to_owned(), Value::Bool(true))).collect();
        Value::Dict(vec![("features".into(), Value::Dict(f))])
    };
    Value::Dict(vec![
        (
            "broker".into(),
            features(&[
                "publisher_exclusion",
                "pattern_based_subscription",
                "publisher_identification",
                "subscriber_blackwhite_listing",
                "payload_passthru_mode",
                "event_history",
                "session_meta_api",
                "subscription_meta_api",
            ]),
        ),
        (
            "dealer".into(),
            features(&[
                "progressive_call_results",
                "caller_identification",
                "call_timeout",
                "call_canceling",
                "progressive_call_invocations",
                "payload_passthru_mode",
                "pattern_based_registration",
                "shared_registration",
                "session_meta_api",
                "registration_meta_api",
                "registration_revocation",
                "testament_meta_api",
            ]),
        ),
    ])
}

/// What the admin listener shows of the session on `handle`, if it has
/// one open (`peer` filled in by the caller).
pub fn inspect(w: &Shard, handle: usize, conn: &WampConn) -> Option<crate::inspect::SessionInfo> {
    let s = conn.session.as_ref()?;
    let c = &w.conns[handle];
    Some(crate::inspect::SessionInfo {
        id: s.id,
        protocol: "wamp",
        realm: s.realm.to_string(),
        authid: s.authid.clone(),
        authrole: s.authrole.to_string(),
        peer: None,
        online: true,
        queued_bytes: c.out.bytes(),
        queued_messages: c.out.messages(),
        age_s: w.now.saturating_duration_since(s.opened).as_secs(),
        subscriptions: s.subs.len(),
        messages_in: c.stats.msgs_in,
        messages_out: c.stats.msgs_out,
        dropped: c.stats.dropped,
        slow: c.over_since.is_some(),
    })
}

/// The admin listener's kill: GOODBYE `wamp.close.killed`.
pub fn kill_by_admin(w: &mut Shard, handle: usize) {
    meta::kill(w, handle, "wamp.close.killed", Some("killed by the router's operator"));
}

/// The connection's peer address, for the log.
pub(crate) fn conn_peer(w: &Shard, handle: usize) -> String {
    match w.conns.get(handle).and_then(|c| c.peer) {
        Some(a) => format!("from {a}"),
        None => "not over a socket".into(),
    }
}

/// Whether HELLO details announce `roles.<role>.features.<feature>: true`.
fn announces(details: &Dict, role: &str, feature: &str) -> bool {
    dict_get(details, "roles")
        .and_then(Value::as_dict)
        .and_then(|roles| dict_get(roles, role))
        .and_then(Value::as_dict)
        .and_then(|r| dict_get(r, "features"))
        .and_then(Value::as_dict)
        .and_then(|f| dict_get(f, feature))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Opens the session of a HELLO that passed authentication.
fn open_session(
    w: &mut Shard,
    handle: usize,
    realm_cfg: &crate::config::RealmConfig,
    details: Dict,
    who: auth::Identity,
    started: Instant,
) {
    let realm = w.shared_name(&realm_cfg.name);
    let mut id = rand::thread_rng().gen_range(1..=m::MAX_ID);
    while w.sessions.contains_key(&id) {
        id = rand::thread_rng().gen_range(1..=m::MAX_ID);
    }
    let slow = realm_cfg.slow_consumer.unwrap_or(w.cfg.limits.slow_consumer);
    let authid = if who.method == crate::auth::Method::Anonymous { format!("anonymous-{id}") } else { who.authid };
    let rules = realm_cfg.auth.rules_of(&who.authrole);
    let authrole = w.shared_name(&who.authrole);
    let conn = w.conns[handle].wamp().expect("wamp");
    conn.session = Some(WampSession {
        id,
        realm: realm.clone(),
        authid: authid.clone(),
        authrole,
        authmethod: who.method,
        authprovider: who.provider,
        rules,
        authz_key: None,
        decided: None,
        disclose: realm_cfg.disclose,
        slow,
        subs: Vec::new(),
        regs: Vec::new(),
        progressive_calls: announces(&details, "caller", "progressive_call_invocations"),
        call_canceling: announces(&details, "callee", "call_canceling"),
        progressive_invocations: announces(&details, "callee", "progressive_call_invocations"),
        ppt: ["publisher", "subscriber", "caller", "callee"]
            .iter()
            .any(|role| announces(&details, role, "payload_passthru_mode")),
        busy: None,
        last_uri: String::new(),
        opened: w.now,
        revocation: announces(&details, "callee", "registration_revocation"),
    });
    conn.goodbye_sent = false;
    w.sessions.insert(id, handle);
    w.metrics.sessions += 1;
    w.metrics.counters.sessions_opened += 1;
    if log::log_enabled!(log::Level::Debug) {
        let peer = conn_peer(w, handle);
        let me = w.id;
        let s = session(w, handle);
        log::debug!(
            "worker {me}: WAMP session {id} opened in realm '{realm}' (authid '{}', role '{}', {peer})",
            s.authid,
            s.authrole
        );
    }
    let details = vec![
        ("realm".into(), Value::Str(realm.to_string())),
        ("authid".into(), Value::Str(authid)),
        ("authrole".into(), Value::Str(who.authrole)),
        ("authmethod".into(), Value::Str(who.method.name().into())),
        ("authprovider".into(), Value::Str(who.provider.into())),
        ("agent".into(), Value::Str(concat!("fennec-", env!("CARGO_PKG_VERSION")).into())),
        ("roles".into(), router_roles()),
    ];
    send(w, handle, &Msg::Welcome { session: id, details });
    w.metrics.record(Op::SessionOpen, started, Instant::now());
    meta::joined(w, handle, &realm);
}

/// Cleans up a session on every shard. The connection may stay (GOODBYE) or go.
fn end_session(w: &mut Shard, handle: usize, mut s: WampSession, reason: CloseReason) {
    log::debug!("worker {}: WAMP session {} closed: {}", w.id, s.id, reason.name());
    let close = crate::inspect::CloseInfo {
        session: s.id,
        protocol: "wamp",
        realm: s.realm.to_string(),
        authid: s.authid.clone(),
        reason: reason.name(),
        at_ms: crate::router::unix_millis(),
    };
    crate::inspect::note_close(w, close);
    let stats = w.conns.get_mut(handle).map(|c| std::mem::take(&mut c.stats)).unwrap_or_default();
    crate::inspect::fold_stats(w, &s.realm, stats, reason);
    w.sessions.remove(&s.id);
    w.metrics.sessions -= 1;
    w.metrics.closed(reason);
    meta::publish_testaments(w, &mut s);
    // Acknowledgements it still waits for (a parked `watch`, a store
    // commit) will find no session: forget them now, as its parked
    // writes are dropped at their owners.
    if !w.pending_acks.is_empty() {
        w.pending_acks.retain(|_, a| !matches!(a.ack, PendingAck::Wamp { session, .. } if session == s.id));
    }
    let busy = s.busy.take().map(|b| *b).unwrap_or_default();
    let me = SessionRef { worker: w.id, id: s.id };
    for (realm, topic) in busy.keys {
        let owner = owner_of(&realm, &topic, w.workers);
        w.peers.send(owner, ShardMsg::KeySessionGone { realm, topic, session: me });
    }
    meta::left(w, &s);
    for &sub in &s.subs {
        meta::unsubscribe(w, handle, s.id, sub);
    }
    for reg in s.regs {
        let registration = reg.registration;
        release_reg(w, &s.realm, s.id, reg);
        meta::unregistered(w, &s.realm, s.id, registration);
    }
    for (_, InCall { caller, request, .. }) in busy.invocations {
        let outcome = CallOutcome::Error {
            error: "wamp.error.canceled".into(),
            details: Dict::new(),
            payload: Payload::args(vec![Value::Str("callee left before answering".into())]),
        };
        w.peers.send(caller.worker, ShardMsg::CallDone(Box::new(CallDone { caller: caller.id, request, outcome })));
    }
    let me = SessionRef { worker: w.id, id: s.id };
    let mut told = Vec::new();
    for (request, OutCall { callee, deadline, .. }) in busy.calls {
        if let Some(at) = deadline {
            w.call_deadlines.remove(&(at, s.id, request));
        }
        // (A call still waiting for its callee's pick has no invocation yet.)
        let Some(SessionRef { worker, .. }) = callee else { continue };
        if !told.contains(&worker) {
            told.push(worker);
            w.peers.send(worker, ShardMsg::CallerGone { caller: me });
        }
    }
}

/// The connection is closing: end its session, if any.
pub fn on_close(w: &mut Shard, handle: usize, conn: WampConn, reason: CloseReason) {
    if let Some(s) = conn.session {
        end_session(w, handle, s, reason);
    }
}

/// Whether a slow consumer on `handle` is closed (else its events are dropped).
pub fn closes_when_slow(w: &Shard, handle: usize) -> bool {
    match &w.conns[handle].proto {
        crate::conn::Proto::Wamp(c) => c.session.as_ref().is_none_or(|s| s.slow == SlowPolicy::Close),
        _ => true,
    }
}

/// Server shutdown: say GOODBYE to an open session.
pub fn shutdown(w: &mut Shard, handle: usize) {
    let Some(conn) = w.conns[handle].wamp() else { return };
    if conn.session.is_none() {
        return;
    }
    let (ser, framing) = (conn.ser, conn.framing);
    let bytes =
        frame_msg(ser, framing, &Msg::Goodbye { details: Dict::new(), reason: "wamp.close.system_shutdown".into() });
    // Bypass the queue bound: this is the last message.
    w.conns[handle].out.push(Frame::Shared(&bytes), &mut w.out_pool);
}
