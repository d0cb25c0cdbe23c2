//! Dynamic authorization: a role whose permissions a procedure decides
//! (`[[realm.role]] authorizer = "..."`, registered by a backend session of
//! a static role). The router calls it as `(session, uri, action, options)`
//! and takes `true` / `false` or `{allow, disclose, cache}`; `cache`
//! (seconds, or `true` for `DEFAULT_TTL`) keeps the decision in this
//! worker's bounded `DecisionCache`, keyed by (realm and role, action,
//! URI), so a warm cache costs a hash lookup per message.
//!
//! A miss parks the message: the connection's input is paused (so nothing
//! of the session overtakes it), the router itself calls the authorizer
//! (caller session 0, a request of its own), and the answer (or its
//! timeout, `ANSWER_TIMEOUT`: deny) lets the message through, or not, and
//! input resume. One decision waits per session at a time; the worker
//! never blocks.

use super::*;
use crate::auth::rules::Action;
use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

/// The caller session of the router's own calls.
pub const ROUTER_CALLER: u64 = crate::router::ROUTER_SESSION;
/// Decisions one worker keeps (then the least recently used go first).
pub const CACHE_ENTRIES: usize = 16 * 1024;
/// TTL of `cache: true`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// How long the authorizer may take; then the request is denied.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug)]
pub struct Decision {
    pub allow: bool,
    pub disclose: bool,
}

struct Cached {
    decision: Decision,
    until: Instant,
    /// When it was last used (the cache's clock): the least recently used
    /// goes first when the cache is full.
    used: Cell<u64>,
}

/// A worker's decisions, bounded (least recently used out first): realm
/// and role -> action -> URI.
#[derive(Default)]
pub struct DecisionCache {
    by_role: AHashMap<Arc<str>, [AHashMap<String, Cached>; 4]>,
    len: usize,
    clock: Cell<u64>,
}

fn slot(a: Action) -> usize {
    match a {
        Action::Call => 0,
        Action::Register => 1,
        Action::Publish => 2,
        Action::Subscribe => 3,
    }
}

impl DecisionCache {
    pub fn get(&self, role: &str, action: Action, uri: &str, now: Instant) -> Option<Decision> {
        let c = self.by_role.get(role)?[slot(action)].get(uri)?;
        if c.until <= now {
            return None;
        }
        self.clock.set(self.clock.get() + 1);
        c.used.set(self.clock.get());
        Some(c.decision)
    }

    /// Keeps a decision; when full, first drops the least recently used
    /// (a scan: puts follow a call to the authorizer, hits are the hot path).
    pub fn put(&mut self, role: Arc<str>, action: Action, uri: String, decision: Decision, until: Instant) {
        if self.len >= CACHE_ENTRIES {
            let oldest = self
                .by_role
                .iter()
                .flat_map(|(r, maps)| {
                    maps.iter().enumerate().flat_map(move |(a, m)| m.iter().map(move |(u, c)| (c.used.get(), r, a, u)))
                })
                .min_by_key(|(used, ..)| *used)
                .map(|(_, r, a, u)| (r.clone(), a, u.clone()));
            if let Some((r, a, u)) = oldest {
                if let Some(maps) = self.by_role.get_mut(&r) {
                    if maps[a].remove(&u).is_some() {
                        self.len -= 1;
                    }
                }
            }
        }
        self.clock.set(self.clock.get() + 1);
        let cached = Cached { decision, until, used: Cell::new(self.clock.get()) };
        if self.by_role.entry(role).or_default()[slot(action)].insert(uri, cached).is_none() {
            self.len += 1;
        }
    }

    /// Forgets every decision of a realm (its authorizer went away).
    pub fn forget_realm(&mut self, realm: &str) {
        let prefix = format!("{realm}\0");
        self.by_role.retain(|k, _| !k.starts_with(&prefix));
        self.len = self.by_role.values().map(|m| m.iter().map(|x| x.len()).sum::<usize>()).sum();
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A message waiting for the authorizer.
pub struct Parked {
    handle: usize,
    session: u64,
    msg: Box<Msg>,
    action: Action,
    uri: String,
    started: Instant,
    /// The authorizer's callee (told when the wait ends without its answer).
    callee: SessionRef,
}

/// The action and URI a message asks to be authorized for, if any.
fn asks(msg: &Msg) -> Option<(Action, &str)> {
    match msg {
        Msg::Publish { topic, .. } => Some((Action::Publish, topic)),
        Msg::Subscribe { topic, .. } => Some((Action::Subscribe, topic)),
        Msg::Call { procedure, .. } => Some((Action::Call, procedure)),
        Msg::Register { procedure, .. } => Some((Action::Register, procedure)),
        _ => None,
    }
}

/// Before a message of a session whose role has an authorizer is handled:
/// its decision from the cache, or the message parked while the authorizer
/// is asked. Returns the message if it goes on now (with the decision left
/// for `authorized` in `WampSession.decided`).
pub(super) fn admit(w: &mut Shard, handle: usize, msg: Msg) -> Option<Msg> {
    let s = session(w, handle);
    let Some(proc) = s.rules.as_ref().and_then(|r| r.authorizer.clone()) else { return Some(msg) };
    let Some((action, uri)) = asks(&msg) else { return Some(msg) };
    // Continuations of a progressive call were authorized with its first CALL.
    if let Msg::Call { request, .. } = &msg {
        if s.busy.as_ref().is_some_and(|b| b.calls.contains_key(request)) {
            s.decided = Some(Decision { allow: true, disclose: false });
            return Some(msg);
        }
    }
    let key = s.authz_key();
    let uri = uri.to_owned();
    if let Some(d) = w.authz_cache.get(&key, action, &uri, w.now) {
        session(w, handle).decided = Some(d);
        return Some(msg);
    }
    let details = meta::session_dict(w, handle);
    let s = session(w, handle);
    let (realm, id) = (s.realm.clone(), s.id);
    let args = vec![details, Value::Str(uri.clone()), Value::Str(action.name().into()), Value::Dict(options_of(&msg))];
    let (request, callee) = match router_call(w, &realm, proc, args) {
        Ok(sent) => sent,
        Err(why) => {
            deny(w, handle, &msg, &why);
            return None;
        }
    };
    let started = Instant::now();
    w.authz_parked.insert(request, Parked { handle, session: id, msg: Box::new(msg), action, uri, started, callee });
    w.conns[handle].paused = true;
    None
}

/// The router calls `procedure` in `realm` itself (caller session 0): the
/// request and the callee it went to. Its deadline is `ANSWER_TIMEOUT`;
/// its answer comes to `on_answer`. `Err`: nobody has registered it.
pub(crate) fn router_call(
    w: &mut Shard,
    realm: &Realm,
    procedure: String,
    args: Vec<Value>,
) -> Result<(u64, SessionRef), String> {
    let Some((policy, reg)) = w.procs.lookup(realm, &procedure) else {
        return Err(format!("'{procedure}' is not registered"));
    };
    let Some(callee) = reg.pick() else { return Err(format!("'{procedure}' has no callee")) };
    w.next_authz += 1;
    let request = w.next_authz;
    let pattern = policy != MatchPolicy::Exact;
    let (callee_id, registration) = (callee.session.id, reg.registration);
    let inv =
        Invoke::router_call(w.id, request, callee_id, registration, procedure, pattern, Payload::args(args), None);
    w.call_deadlines.insert((w.now + ANSWER_TIMEOUT, ROUTER_CALLER, request));
    w.peers.send(callee.session.worker, ShardMsg::Invoke(Box::new(inv)));
    Ok((request, callee.session))
}

fn options_of(msg: &Msg) -> Dict {
    match msg {
        Msg::Publish { options, .. } | Msg::Subscribe { options, .. } => options.clone(),
        Msg::Call { options, .. } | Msg::Register { options, .. } => options.clone(),
        _ => Dict::new(),
    }
}

/// The ERROR for a message refused.
fn deny(w: &mut Shard, handle: usize, msg: &Msg, why: &str) {
    let (ty, request, answer) = match msg {
        Msg::Publish { request, options, .. } => {
            (m::PUBLISH, *request, matches!(dict_get(options, "acknowledge"), Some(Value::Bool(true))))
        }
        Msg::Subscribe { request, .. } => (m::SUBSCRIBE, *request, true),
        Msg::Call { request, .. } => (m::CALL, *request, true),
        Msg::Register { request, .. } => (m::REGISTER, *request, true),
        _ => return,
    };
    if answer {
        error(w, handle, ty, request, "wamp.error.not_authorized", Some(why.to_owned()));
    }
}

/// The answer to one of the router's own calls (a `CallDone` to caller
/// session 0): an authorizer's or an authenticator's.
pub fn on_answer(w: &mut Shard, done: CallDone) {
    if w.reductions.is_call(done.request) {
        return w.on_reduced(done);
    }
    if w.authn_pending.contains_key(&done.request) {
        return auth::on_authenticator(w, done);
    }
    if w.mqtt_authz.contains_key(&done.request) {
        return crate::mqtt::session::on_authorizer_answer(w, done.request, Some(done.outcome));
    }
    if w.mqtt_authn.contains_key(&done.request) {
        return crate::mqtt::session::on_authenticator_answer(w, done.request, Some(done.outcome));
    }
    let Some(p) = w.authz_parked.remove(&done.request) else { return };
    let decision = match done.outcome {
        CallOutcome::Result(payload, _) => read_answer(&payload),
        CallOutcome::Progress(..) => {
            // Not an answer: keep waiting for the final one.
            w.authz_parked.insert(done.request, p);
            return;
        }
        CallOutcome::Error { error, .. } => Err(format!("the authorizer failed: {error}")),
    };
    resume(w, p, decision);
}

/// The authorizer (or authenticator) did not answer in time.
pub fn on_timeout(w: &mut Shard, request: u64) {
    if w.reductions.is_call(request) {
        return w.on_reduce_timeout(request);
    }
    if w.authn_pending.contains_key(&request) {
        return auth::on_authenticator_timeout(w, request);
    }
    if w.mqtt_authz.contains_key(&request) {
        return crate::mqtt::session::on_authorizer_answer(w, request, None);
    }
    if w.mqtt_authn.contains_key(&request) {
        return crate::mqtt::session::on_authenticator_answer(w, request, None);
    }
    let Some(p) = w.authz_parked.remove(&request) else { return };
    let caller = SessionRef { worker: w.id, id: ROUTER_CALLER };
    let why = Interruption::Timeout;
    w.peers.send(p.callee.worker, ShardMsg::Interrupt { callee: p.callee.id, caller, request, why });
    resume(w, p, Err(format!("the authorizer did not answer within {} s", ANSWER_TIMEOUT.as_secs())));
}

/// `true` / `false`, or `{allow, disclose, cache}`; the decision and how
/// long it may be kept.
pub(crate) fn read_answer(payload: &Payload) -> Result<(Decision, Option<Duration>), String> {
    let first = payload.values().args.as_ref().and_then(|a| a.first());
    match first {
        Some(Value::Bool(allow)) => Ok((Decision { allow: *allow, disclose: false }, None)),
        Some(Value::Dict(d)) => {
            let allow = matches!(dict_get(d, "allow"), Some(Value::Bool(true)));
            let disclose = matches!(dict_get(d, "disclose"), Some(Value::Bool(true)));
            let ttl = match dict_get(d, "cache") {
                Some(Value::Bool(true)) => Some(DEFAULT_TTL),
                Some(Value::UInt(s)) if *s > 0 => Some(Duration::from_secs(*s)),
                Some(Value::Float(s)) if *s > 0.0 => Some(Duration::from_secs_f64(s.min(1e9))),
                _ => None,
            };
            Ok((Decision { allow, disclose }, ttl))
        }
        other => Err(format!("the authorizer answered {other:?}, not a boolean or a dictionary")),
    }
}

fn resume(w: &mut Shard, p: Parked, decision: Result<(Decision, Option<Duration>), String>) {
    let alive = w.sessions.get(&p.session) == Some(&p.handle);
    if !alive {
        return;
    }
    w.metrics.record(crate::metrics::Op::Authorize, p.started, Instant::now());
    match decision {
        Ok((d, ttl)) => {
            if let Some(ttl) = ttl {
                let key = session(w, p.handle).authz_key();
                let until = w.now + ttl;
                w.authz_cache.put(key, p.action, p.uri.clone(), d, until);
            }
            if d.allow {
                session(w, p.handle).decided = Some(d);
                dispatch(w, p.handle, *p.msg, Instant::now());
            } else {
                let role = session(w, p.handle).authrole.clone();
                deny(
                    w,
                    p.handle,
                    &p.msg,
                    &format!("role '{role}' may not {} '{}' (the authorizer said no)", p.action.name(), p.uri),
                );
            }
        }
        Err(why) => deny(w, p.handle, &p.msg, &why),
    }
    if w.conns.contains(p.handle) && !w.conns[p.handle].is_closed() {
        w.conns[p.handle].paused = false;
        w.resume_reading(p.handle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_drops_the_least_recently_used_and_the_expired() {
        let mut c = DecisionCache::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let yes = Decision { allow: true, disclose: false };
        let role: Arc<str> = "r\0dyn".into();
        for i in 0..CACHE_ENTRIES {
            c.put(role.clone(), Action::Publish, format!("t{i}"), yes, later);
        }
        assert_eq!(c.len(), CACHE_ENTRIES);
        // t0 is used again: t1 is now the least recently used.
        assert!(c.get("r\0dyn", Action::Publish, "t0", now).is_some());
        c.put(role.clone(), Action::Call, "p".into(), yes, later);
        assert_eq!(c.len(), CACHE_ENTRIES, "bounded");
        assert!(c.get("r\0dyn", Action::Publish, "t0", now).is_some(), "recently used: kept");
        assert!(c.get("r\0dyn", Action::Publish, "t1", now).is_none(), "least recently used: gone");
        assert!(c.get("r\0dyn", Action::Call, "p", now).is_some());
        assert!(c.get("r\0dyn", Action::Subscribe, "p", now).is_none(), "per action");
        assert!(c.get("r\0dyn", Action::Call, "p", later).is_none(), "expired");
        c.forget_realm("r");
        assert!(c.is_empty());
    }
}
