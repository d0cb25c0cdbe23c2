//! The dealer: REGISTER / UNREGISTER (the owner's barrier, then
//! REGISTERED), CALL routed to the callee's worker, INVOCATION there,
//! YIELD or ERROR back as RESULT or ERROR, and the clean-up when a caller
//! or callee goes.

use super::*;
use crate::router::procs::Callee;
use crate::router::WorkerId;
use std::time::Duration;

pub(super) fn register(w: &mut Shard, handle: usize, request: u64, options: Dict, procedure: String, started: Instant) {
    if !request_ok(request) {
        return violation(w, handle, "REGISTER.Request must be in [1, 2^53]");
    }
    let policy =
        match policy_opt(&options, "match", MatchPolicy::Exact, MatchPolicy::parse, "exact, prefix or wildcard") {
            Ok(p) => p,
            Err(Some(msg)) => return error(w, handle, m::REGISTER, request, "wamp.error.invalid_argument", Some(msg)),
            Err(None) => return violation(w, handle, "option 'match' must be a string"),
        };
    let names = "single, roundrobin, random, first or last";
    let invoke = match policy_opt(&options, "invoke", InvokePolicy::Single, InvokePolicy::parse, names) {
        Ok(p) => p,
        Err(Some(msg)) => return error(w, handle, m::REGISTER, request, "wamp.error.invalid_argument", Some(msg)),
        Err(None) => return violation(w, handle, "option 'invoke' must be a string"),
    };
    if !pattern_ok(w, &procedure, policy) || procedure.starts_with("wamp.") {
        let msg = format!("invalid procedure URI '{procedure}' for match policy {}", policy.name());
        return error(w, handle, m::REGISTER, request, "wamp.error.invalid_uri", Some(msg));
    }
    if !authorized(w, handle, Action::Register, &procedure, m::REGISTER, request, true) {
        return;
    }
    let disclose_caller = match bool_opt(&options, "disclose_caller") {
        Ok(d) => d.unwrap_or(false),
        Err(e) => return violation(w, handle, &e),
    };
    // `reducer: true`: publications to the topics this URI matches are
    // folded by the callee into their key's retained value (`worker::reduce`).
    let reducer = match bool_opt(&options, "reducer") {
        Ok(r) => r.unwrap_or(false),
        Err(e) => return violation(w, handle, &e),
    };
    let me = w.id;
    let s = session(w, handle);
    let session = SessionRef { worker: me, id: s.id };
    let realm = s.realm.clone();
    let owner = owner_of(&realm, &procedure, w.workers);
    let req = RegRequest { realm, procedure, policy, invoke, session, request, started, disclose_caller, reducer };
    w.peers.send(owner, ShardMsg::RegAcquire(req));
}

/// The owner's answer to a REGISTER (`created`: it made a new registration).
pub fn registered(w: &mut Shard, handle: usize, request: u64, reg: LocalReg, started: Instant, result: RegResult) {
    match result {
        Ok((registration, created)) => {
            let reg = LocalReg { registration, ..reg };
            let s = session(w, handle);
            let (sid, realm) = (s.id, s.realm.clone());
            s.regs.push(reg.clone());
            send(w, handle, &Msg::Registered { request, registration });
            w.metrics.record(Op::Register, started, Instant::now());
            meta::registered(w, &realm, sid, &reg, created);
        }
        Err(uri) => {
            let msg = format!(
                "procedure '{}' ({}) is already registered, by this session or with another invocation policy",
                reg.procedure,
                reg.policy.name()
            );
            error(w, handle, m::REGISTER, request, uri, Some(msg));
        }
    }
}

/// The owner's answer to REGISTER: the registration ID and whether it is new.
pub type RegResult = Result<(u64, bool), &'static str>;

/// A registration of this session, as it remembers it.
#[derive(Clone, Debug)]
pub struct LocalReg {
    pub registration: u64,
    pub procedure: String,
    pub policy: MatchPolicy,
}

/// Leaves a registration of session `callee` (this worker's) at its owner.
pub(super) fn release_reg(w: &mut Shard, realm: &Realm, callee: u64, reg: LocalReg) {
    let owner = owner_of(realm, &reg.procedure, w.workers);
    let LocalReg { registration, procedure, policy } = reg;
    let callee = SessionRef { worker: w.id, id: callee };
    let release = RegRelease { realm: realm.clone(), procedure, policy, registration, callee };
    w.peers.send(owner, ShardMsg::RegRelease(release));
}

pub(super) fn unregister(w: &mut Shard, handle: usize, request: u64, registration: u64) {
    let s = session(w, handle);
    let Some(i) = s.regs.iter().position(|r| r.registration == registration) else {
        let msg = format!("no registration {registration} in this session");
        return error(w, handle, m::UNREGISTER, request, "wamp.error.no_such_registration", Some(msg));
    };
    let reg = s.regs.swap_remove(i);
    let (realm, sid) = (s.realm.clone(), s.id);
    release_reg(w, &realm, sid, reg);
    send(w, handle, &Msg::Unregistered { request });
    meta::unregistered(w, &realm, sid, registration);
}

pub(super) fn call(
    w: &mut Shard,
    handle: usize,
    request: u64,
    options: Dict,
    procedure: String,
    payload: Payload,
    started: Instant,
) {
    if !request_ok(request) {
        return violation(w, handle, "CALL.Request must be in [1, 2^53]");
    }
    let (receive_progress, progress) = match (bool_opt(&options, "receive_progress"), bool_opt(&options, "progress")) {
        (Ok(r), Ok(p)) => (r.unwrap_or(false), p.unwrap_or(false)),
        (Err(e), _) | (_, Err(e)) => return violation(w, handle, &e),
    };
    // Checked here so that a bad option is a violation before any routing.
    if let Err(e) = bool_opt(&options, "disclose_me") {
        return violation(w, handle, &e);
    }
    // Milliseconds; 0 or absent: none.
    let ppt = match ppt_options(session(w, handle), &options) {
        Ok(p) => p,
        Err(e) => return violation(w, handle, &e),
    };
    let timeout = match dict_get(&options, "timeout") {
        None => 0,
        Some(Value::UInt(ms)) => *ms,
        Some(v) => {
            let msg = format!("CALL option timeout must be a non-negative integer (milliseconds), got {v:?}");
            return error(w, handle, m::CALL, request, "wamp.error.invalid_argument", Some(msg));
        }
    };
    if !concrete_uri_ok(w, handle, &procedure) {
        let msg = format!("invalid procedure URI '{procedure}'");
        return error(w, handle, m::CALL, request, "wamp.error.invalid_uri", Some(msg));
    }
    if !authorized(w, handle, Action::Call, &procedure, m::CALL, request, true) {
        return;
    }
    if procedure.starts_with("wamp.") {
        return meta::call(w, handle, request, &procedure, payload);
    }
    let me = w.id;
    let s = session(w, handle);
    let caller = SessionRef { worker: me, id: s.id };
    if let Some(c) = s.busy.as_deref_mut().and_then(|b| b.calls.get_mut(&request)) {
        if !c.input_open {
            return violation(w, handle, &format!("CALL request {request} is already in flight"));
        }
        // Progressive call invocations: more input, to the same callee
        // (always known: a progressive call is not sent to a picker).
        c.input_open = progress;
        let Some(callee) = c.callee else {
            debug_assert!(false, "a call with open input has its callee");
            return;
        };
        let registration = c.registration;
        let inv = Invoke {
            caller,
            request,
            callee: callee.id,
            registration,
            procedure,
            pattern: false,
            payload,
            receive_progress: false,
            disclosed: None,
            progress,
            continuation: true,
            ppt,
            caller_ppt: false,
            details: None,
        };
        return w.peers.send(callee.worker, ShardMsg::Invoke(Box::new(inv)));
    }
    if s.busy.as_ref().is_some_and(|b| b.ended_inputs.contains(&request)) {
        // More input for a call that has ended meanwhile: ignored, as the
        // spec says (the caller has, or will get, the call's answer).
        return;
    }
    if progress && !s.progressive_calls {
        return violation(
            w,
            handle,
            "CALL with progress, but the caller did not announce progressive_call_invocations",
        );
    }
    let realm = s.realm.clone();
    let Some(Route { policy, registration, owner, callee, central }) = route(w, &realm, &procedure, progress) else {
        let msg = format!("no callee registered for procedure '{procedure}'");
        return error(w, handle, m::CALL, request, "wamp.error.no_such_procedure", Some(msg));
    };
    if !central && callee.is_none() {
        debug_assert!(false, "a registration without callees is removed");
        return error(w, handle, m::CALL, request, "wamp.error.no_such_procedure", None);
    }
    // The caller's identity, as the callee wants it; for a callee not yet
    // picked, as a callee could want it, and whether it is disclosed
    // whatever the callee wants (asked for, or forced).
    let s = session(w, handle);
    let wanted = callee.is_none_or(|c| c.disclose_caller);
    let forced = perms(s, &procedure).disclose_caller;
    let (disclosed, always) = match (disclosed(s, &options, wanted, forced), callee) {
        (Ok(who), Some(_)) => (who, false),
        (Ok(who), None) => (who, matches!(disclosed(s, &options, false, forced), Ok(Some(_)))),
        (Err(DiscloseError::Violation(e)), _) => return violation(w, handle, &e),
        (Err(DiscloseError::Forbidden), _) => {
            let text = Some("this realm does not disclose callers".to_owned());
            return error(w, handle, m::CALL, request, DISCLOSE_FORBIDDEN, text);
        }
    };
    let timeout = (timeout > 0).then(|| Duration::from_millis(timeout.min(u64::from(u32::MAX))));
    let deadline = timeout.map(|t| w.now + t);
    let s = session(w, handle);
    let (caller_id, caller_ppt) = (s.id, s.ppt);
    let mut call = OutCall {
        callee: callee.map(|c| c.session),
        registration,
        started,
        timeout,
        deadline,
        input_open: progress,
        pending: None,
    };
    let mut inv = Invoke {
        caller,
        request,
        callee: callee.map_or(0, |c| c.session.id),
        registration,
        procedure,
        pattern: policy != MatchPolicy::Exact,
        payload,
        receive_progress,
        disclosed,
        progress,
        continuation: false,
        ppt,
        caller_ppt,
        details: None,
    };
    let to = match callee {
        Some(c) => Some((c.session.worker, ShardMsg::Invoke(Box::new(inv)))),
        None => {
            let identity = inv.disclosed.take();
            call.pending = Some(Box::new(Pending { inv, identity, always }));
            let pick = ShardMsg::Pick { realm, registration, caller, request };
            Some((owner, pick))
        }
    };
    session(w, handle).busy().calls.insert(request, call);
    if let Some(at) = deadline {
        w.call_deadlines.insert((at, caller_id, request));
    }
    if let Some((worker, msg)) = to {
        w.peers.send(worker, msg);
    }
}

/// Where a CALL goes.
struct Route {
    /// The match policy of the registration it goes to.
    policy: MatchPolicy,
    /// That registration's ID on the callee's node.
    registration: u64,
    /// The registration's owner here (it picks when `central`).
    owner: WorkerId,
    callee: Option<Callee>,
    /// Round-robin over several callees is one rotation router-wide:
    /// unless this worker owns the registration, its owner picks (a
    /// progressive call, whose input must follow at once, picks here).
    central: bool,
}

/// The registration a CALL of `procedure` goes to, and its callee: this
/// node's, or in a cluster another node's where that one is more specific
/// (WAMP's order); where both are one registration shared across nodes,
/// its policy picks among all their callees, round-robin then being one
/// rotation per caller worker.
fn route(w: &mut Shard, realm: &Realm, procedure: &str, progress: bool) -> Option<Route> {
    use crate::cluster::procs::{pick, specificity};
    use std::cmp::Ordering;
    let local = w.procs.lookup(realm, procedure);
    let remote = if w.remote_procs.is_empty() { None } else { w.remote_procs.lookup(realm, procedure) };
    let order = match (&local, &remote) {
        (None, None) => return None,
        (Some(_), None) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (Some((lp, lreg)), Some((rp, rreg))) => {
            let uri = match lp {
                MatchPolicy::Exact => procedure,
                _ => w.procs.by_id(realm, lreg.registration).map_or(procedure, |(uri, _, _)| uri),
            };
            specificity((*lp, uri), (*rp, &rreg.uri))
        }
    };
    let rr = &mut w.remote_rr;
    match (order, local, remote) {
        (Ordering::Greater, Some((policy, reg)), _) => {
            let central =
                reg.invoke == InvokePolicy::RoundRobin && reg.callees.len() > 1 && reg.owner != w.id && !progress;
            let callee = if central { None } else { reg.pick() };
            Some(Route { policy, registration: reg.registration, owner: reg.owner, callee, central })
        }
        (Ordering::Less, _, Some((policy, reg))) => {
            let c = reg.callees[pick(reg.invoke, reg.callees.len(), |i| reg.callees[i].since, rr)?];
            let callee = Some(Callee { session: c.session, disclose_caller: c.disclose_caller, since: c.since });
            Some(Route { policy, registration: c.registration, owner: w.id, callee, central: false })
        }
        (Ordering::Equal, Some((policy, reg)), Some((_, remote))) => {
            let n = reg.callees.len();
            let since = |i: usize| if i < n { reg.callees[i].since } else { remote.callees[i - n].since };
            let i = pick(reg.invoke, n + remote.callees.len(), since, rr)?;
            let (callee, registration) = match reg.callees.get(i) {
                Some(&c) => (c, reg.registration),
                None => {
                    let c = remote.callees[i - n];
                    (Callee { session: c.session, disclose_caller: c.disclose_caller, since: c.since }, c.registration)
                }
            };
            Some(Route { policy, registration, owner: reg.owner, callee: Some(callee), central: false })
        }
        _ => None,
    }
}

/// A call waiting for the registration owner's pick of its callee.
pub struct Pending {
    inv: Invoke,
    /// The caller's identity, for a callee that asks for it (`disclose_caller`).
    identity: Option<Box<Identity>>,
    /// Disclosed whatever the callee asks.
    always: bool,
}

/// The owner picked the callee of a round-robin call: invoke it. A call
/// that ended meanwhile (timeout, CANCEL) is forgotten.
pub fn on_picked(w: &mut Shard, caller: u64, request: u64, callee: Option<Callee>) {
    let Some(&handle) = w.sessions.get(&caller) else { return };
    let Some(c) = session(w, handle).busy.as_deref_mut().and_then(|b| b.calls.get_mut(&request)) else { return };
    let Some(p) = c.pending.take() else { return };
    let Some(callee) = callee else {
        take_call(w, handle, request);
        let text = Some("the procedure's registration is gone".to_owned());
        return error(w, handle, m::CALL, request, "wamp.error.no_such_procedure", text);
    };
    c.callee = Some(callee.session);
    let Pending { mut inv, identity, always } = *p;
    inv.callee = callee.session.id;
    inv.disclosed = if always || callee.disclose_caller { identity } else { None };
    w.peers.send(callee.session.worker, ShardMsg::Invoke(Box::new(inv)));
}

/// A call in flight, at its caller's worker.
pub struct OutCall {
    /// `None` while the registration's owner picks it (round-robin).
    pub(super) callee: Option<SessionRef>,
    registration: u64,
    started: Instant,
    /// CALL option `timeout`; with progressive results it runs from one
    /// result to the next.
    timeout: Option<Duration>,
    pub(super) deadline: Option<Instant>,
    /// The caller is still sending progressive input (`progress: true`).
    input_open: bool,
    /// The invocation, until the owner's pick names the callee.
    pending: Option<Box<Pending>>,
}

/// How many ended progressive-input calls a session remembers (to ignore
/// their late continuations).
const ENDED_INPUTS: usize = 16;

/// Ends a call of this session's: forgets it and its deadline.
fn take_call(w: &mut Shard, handle: usize, request: u64) -> Option<OutCall> {
    let s = session(w, handle);
    let caller = s.id;
    let s = s.busy.as_deref_mut()?;
    let call = s.calls.remove(&request)?;
    if call.input_open {
        if s.ended_inputs.len() == ENDED_INPUTS {
            s.ended_inputs.pop_front();
        }
        s.ended_inputs.push_back(request);
    }
    if let Some(at) = call.deadline {
        w.call_deadlines.remove(&(at, caller, request));
    }
    Some(call)
}

/// The error that goes back to a caller when its call cannot be invoked.
fn fail(w: &mut Shard, inv: &Invoke, error: &str, text: String) {
    let payload = Payload::args(vec![Value::Str(text)]);
    let outcome = CallOutcome::Error { error: error.into(), details: Dict::new(), payload };
    let done = CallDone { caller: inv.caller.id, request: inv.request, outcome };
    w.peers.send(inv.caller.worker, ShardMsg::CallDone(Box::new(done)));
}

/// More progressive input for an invocation on this worker. If the
/// invocation ended meanwhile, it is dropped.
fn continue_invocation(w: &mut Shard, inv: Invoke) {
    let Some(&handle) = w.sessions.get(&inv.callee) else { return };
    let Some(s) = session(w, handle).busy.as_deref_mut() else { return };
    let key = (inv.caller, inv.request);
    let Some(&request) = s.open_inputs.get(&key) else { return };
    if !inv.progress {
        s.open_inputs.remove(&key);
    }
    let mut details = if inv.progress { vec![("progress".to_owned(), Value::Bool(true))] } else { Dict::new() };
    if let Some(ppt) = inv.ppt {
        details.extend(*ppt);
    }
    send(w, handle, &Msg::Invocation { request, registration: inv.registration, details, payload: inv.payload });
}

/// A call arrives at the callee's worker.
pub fn on_invoke(w: &mut Shard, inv: Invoke) {
    if inv.continuation {
        return continue_invocation(w, inv);
    }
    let handle = w.sessions.get(&inv.callee).copied();
    let registered = handle.is_some_and(|h| session(w, h).regs.iter().any(|r| r.registration == inv.registration));
    let (Some(handle), true) = (handle, registered) else {
        let text = format!("callee of '{}' is gone", inv.procedure);
        return fail(w, &inv, "wamp.error.no_such_procedure", text);
    };
    let s = session(w, handle);
    if inv.progress && !(s.progressive_invocations && s.call_canceling) {
        let text = "the callee does not take progressive call invocations (with call canceling)".to_owned();
        return fail(w, &inv, "wamp.error.feature_not_supported", text);
    }
    if inv.ppt.is_some() && !s.ppt {
        let text = "the callee does not take payload passthru mode".to_owned();
        return fail(w, &inv, "wamp.error.feature_not_supported", text);
    }
    let s = s.busy();
    s.next_invocation = if s.next_invocation >= m::MAX_ID { 1 } else { s.next_invocation + 1 };
    let request = s.next_invocation;
    let call = InCall {
        caller: inv.caller,
        request: inv.request,
        receive_progress: inv.receive_progress,
        caller_ppt: inv.caller_ppt,
    };
    s.invocations.insert(request, call);
    let mut details = Dict::new();
    if inv.progress {
        s.open_inputs.insert((inv.caller, inv.request), request);
        details.push(("progress".to_owned(), Value::Bool(true)));
    }
    if inv.pattern {
        details.push(("procedure".to_owned(), Value::Str(inv.procedure)));
    }
    if inv.receive_progress {
        details.push(("receive_progress".to_owned(), Value::Bool(true)));
    }
    if let Some(who) = &inv.disclosed {
        identity_details(&mut details, "caller", who);
    }
    if let Some(ppt) = inv.ppt {
        details.extend(*ppt);
    }
    if let Some(more) = inv.details {
        details.extend(*more);
    }
    let msg = Msg::Invocation { request, registration: inv.registration, details, payload: inv.payload };
    send(w, handle, &msg);
}

/// An invocation in flight, at its callee's worker.
pub struct InCall {
    pub(super) caller: SessionRef,
    /// The caller's request ID.
    pub(super) request: u64,
    /// The caller asked for progressive results.
    receive_progress: bool,
    /// The caller takes payload passthru mode.
    caller_ppt: bool,
}

/// A YIELD: the final result, or (`progress: true`) a progressive one,
/// which goes to the caller only if it asked for them and leaves the
/// invocation open. A YIELD in payload passthru mode for a caller that does
/// not take it is refused to the callee (`wamp.error.feature_not_supported`)
/// and ends the call with that error.
pub(super) fn yielded(w: &mut Shard, handle: usize, request: u64, options: Dict, payload: Payload) {
    let progress = match bool_opt(&options, "progress") {
        Ok(p) => p.unwrap_or(false),
        Err(e) => return violation(w, handle, &e),
    };
    let s = session(w, handle);
    let ppt = match ppt_options(s, &options) {
        Ok(p) => p,
        Err(e) => return violation(w, handle, &e),
    };
    // Unknown invocation (the caller left, or a late answer): dropped.
    let Some(call) = s.busy.as_deref().and_then(|b| b.invocations.get(&request)) else { return };
    if ppt.is_some() && !call.caller_ppt {
        let text = Some("the caller does not take payload passthru mode".to_owned());
        error(w, handle, m::YIELD, request, "wamp.error.feature_not_supported", text);
        let payload = Payload::args(vec![Value::Str(
            "the callee answered in payload passthru mode, which this caller did not announce".into(),
        )]);
        let outcome =
            CallOutcome::Error { error: "wamp.error.feature_not_supported".into(), details: Dict::new(), payload };
        return callee_done(w, handle, request, outcome);
    }
    if !progress {
        return callee_done(w, handle, request, CallOutcome::Result(payload, ppt));
    }
    // A caller that did not ask for progressive results: dropped, never forwarded.
    if !call.receive_progress {
        return;
    }
    let (caller, call_request) = (call.caller, call.request);
    let done = CallDone { caller: caller.id, request: call_request, outcome: CallOutcome::Progress(payload, ppt) };
    w.peers.send(caller.worker, ShardMsg::CallDone(Box::new(done)));
}

/// The callee answered (final YIELD or ERROR) an invocation.
pub(super) fn callee_done(w: &mut Shard, handle: usize, request: u64, outcome: CallOutcome) {
    // Unknown: the caller left, or a late answer. Dropped, as the spec says.
    let Some(s) = session(w, handle).busy.as_deref_mut() else { return };
    let Some(InCall { caller, request: call_request, .. }) = s.invocations.remove(&request) else { return };
    if !s.open_inputs.is_empty() {
        s.open_inputs.remove(&(caller, call_request));
    }
    let done = CallDone { caller: caller.id, request: call_request, outcome };
    w.peers.send(caller.worker, ShardMsg::CallDone(Box::new(done)));
}

/// A call's end arrives at the caller's worker.
pub fn on_call_done(w: &mut Shard, done: CallDone) {
    if done.caller == authorizer::ROUTER_CALLER {
        return authorizer::on_answer(w, done);
    }
    let Some(&handle) = w.sessions.get(&done.caller) else { return };
    let request = done.request;
    let (msg, last) = match done.outcome {
        // Progressive results come before the final answer, on the same
        // channel, so in order; they leave the call open.
        CallOutcome::Progress(payload, ppt) => {
            let mut details = vec![("progress".to_owned(), Value::Bool(true))];
            details.extend(ppt.into_iter().flat_map(|p| *p));
            (Msg::Result { request, details, payload }, false)
        }
        CallOutcome::Result(payload, ppt) => {
            let details = ppt.map_or_else(Dict::new, |p| *p);
            (Msg::Result { request, details, payload }, true)
        }
        CallOutcome::Error { error, details, payload } => {
            (Msg::Error { request_type: m::CALL, request, details, error, payload }, true)
        }
    };
    // Exactly one final answer per call: a second one finds no entry.
    // Some(Some(start)): the final answer; Some(None): a progressive one.
    let started = if last {
        take_call(w, handle, request).map(|c| Some(c.started))
    } else {
        let now = w.now;
        let s = session(w, handle);
        let caller = s.id;
        let Some(c) = s.busy.as_deref_mut().and_then(|b| b.calls.get_mut(&request)) else { return };
        // With progressive results the timeout runs from result to result.
        if let (Some(t), Some(old)) = (c.timeout, c.deadline) {
            c.deadline = Some(now + t);
            w.call_deadlines.remove(&(old, caller, request));
            w.call_deadlines.insert((now + t, caller, request));
        }
        Some(None)
    };
    let Some(started) = started else { return };
    send(w, handle, &msg);
    if let Some(t) = started {
        w.metrics.record(Op::CallResult, t, w.now);
    }
}

/// Calls past their `timeout` (every worker tick, on the caller's worker):
/// the caller gets ERROR `wamp.error.timeout`, and the callee's worker is
/// told to forget the invocation (its late YIELD is then dropped) and to
/// INTERRUPT a callee that announced `call_canceling` (mode `killnowait`).
pub fn expire_calls(w: &mut Shard) {
    while let Some(&(at, caller, request)) = w.call_deadlines.first() {
        if at > w.now {
            return;
        }
        w.call_deadlines.pop_first();
        if caller == authorizer::ROUTER_CALLER {
            authorizer::on_timeout(w, request);
            continue;
        }
        let Some(&handle) = w.sessions.get(&caller) else { continue };
        let Some(OutCall { callee, .. }) = take_call(w, handle, request) else { continue };
        error(w, handle, m::CALL, request, "wamp.error.timeout", Some("the call timed out".into()));
        // Not invoked yet (waiting for the pick): nobody to tell.
        let Some(callee) = callee else { continue };
        let me = SessionRef { worker: w.id, id: caller };
        let why = Interruption::Timeout;
        w.peers.send(callee.worker, ShardMsg::Interrupt { callee: callee.id, caller: me, request, why });
    }
}

/// CANCEL of one of this session's calls. `skip` and `killnowait` (the
/// default) end the call now with ERROR `wamp.error.canceled`; `kill`
/// leaves the ending to the callee's answer to the INTERRUPT. A CANCEL for
/// a call that already ended is ignored: it crossed the answer.
pub(super) fn cancel(w: &mut Shard, handle: usize, request: u64, options: Dict) {
    let why = match dict_get(&options, "mode") {
        None => Interruption::KillNoWait,
        Some(Value::Str(m)) if m == "killnowait" => Interruption::KillNoWait,
        Some(Value::Str(m)) if m == "skip" => Interruption::Skip,
        Some(Value::Str(m)) if m == "kill" => Interruption::Kill,
        Some(v) => {
            let msg = format!("CANCEL mode must be 'skip', 'kill' or 'killnowait', got {v:?}");
            return error(w, handle, m::CANCEL, request, "wamp.error.invalid_argument", Some(msg));
        }
    };
    let s = session(w, handle);
    let caller = s.id;
    let Some(callee) = s.busy.as_deref().and_then(|b| b.calls.get(&request)).map(|c| c.callee) else { return };
    // Not invoked yet (waiting for the pick): it just ends, in every mode.
    let Some(callee) = callee else {
        take_call(w, handle, request);
        return error(w, handle, m::CALL, request, "wamp.error.canceled", Some("the call was canceled".into()));
    };
    if why != Interruption::Kill {
        take_call(w, handle, request);
        error(w, handle, m::CALL, request, "wamp.error.canceled", Some("the call was canceled".into()));
    }
    let me = SessionRef { worker: w.id, id: caller };
    w.peers.send(callee.worker, ShardMsg::Interrupt { callee: callee.id, caller: me, request, why });
}

/// A call timed out or was canceled at its caller's worker.
pub fn on_interrupt(w: &mut Shard, callee: u64, caller: SessionRef, request: u64, why: Interruption) {
    let Some(&handle) = w.sessions.get(&callee) else { return };
    let s = session(w, handle);
    let call_canceling = s.call_canceling;
    let Some(s) = s.busy.as_deref_mut() else { return };
    let Some(invocation) =
        s.invocations.iter().find(|(_, c)| c.caller == caller && c.request == request).map(|(&i, _)| i)
    else {
        return;
    };
    let (mode, reason) = match (why, call_canceling) {
        (Interruption::Kill, true) => ("kill", "wamp.error.canceled"),
        (Interruption::KillNoWait, true) => ("killnowait", "wamp.error.canceled"),
        (Interruption::Timeout, true) => ("killnowait", "wamp.error.timeout"),
        // Skip, or a callee that cannot be interrupted (then every mode is
        // skip): forget the invocation. A `kill` left the caller waiting:
        // end its call now.
        _ => {
            s.invocations.remove(&invocation);
            s.open_inputs.remove(&(caller, request));
            if why == Interruption::Kill {
                let outcome = CallOutcome::Error {
                    error: "wamp.error.canceled".into(),
                    details: Dict::new(),
                    payload: Payload::args(vec![Value::Str("the call was canceled".into())]),
                };
                let done = CallDone { caller: caller.id, request, outcome };
                w.peers.send(caller.worker, ShardMsg::CallDone(Box::new(done)));
            }
            return;
        }
    };
    if why != Interruption::Kill {
        s.invocations.remove(&invocation);
        s.open_inputs.remove(&(caller, request));
    }
    interrupt(w, handle, invocation, mode, reason);
}

fn interrupt(w: &mut Shard, handle: usize, invocation: u64, mode: &str, reason: &str) {
    let options = vec![("mode".to_owned(), Value::Str(mode.into())), ("reason".to_owned(), Value::Str(reason.into()))];
    send(w, handle, &Msg::Interrupt { request: invocation, options });
}

/// The caller of some invocations on this worker left: forget them, so the
/// callee's late YIELD is dropped, and INTERRUPT (`killnowait`) the callees
/// that take it, as the spec says for a caller leaving.
pub fn on_caller_gone(w: &mut Shard, caller: SessionRef) {
    let mut interrupted = Vec::new();
    for (handle, conn) in w.conns.iter_mut() {
        let Some(s) = conn.wamp().and_then(|c| c.session.as_mut()) else { continue };
        let tell = s.call_canceling;
        let Some(s) = s.busy.as_deref_mut() else { continue };
        if s.invocations.is_empty() {
            continue;
        }
        s.invocations.retain(|&invocation, c| {
            if c.caller == caller && tell {
                interrupted.push((handle, invocation));
            }
            c.caller != caller
        });
        s.open_inputs.retain(|(c, _), _| *c != caller);
    }
    for (handle, invocation) in interrupted {
        interrupt(w, handle, invocation, "killnowait", "wamp.error.canceled");
    }
}

/// Node `node` of the cluster left (or came back as a new life): the calls
/// of this worker's sessions that its callees were serving end with ERROR
/// `wamp.error.canceled`, as when a callee leaves, and the invocations its
/// sessions were waiting for are forgotten (their callees INTERRUPTed, as
/// when a caller leaves).
pub fn on_node_lost(w: &mut Shard, node: crate::cluster::NodeId) {
    let on_node = |s: SessionRef| crate::cluster::node_of(s.worker).is_some_and(|(n, _)| n == node);
    let mut ended = Vec::new();
    let mut interrupted = Vec::new();
    for (handle, conn) in w.conns.iter_mut() {
        let Some(s) = conn.wamp().and_then(|c| c.session.as_mut()) else { continue };
        let tell = s.call_canceling;
        let Some(s) = s.busy.as_deref_mut() else { continue };
        for (&request, c) in &s.calls {
            if c.callee.is_some_and(on_node) {
                ended.push((handle, request));
            }
        }
        if s.invocations.is_empty() {
            continue;
        }
        s.invocations.retain(|&invocation, c| {
            let gone = on_node(c.caller);
            if gone && tell {
                interrupted.push((handle, invocation));
            }
            !gone
        });
        s.open_inputs.retain(|(c, _), _| !on_node(*c));
    }
    for (handle, request) in ended {
        take_call(w, handle, request);
        let text = Some("the callee's node left the cluster before answering".to_owned());
        error(w, handle, m::CALL, request, "wamp.error.canceled", text);
    }
    for (handle, invocation) in interrupted {
        interrupt(w, handle, invocation, "killnowait", "wamp.error.canceled");
    }
}
