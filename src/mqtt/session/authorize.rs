//! The dynamic authorizer for MQTT sessions (a role with `authorizer`):
//! the same procedure, call and decision cache as WAMP's
//! (`wamp/session/authorizer.rs`). A PUBLISH or SUBSCRIBE whose decision
//! is neither in the cache nor already given for this packet parks the
//! packet, with the connection's input paused, while the router asks; the
//! answer is remembered for the packet (`Session.decisions`) and the
//! packet handled again, so a SUBSCRIBE with several uncached filters
//! asks once per filter, and applies nothing before all are decided.

use super::*;
use crate::auth::rules::Action;
use crate::router::CallOutcome;
use crate::value::{Dict, Value};
use crate::wamp::session::{authorizer_call, read_decision, Decision, ROUTER_CALLER};

/// What a role says about an action on a URI.
pub(super) enum Decided {
    Yes,
    No,
    /// A dynamic role without a decision yet: the packet must wait.
    Ask,
}

/// A packet waiting for the authorizer.
pub struct MqttParked {
    handle: usize,
    serial: u64,
    slot: usize,
    session: u64,
    packet: Packet,
    action: Action,
    uri: String,
    callee: SessionRef,
}

pub(super) fn decide(w: &Shard, slot: usize, action: Action, uri: &str) -> Decided {
    let s = &w.mqtt.sessions[slot];
    let Some(rules) = &s.who.rules else { return Decided::Yes };
    if rules.authorizer.is_none() {
        return if rules.lookup(uri).allows(action) { Decided::Yes } else { Decided::No };
    }
    let given = s.decisions.iter().find(|(a, u, _)| *a == action && u == uri).map(|d| d.2);
    let cached = || w.authz_cache.get(&s.who.authz_key, action, uri, w.now).map(|d| d.allow);
    match given.or_else(cached) {
        Some(true) => Decided::Yes,
        Some(false) => Decided::No,
        None => Decided::Ask,
    }
}

/// Parks `packet` and asks the role's authorizer about `action` on `uri`.
pub(super) fn park(w: &mut Shard, handle: usize, slot: usize, packet: Packet, action: Action, uri: String) {
    let s = &w.mqtt.sessions[slot];
    let proc = s.who.rules.as_ref().and_then(|r| r.authorizer.clone()).expect("a dynamic role");
    let client = s.key.split_once('\0').map_or(&*s.key, |(_, c)| c).to_owned();
    let details = Value::Dict(vec![
        ("session".into(), Value::UInt(s.id)),
        ("authid".into(), Value::Str(s.who.authid.clone())),
        ("authrole".into(), Value::Str(s.who.authrole.to_string())),
        ("realm".into(), Value::Str(s.realm.to_string())),
        ("transport".into(), Value::Dict(vec![("type".into(), Value::Str("mqtt".into()))])),
        ("client_id".into(), Value::Str(client)),
    ]);
    let (realm, session) = (s.realm.clone(), s.id);
    let args = vec![details, Value::Str(uri.clone()), Value::Str(action.name().into()), Value::Dict(Dict::new())];
    match authorizer_call(w, &realm, proc, args) {
        Ok((request, callee)) => {
            let serial = w.conns[handle].serial;
            let parked = MqttParked { handle, serial, slot, session, packet, action, uri, callee };
            w.mqtt_authz.insert(request, parked);
            w.conns[handle].paused = true;
        }
        Err(_) => {
            // Nobody to ask: refused, and the packet handled so.
            w.mqtt.sessions[slot].decisions.push((action, uri, false));
            on_packet(w, handle, packet);
        }
    }
}

/// The authorizer's answer for a parked packet (`None`: no answer in
/// time; the callee is interrupted).
pub fn on_authorizer_answer(w: &mut Shard, request: u64, outcome: Option<CallOutcome>) {
    let Some(p) = w.mqtt_authz.remove(&request) else { return };
    let decision = match outcome {
        Some(CallOutcome::Result(payload, _)) => read_decision(&payload).ok(),
        Some(CallOutcome::Progress(..)) => {
            w.mqtt_authz.insert(request, p);
            return;
        }
        Some(CallOutcome::Error { .. }) => None,
        None => {
            let caller = SessionRef { worker: w.id, id: ROUTER_CALLER };
            let why = crate::router::Interruption::Timeout;
            w.peers.send(p.callee.worker, ShardMsg::Interrupt { callee: p.callee.id, caller, request, why });
            None
        }
    };
    let alive = w.conns.get(p.handle).is_some_and(|c| c.serial == p.serial && !c.is_closed())
        && w.mqtt.by_id.get(&p.session) == Some(&p.slot);
    if !alive {
        return;
    }
    let (d, ttl) = decision.unwrap_or((Decision { allow: false, disclose: false }, None));
    if let Some(ttl) = ttl {
        let key = w.mqtt.sessions[p.slot].who.authz_key.clone();
        let until = w.now + ttl;
        w.authz_cache.put(key, p.action, p.uri.clone(), d, until);
    }
    w.mqtt.sessions[p.slot].decisions.push((p.action, p.uri, d.allow));
    w.conns[p.handle].paused = false;
    let before = w.mqtt_authz.len();
    on_packet(w, p.handle, p.packet);
    // Parked again (another filter of a SUBSCRIBE)? Then it waits; else
    // the packet is done: its decisions go, and input resumes (unless the
    // packet itself paused it: a SUBSCRIBE's barrier resumes it later).
    if w.mqtt_authz.len() <= before {
        if let Some(s) = w.mqtt.sessions.get_mut(p.slot) {
            s.decisions.clear();
        }
        unpause_after(w, p.handle);
    }
}

fn unpause_after(w: &mut Shard, handle: usize) {
    if mqtt(w, handle).is_some_and(|m| m.ws) {
        drain_ws(w, handle);
    }
    if w.conns.get(handle).is_some_and(|c| !c.paused) {
        w.resume_reading(handle);
    }
}
