//! The broker: PUBLISH (options, URI checks, `$SYS`, routing), SUBSCRIBE /
//! UNSUBSCRIBE (the core's barrier, then SUBSCRIBED), retained events, and
//! the EVENT encoding cache (one framed EVENT per serializer and framing,
//! shared by every subscriber of a subscription on this worker).

use super::*;
use crate::config::Durability;
use crate::router::history::Replayed;
use crate::router::keys::{canonical, fits, value_of};
use crate::worker::core::{AckOutcome, PendingAck};
use crate::worker::tables::{Divert, Refusal};

pub(super) fn publish(
    w: &mut Shard,
    handle: usize,
    request: u64,
    options: Dict,
    topic: String,
    payload: Payload,
    started: Instant,
) {
    if !request_ok(request) {
        return violation(w, handle, "PUBLISH.Request must be in [1, 2^53]");
    }
    let (acknowledge, exclude_me) = match (bool_opt(&options, "acknowledge"), bool_opt(&options, "exclude_me")) {
        (Ok(a), Ok(e)) => (a.unwrap_or(false), e.unwrap_or(true)),
        (Err(e), _) | (_, Err(e)) => return violation(w, handle, &e),
    };
    // `retain: true`, or `retain: N`: kept for N seconds (0: forever).
    let (retain, ttl) = match dict_get(&options, "retain") {
        None => (false, 0),
        Some(Value::Bool(b)) => (*b, 0),
        Some(Value::UInt(n)) => (true, *n),
        Some(_) => return violation(w, handle, "option 'retain' must be a boolean or a number of seconds"),
    };
    // fox-wamp's `trace`: keep the event in its topic's history.
    let trace = match bool_opt(&options, "trace") {
        Ok(t) => t.unwrap_or(false),
        Err(e) => return violation(w, handle, &e),
    };
    // fox-wamp's key options, for retained publishes only.
    let key = match retain.then(|| key_options(&options)).transpose() {
        Ok(k) => k.flatten(),
        Err(e) => return violation(w, handle, &e),
    };
    if !concrete_uri_ok(w, handle, &topic) {
        if acknowledge {
            error(w, handle, m::PUBLISH, request, "wamp.error.invalid_uri", Some(format!("invalid topic '{topic}'")));
        }
        return;
    }
    if topic.starts_with("wamp.") {
        if acknowledge {
            let text = Some("the wamp. topics are published by the router alone".to_owned());
            error(w, handle, m::PUBLISH, request, "wamp.error.invalid_uri", text);
        }
        return;
    }
    if crate::mqtt::sys::is_sys(&topic) {
        if acknowledge {
            let text = Some("the $SYS topics are published by the router alone".to_owned());
            error(w, handle, m::PUBLISH, request, "wamp.error.not_authorized", text);
        }
        return;
    }
    if !authorized(w, handle, Action::Publish, &topic, m::PUBLISH, request, acknowledge) {
        return;
    }
    let me = w.id;
    let s = session(w, handle);
    let forced = perms(s, &topic).disclose_publisher;
    let disclosed = match disclosed(s, &options, false, forced) {
        Ok(d) => d,
        Err(DiscloseError::Violation(e)) => return violation(w, handle, &e),
        Err(DiscloseError::Forbidden) => {
            if acknowledge {
                let text = Some("this realm does not disclose publishers".to_owned());
                error(w, handle, m::PUBLISH, request, DISCLOSE_FORBIDDEN, text);
            }
            return;
        }
    };
    let receivers = match receivers(&options) {
        Ok(r) => r,
        Err(e) => return violation(w, handle, &e),
    };
    let ppt = match ppt_options(session(w, handle), &options) {
        Ok(p) => p,
        Err(e) => return violation(w, handle, &e),
    };
    let s = session(w, handle);
    let publisher = SessionRef { worker: me, id: s.id };
    let realm = s.realm.clone();
    let id = w.ids.next_id();
    let body = Body::Wamp(payload);
    // `sequence`: the value goes under a new key below the topic.
    let topic = match &key {
        Some(k) if k.sequence => format!("{topic}.{id}"),
        _ => topic,
    };
    let expires = (ttl > 0).then(|| w.now + std::time::Duration::from_secs(ttl.min(u64::from(u32::MAX))));
    let p = Publication {
        realm,
        topic,
        id,
        publisher,
        exclude_me,
        body,
        qos: 0,
        retain,
        props: None,
        expires,
        started,
        disclosed,
        receivers,
        ppt,
        durable_ack: None,
    };
    // A reduced topic or a table's row: PUBLISHED once the reducer has
    // folded it in (or the row is stored), so an acknowledging publisher
    // cannot outrun the reducer.
    let divert = match w.divert(&p) {
        Ok(d) => d,
        Err(refusal) => {
            w.metrics.counters.reduce_failed += u64::from(matches!(refusal, Refusal::Invalid(_)));
            if acknowledge {
                let (uri, why) = match refusal {
                    Refusal::Invalid(why) => ("wamp.error.invalid_argument", why),
                    Refusal::Reserved(why) => ("wamp.error.not_authorized", why),
                };
                error(w, handle, m::PUBLISH, request, uri, Some(why));
            }
            return;
        }
    };
    if let Some(k) = key.filter(|k| k.when.is_some() || k.will.is_some()) {
        if !matches!(divert, Divert::None) {
            // A table's row is the engine's: it has no condition or will.
            let text = Some(format!("'when' and 'will' do not apply to the rows of a table ('{}')", p.topic));
            return error(w, handle, m::PUBLISH, request, "wamp.error.invalid_argument", text);
        }
        return key_write(w, handle, request, acknowledge, p, k, trace);
    }
    let waits = !matches!(divert, Divert::None);
    if acknowledge && (waits || retain && w.cfg.store.durability == Durability::Sync) {
        // PUBLISHED waits until the retained value is on disk.
        let ack = PendingAck::Wamp { handle, session: publisher.id, request, publication: id, acknowledge };
        w.route_decided(p, divert, Some(ack), trace);
        return;
    }
    w.route_decided(p, divert, None, trace);
    if acknowledge {
        send(w, handle, &Msg::Published { request, publication: id });
    }
}

/// fox-wamp's options of a retained PUBLISH.
pub(super) struct KeyOptions {
    /// `when`: the condition (a present `null` included).
    when: Option<Value>,
    watch: bool,
    /// `will` (or `weak: true`, fox-wamp's older `will: null`).
    will: Option<Value>,
    sequence: bool,
}

/// `None` when the PUBLISH has none of them (one pass over the keys).
fn key_options(options: &Dict) -> Result<Option<KeyOptions>, String> {
    let named = |k: &str| matches!(k, "when" | "watch" | "will" | "weak" | "sequence");
    if !options.iter().any(|(k, _)| named(k)) {
        return Ok(None);
    }
    // Present with a null value is not absent here: `when: null` and `will: null` mean something.
    let raw = |key: &str| options.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let weak = bool_opt(options, "weak")?.unwrap_or(false);
    let watch = bool_opt(options, "watch")?.unwrap_or(false);
    let sequence = bool_opt(options, "sequence")?.unwrap_or(false);
    let will = raw("will").or(weak.then_some(Value::Null));
    Ok(Some(KeyOptions { when: raw("when"), watch, will, sequence }))
}

/// A retained PUBLISH with `when` or `will`: decided at the key's owner,
/// which routes the event only if it accepts it. The publisher hears back
/// either way: PUBLISHED (if `acknowledge`), or ERROR
/// `wamp.error.invalid_payload` "not accepted" (always, as fox-wamp does).
fn key_write(
    w: &mut Shard,
    handle: usize,
    request: u64,
    acknowledge: bool,
    p: Publication,
    k: KeyOptions,
    trace: bool,
) {
    let publisher = p.publisher;
    let publication = p.id;
    let owner = owner_of(&p.realm, &p.topic, w.workers);
    if k.will.is_some() || k.watch {
        // The owner hears when this session ends (bounded: one entry per key).
        let s = session(w, handle).busy();
        let key = (p.realm.clone(), p.topic.clone());
        if !s.keys.contains(&key) {
            if s.keys.len() >= MAX_SESSION_KEYS {
                let text = Some(format!("a session may tie at most {MAX_SESSION_KEYS} keys to itself"));
                return error(w, handle, m::PUBLISH, request, "wamp.error.invalid_argument", text);
            }
            s.keys.push(key);
        }
    }
    let ack = PendingAck::Wamp { handle, session: publisher.id, request, publication, acknowledge };
    let ticket = w.open_ticket(ack);
    w.expect(ticket, 1, true);
    let will = k.will.map(|v| match v {
        Value::Null => Body::Wamp(Payload::default()),
        v => Body::Wamp(Payload::args(vec![v])),
    });
    let kw =
        KeyWrite { p: std::sync::Arc::new(p), when: k.when, watch: k.watch, will, reply: Some((w.id, ticket)), trace };
    w.peers.send(owner, ShardMsg::KeyWrite(Box::new(kw)));
}

/// Keys one session may have a will or a waiting publish on.
pub(super) const MAX_SESSION_KEYS: usize = 1024;

/// The store has (or could not write) a retained PUBLISH's value, or its
/// key's owner refused it (`when`: fox-wamp's answer, sent even without
/// `acknowledge`).
pub fn on_stored(w: &mut Shard, handle: usize, request: u64, publication: u64, acknowledge: bool, o: AckOutcome) {
    match o {
        AckOutcome::Stored if acknowledge => send(w, handle, &Msg::Published { request, publication }),
        AckOutcome::Stored => {}
        AckOutcome::Failed(e) => {
            let text = Some(format!("the retained value could not be stored: {e}"));
            error(w, handle, m::PUBLISH, request, STORE_FAILED, text);
        }
        AckOutcome::Refused => {
            let text = Some("not accepted".to_owned());
            error(w, handle, m::PUBLISH, request, "wamp.error.invalid_payload", text);
        }
        AckOutcome::Limit(why) => error(
            w,
            handle,
            m::PUBLISH,
            request,
            LIMIT_EXCEEDED,
            Some(format!("the retained value was refused: {why}")),
        ),
    }
}

/// The error of a retained PUBLISH over a bound of the store.
pub const LIMIT_EXCEEDED: &str = "fennec.error.limit_exceeded";

/// The error of a retained PUBLISH whose value the store could not write.
pub const STORE_FAILED: &str = "fennec.error.store_failed";

/// PUBLISH's black- and whitelists, if any (`Err`: not lists of the right type).
pub(super) fn receivers(options: &Dict) -> Result<Option<Box<Receivers>>, String> {
    // Most publications have none: one pass over the keys decides.
    let named =
        |k: &str| k.starts_with("eligible") || k == "exclude" || k == "exclude_authid" || k == "exclude_authrole";
    if !options.iter().any(|(k, _)| named(k)) {
        return Ok(None);
    }
    let ids = |key: &str| list_opt(options, key, |v| v.as_u64(), "session IDs");
    let names = |key: &str| list_opt(options, key, |v| v.as_str().map(str::to_owned), "strings");
    let r = Receivers {
        eligible: ids("eligible")?,
        eligible_authid: names("eligible_authid")?,
        eligible_authrole: names("eligible_authrole")?,
        exclude: ids("exclude")?.unwrap_or_default(),
        exclude_authid: names("exclude_authid")?.unwrap_or_default(),
        exclude_authrole: names("exclude_authrole")?.unwrap_or_default(),
    };
    Ok((r != Receivers::default()).then(|| Box::new(r.sorted())))
}

/// An optional option that must be a list whose items `item` accepts.
fn list_opt<T>(
    options: &Dict,
    key: &str,
    item: impl Fn(&Value) -> Option<T>,
    what: &str,
) -> Result<Option<Vec<T>>, String> {
    let wrong = || format!("option '{key}' must be a list of {what}");
    match dict_get(options, key) {
        None => Ok(None),
        Some(Value::List(l)) => l.iter().map(|v| item(v).ok_or_else(wrong)).collect::<Result<_, _>>().map(Some),
        Some(_) => Err(wrong()),
    }
}

pub(super) fn subscribe(w: &mut Shard, handle: usize, request: u64, options: Dict, topic: String, started: Instant) {
    if !request_ok(request) {
        return violation(w, handle, "SUBSCRIBE.Request must be in [1, 2^53]");
    }
    let policy =
        match policy_opt(&options, "match", MatchPolicy::Exact, MatchPolicy::parse, "exact, prefix or wildcard") {
            Ok(p) => p,
            Err(Some(msg)) => return error(w, handle, m::SUBSCRIBE, request, "wamp.error.invalid_argument", Some(msg)),
            Err(None) => return violation(w, handle, "option 'match' must be a string"),
        };
    // `retained` and `retainedState` are fox-wamp's names (replay, then live).
    let mut get_retained = false;
    for name in ["get_retained", "retained", "retainedState"] {
        match bool_opt(&options, name) {
            Ok(r) => get_retained |= r.unwrap_or(false),
            Err(e) => return violation(w, handle, &e),
        }
    }
    if !pattern_ok(w, &topic, policy) {
        let msg = format!("invalid topic '{topic}' for match policy {policy:?}");
        return error(w, handle, m::SUBSCRIBE, request, "wamp.error.invalid_uri", Some(msg));
    }
    if !authorized(w, handle, Action::Subscribe, &topic, m::SUBSCRIBE, request, true) {
        return;
    }
    // fox-wamp's `after`: the topic's history after that publication, then live.
    let after = match dict_get(&options, "after") {
        None => None,
        Some(Value::UInt(id)) => Some(*id),
        Some(Value::Str(id)) if id.parse::<u64>().is_ok() => id.parse().ok(),
        Some(v) => {
            let msg = format!("option 'after' must be a publication ID, got {v:?}");
            return error(w, handle, m::SUBSCRIBE, request, "wamp.error.invalid_argument", Some(msg));
        }
    };
    let s = session(w, handle);
    let (id, realm) = (s.id, s.realm.clone());
    if get_retained {
        s.busy().want_retained.push(request);
    }
    if let Some(after) = after {
        s.busy().want_after.push((request, after));
    }
    // fox-wamp's `filter`: only events whose value meets it.
    let filter = options.iter().find(|(k, _)| k == "filter").map(|(_, v)| canonical(v).into());
    let key = SubKey { realm, topic, policy, share: None, filter };
    if let Subscribed::Now(subscription) = w.subscribe(Member::Wamp(handle), id, key, request, started) {
        subscribed(w, handle, request, subscription, started);
    }
}

/// The subscription is routed to this worker everywhere: answer.
pub fn subscribed(w: &mut Shard, handle: usize, request: u64, subscription: u64, started: Instant) {
    let s = session(w, handle);
    let new = !s.subs.contains(&subscription);
    if new {
        s.subs.push(subscription);
    }
    let (want, after) = match s.busy.as_deref_mut() {
        None => (None, None),
        Some(b) => (
            b.want_retained.iter().position(|&r| r == request).map(|i| b.want_retained.swap_remove(i)),
            b.want_after.iter().position(|&(r, _)| r == request).map(|i| b.want_after.swap_remove(i).1),
        ),
    };
    let sid = s.id;
    send(w, handle, &Msg::Subscribed { request, subscription });
    w.metrics.record(Op::Subscribe, started, Instant::now());
    if let (true, Some(key)) = (new, w.local_subs.get(&subscription).map(|l| l.key.clone())) {
        meta::subscribed(w, &key.realm, sid, subscription, &key.topic);
    }
    if after.is_none() && want.is_none() {
        return;
    }
    let Some(key) = w.local_subs.get(&subscription).map(|l| l.key.clone()) else { return };
    let reply =
        RetainedReply { worker: w.id, member: Member::Wamp(handle), session: sid, subscription, policy: key.policy };
    if let Some(after) = after {
        // Live events wait until the replay is in (then those it already
        // holds are not sent twice). In a cluster the other nodes' events
        // are asked for too; a node that does not answer in time is left
        // out (`expire_replays`).
        let to = w.history_workers(&key.realm, &key.topic, key.policy);
        let s = session(w, handle).busy();
        s.replays.retain(|r| r.subscription != subscription);
        let owed = crate::cluster::Owed::of(&to);
        s.replays.push(Replay { subscription, owed, got: Replayed::default(), held: Vec::new() });
        let deadline = w.now + REPLAY_TIMEOUT;
        w.replay_deadlines.push_back((deadline, handle, sid, subscription));
        for worker in to {
            let q = ShardMsg::HistoryQuery {
                realm: key.realm.clone(),
                pattern: key.topic.clone(),
                after,
                reply: reply.clone(),
            };
            w.peers.send(worker, q);
        }
    }
    if want.is_some() {
        w.query_retained(key.realm, key.topic, reply);
    }
}

/// A subscription replaying its history (`after`).
pub struct Replay {
    pub(super) subscription: u64,
    /// The workers' answers yet to come (a node taken for dead owes none:
    /// `replays_without`).
    owed: crate::cluster::Owed,
    got: Replayed,
    /// Live events meanwhile (publication ID, framed EVENT), at most `MAX_HELD`.
    held: Vec<(u64, Bytes)>,
}

/// Live events a replaying subscription holds; more are dropped and counted.
const MAX_HELD: usize = 10_000;

/// How long a replay waits for its workers' answers (another node's may
/// never come) before it goes out with what it has.
const REPLAY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// History for a subscription replaying it: once every worker answered,
/// the replay goes out.
pub fn on_history(
    w: &mut Shard,
    handle: usize,
    reply: &RetainedReply,
    anchor: Option<u64>,
    events: Vec<crate::router::history::Recorded>,
    from: Option<crate::cluster::NodeId>,
) {
    if w.sessions.get(&reply.session) != Some(&handle) {
        return;
    }
    let Some(s) = session(w, handle).busy.as_deref_mut() else { return };
    let Some(i) = s.replays.iter().position(|r| r.subscription == reply.subscription) else { return };
    let r = &mut s.replays[i];
    if !r.owed.answered(from) {
        return; // a node counted out (taken for dead), answering after all
    }
    r.got.add(anchor, events);
    if r.owed.left() == 0 {
        let r = s.replays.swap_remove(i);
        replay(w, handle, reply.subscription, reply.policy, r);
    }
}

/// Node `node` is taken for dead: the replays waiting for its workers go
/// out with the others' answers now, rather than at their deadline.
pub fn replays_without(w: &mut Shard, node: crate::cluster::NodeId) {
    let mut done = Vec::new();
    for (handle, conn) in w.conns.iter_mut() {
        let Some(s) = conn.wamp().and_then(|c| c.session.as_mut()).and_then(|s| s.busy.as_deref_mut()) else {
            continue;
        };
        let mut i = 0;
        while i < s.replays.len() {
            let r = &mut s.replays[i];
            if r.owed.lost(node) && r.owed.left() == 0 {
                done.push((handle, s.replays.swap_remove(i)));
            } else {
                i += 1;
            }
        }
    }
    for (handle, r) in done {
        let subscription = r.subscription;
        let Some(policy) = w.local_subs.get(&subscription).map(|l| l.key.policy) else { continue };
        replay(w, handle, subscription, policy, r);
    }
}

/// Replays whose workers did not all answer in time (every worker tick):
/// they go out with the answers they have, a line in the log says so.
pub fn expire_replays(w: &mut Shard) {
    while let Some(&(deadline, handle, session_id, subscription)) = w.replay_deadlines.front() {
        if deadline > w.now {
            return;
        }
        w.replay_deadlines.pop_front();
        if w.sessions.get(&session_id) != Some(&handle) {
            continue;
        }
        let Some(s) = session(w, handle).busy.as_deref_mut() else { continue };
        let Some(i) = s.replays.iter().position(|r| r.subscription == subscription) else { continue };
        let r = s.replays.swap_remove(i);
        let Some(policy) = w.local_subs.get(&subscription).map(|l| l.key.policy) else { continue };
        log::warn!(
            "worker {}: session {session_id}: the history replay of subscription {subscription} went out \
             without {} answer(s) (a node did not answer in time)",
            w.id,
            r.owed.left()
        );
        replay(w, handle, subscription, policy, r);
    }
}

/// A replay's events, oldest first, that meet the subscription's filter,
/// then the live events held meanwhile that it did not already contain.
fn replay(w: &mut Shard, handle: usize, subscription: u64, policy: MatchPolicy, r: Replay) {
    let Some((ser, framing)) = w.conns[handle].wamp().map(|c| (c.ser, c.framing)) else { return };
    let events = r.got.events();
    let filter = w.local_subs.get(&subscription).and_then(|l| l.filter.clone());
    let mut conv = Converted::default();
    for e in &events {
        if filter.as_ref().is_some_and(|f| !fits(f, value_of(&e.p.body).as_ref())) {
            continue;
        }
        let details = if policy != MatchPolicy::Exact {
            vec![("topic".to_owned(), Value::Str(e.p.topic.clone()))]
        } else {
            Dict::new()
        };
        let fields = [
            Field::Int(m::EVENT),
            Field::Int(subscription),
            Field::Int(e.p.id),
            Field::Dict(&details),
            Field::Payload(conv.wamp_payload(&e.p.body)),
        ];
        let bytes = frame_fields(ser, framing, &fields);
        if framing.fits(&bytes) {
            w.send_bytes(handle, bytes);
        } else {
            w.drop_event(handle);
        }
    }
    let replayed: ahash::AHashSet<u64> = events.iter().map(|e| e.p.id).collect();
    for (id, bytes) in r.held {
        if !replayed.contains(&id) {
            w.send_event(handle, Frame::Shared(&bytes));
        }
    }
}

/// Retained values for a subscription that asked for them: EVENTs with
/// `retained: true` in their details.
pub fn on_retained(w: &mut Shard, handle: usize, reply: &RetainedReply, values: Vec<std::sync::Arc<Publication>>) {
    if w.sessions.get(&reply.session) != Some(&handle) || !session(w, handle).subs.contains(&reply.subscription) {
        return;
    }
    let Some((ser, framing)) = w.conns[handle].wamp().map(|c| (c.ser, c.framing)) else { return };
    // A filtered subscription replays only the values that meet its filter.
    let filter = w.local_subs.get(&reply.subscription).and_then(|l| l.filter.clone());
    for p in values {
        if p.expired(w.now) || filter.as_ref().is_some_and(|f| !fits(f, value_of(&p.body).as_ref())) {
            continue;
        }
        let mut details = vec![("retained".to_owned(), Value::Bool(true))];
        if reply.policy != MatchPolicy::Exact {
            details.push(("topic".to_owned(), Value::Str(p.topic.clone())));
        }
        if let Some(who) = &p.disclosed {
            identity_details(&mut details, "publisher", who);
        }
        if let Some(ppt) = &p.ppt {
            details.extend(ppt.iter().cloned());
        }
        let mut conv = Converted::default();
        let fields = [
            Field::Int(m::EVENT),
            Field::Int(reply.subscription),
            Field::Int(p.id),
            Field::Dict(&details),
            Field::Payload(conv.wamp_payload(&p.body)),
        ];
        let bytes = frame_fields(ser, framing, &fields);
        if !framing.fits(&bytes) {
            w.drop_event(handle);
            continue;
        }
        w.send_bytes(handle, bytes);
    }
}

pub(super) fn unsubscribe(w: &mut Shard, handle: usize, request: u64, subscription: u64) {
    let s = session(w, handle);
    let Some(i) = s.subs.iter().position(|&x| x == subscription) else {
        let msg = format!("no subscription {subscription} in this session");
        return error(w, handle, m::UNSUBSCRIBE, request, "wamp.error.no_such_subscription", Some(msg));
    };
    s.subs.swap_remove(i);
    if let Some(b) = s.busy.as_deref_mut() {
        b.replays.retain(|r| r.subscription != subscription);
    }
    let sid = s.id;
    meta::unsubscribe(w, handle, sid, subscription);
    send(w, handle, &Msg::Unsubscribed { request });
}

/// The framed EVENT of one publication for one subscription, one per
/// serializer and framing, built for its first subscriber and shared by
/// the rest. The shard keeps one cache and reuses its buffers, so a small
/// EVENT is framed without an allocation and copied into each queue; a
/// large one becomes shared `Bytes` (queued without a copy).
#[derive(Default)]
pub struct EventCache {
    slots: [Slot; 2 * crate::wamp::message::SERIALIZERS.len()],
}

#[derive(Default)]
struct Slot {
    /// The frame is `buf[start..]` (when `built` and not `shared`).
    buf: Vec<u8>,
    start: usize,
    built: bool,
    shared: Option<Bytes>,
}

impl EventCache {
    /// Forgets the frames (the next subscription, or publication, is
    /// framed anew); keeps the small buffers.
    pub fn reset(&mut self) {
        for s in &mut self.slots {
            s.built = false;
            s.shared = None;
        }
    }
}

/// The framed EVENT of `p` for the subscriber on `handle`, or `None` if that
/// subscriber must not get it (it is the publisher, with `exclude_me`; or a
/// RawSocket client that asked for shorter messages: dropped and counted).
pub fn event_for<'c>(
    w: &mut Shard,
    handle: usize,
    subscription: u64,
    policy: MatchPolicy,
    p: &Publication,
    cache: &'c mut EventCache,
    conv: &mut Converted,
) -> Option<Frame<'c>> {
    let crate::conn::Proto::Wamp(conn) = &w.conns[handle].proto else { return None };
    let s = conn.session.as_ref()?;
    if p.exclude_me && p.publisher.id == s.id && p.publisher.worker == w.id {
        return None;
    }
    if p.receivers.as_ref().is_some_and(|r| !r.admits(s.id, &s.authid, &s.authrole)) {
        return None;
    }
    let replaying = s.busy.as_ref().is_some_and(|b| !b.replays.is_empty());
    let (ser, framing) = (conn.ser, conn.framing);
    let slot = &mut cache.slots[framing.index() * m::SERIALIZERS.len() + ser.index()];
    if !slot.built {
        slot.start = frame_event(subscription, policy, p, ser, framing, conv, &mut slot.buf);
        slot.built = true;
        if slot.buf.len() - slot.start > crate::conn::COPY_MAX {
            slot.shared = Some(Bytes::from(std::mem::take(&mut slot.buf)).slice(slot.start..));
        }
    }
    let frame = match &slot.shared {
        Some(bytes) => Frame::Shared(bytes),
        None => Frame::Slice(&slot.buf[slot.start..]),
    };
    if !framing.fits(frame.bytes()) {
        w.drop_event(handle);
        return None;
    }
    // A subscription replaying its history holds its live events.
    if replaying {
        let s = session(w, handle).busy();
        if let Some(r) = s.replays.iter_mut().find(|r| r.subscription == subscription) {
            if r.held.len() < MAX_HELD {
                r.held.push((p.id, frame.to_bytes()));
            } else {
                w.drop_event(handle);
            }
            return None;
        }
    }
    Some(frame)
}

/// Frames the EVENT of `p` into `buf`; returns where the frame starts.
pub(super) fn frame_event(
    subscription: u64,
    policy: MatchPolicy,
    p: &Publication,
    ser: Serializer,
    framing: Framing,
    conv: &mut Converted,
    buf: &mut Vec<u8>,
) -> usize {
    // A pattern subscription tells the subscriber which topic matched; a
    // disclosed publisher is named. Both are the same for every subscriber
    // of the subscription, so the EVENT is still encoded once.
    let built;
    let details: &Dict = if policy == MatchPolicy::Exact && p.disclosed.is_none() && p.ppt.is_none() {
        &EMPTY
    } else {
        let mut d = Dict::new();
        if policy != MatchPolicy::Exact {
            d.push(("topic".to_owned(), Value::Str(p.topic.clone())));
        }
        if let Some(who) = &p.disclosed {
            identity_details(&mut d, "publisher", who);
        }
        if let Some(ppt) = &p.ppt {
            d.extend(ppt.iter().cloned());
        }
        built = d;
        &built
    };
    let fields = [
        Field::Int(m::EVENT),
        Field::Int(subscription),
        Field::Int(p.id),
        Field::Dict(details),
        Field::Payload(conv.wamp_payload(&p.body)),
    ];
    frame_fields_into(ser, framing, &fields, buf)
}

static EMPTY: Dict = Vec::new();
