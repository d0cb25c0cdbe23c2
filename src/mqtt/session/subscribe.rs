//! SUBSCRIBE and UNSUBSCRIBE: filter checks, the core subscribe (SUBACK
//! after the barrier, input paused meanwhile), retained values after the
//! SUBACK.

use super::*;
use crate::auth::rules::Action;
use crate::worker::core::PendingAck;

pub(super) fn subscribe(
    w: &mut Shard,
    handle: usize,
    slot: usize,
    pkid: u16,
    filters: Vec<SubFilter>,
    id: Option<u32>,
) {
    let started = Instant::now();
    let realm = w.mqtt.sessions[slot].realm.clone();
    let sid = w.mqtt.sessions[slot].id;
    let mut pending = PendingSuback { pkid, codes: vec![0; filters.len()], waiting: 0, retained: Vec::new(), started };
    let max_levels = w.cfg.mqtt.max_topic_levels;
    // A dynamic role: every filter decided before any takes effect (the
    // packet waits while the authorizer is asked about one).
    if w.mqtt.sessions[slot].who.rules.as_ref().is_some_and(|r| r.authorizer.is_some()) {
        for f in &filters {
            let Ok(parsed) = parse_filter(&f.filter) else { continue };
            if let authorize::Decided::Ask = authorize::decide(w, slot, Action::Subscribe, &parsed.topic) {
                let packet = Packet::Subscribe { pkid, filters: filters.clone(), id };
                return authorize::park(w, handle, slot, packet, Action::Subscribe, parsed.topic);
            }
        }
    }
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
        let s = &w.mqtt.sessions[slot];
        if let authorize::Decided::No = authorize::decide(w, slot, Action::Subscribe, &parsed.topic) {
            // The role may not: v5 says so (0x87), 3.1.1 has only 0x80.
            pending.codes[i] = if s.version == Version::V5 { reason::NOT_AUTHORIZED } else { reason::UNSPECIFIED };
            continue;
        }
        let share = parsed.share.map(Arc::from);
        let key = SubKey { realm: realm.clone(), topic: parsed.topic, policy: parsed.policy, share, filter: None };
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
pub(super) fn unpause(w: &mut Shard, handle: usize) {
    if !w.conns.get(handle).is_some_and(|c| c.paused) {
        return;
    }
    w.conns[handle].paused = false;
    if mqtt(w, handle).is_some_and(|m| m.ws) {
        drain_ws(w, handle);
    }
    // Frames still in the connection's input (not parsed while paused).
    if w.conns.get(handle).is_some_and(|c| !c.paused) {
        w.resume_reading(handle);
    }
}

pub(super) fn denied(w: &Shard, filter: &str) -> bool {
    w.cfg.mqtt.deny_subscribe.iter().any(|d| {
        d == filter
            || parse_filter(d).is_ok_and(|p| {
                p.policy == crate::router::MatchPolicy::Filter
                    && crate::mqtt::topic::filter_matches(&crate::mqtt::topic::filter_parts(&p.topic), &swap(filter))
            })
    })
}

/// The core's answer to a subscribe of this session.
pub fn subscribed(w: &mut Shard, slot: usize, request: u64, key: &SubKey, subscription: u64) {
    if !set_subscription(w, slot, key, subscription) {
        // Unsubscribed meanwhile.
        w.unsubscribe(Member::Mqtt(slot), subscription);
    }
    if request & RESTORE != 0 {
        let Some(r) = &mut w.mqtt.sessions[slot].restoring else {
            // Restored at start.
            w.mqtt.starting = w.mqtt.starting.saturating_sub(1);
            return persist::started_if_ready(w);
        };
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

/// Every subscription of a SUBSCRIBE is routed: the session is written and,
/// under `--durability sync` for a persistent session, the SUBACK waits
/// until it is on disk (a session present after a crash has what it was
/// told it has).
pub(super) fn finish_suback(w: &mut Shard, slot: usize, pending: PendingSuback) {
    if persist::durable(w, slot) && w.cfg.store.durability == crate::config::Durability::Sync {
        let session = w.mqtt.sessions[slot].id;
        let ticket = w.open_ticket(PendingAck::MqttSuback { slot, session, pending: Box::new(pending) });
        persist::save_acked(w, slot, Some((w.id, ticket)));
        return w.expect(ticket, 1, true);
    }
    persist::save(w, slot);
    send_suback(w, slot, pending);
}

/// The store has the session's subscriptions (or failed to write them:
/// the connection is closed, v5 told why, and the client can try again).
pub fn suback_stored(w: &mut Shard, slot: usize, pending: PendingSuback, error: Option<&str>) {
    let Some(h) = w.mqtt.sessions[slot].conn else { return };
    match error {
        None => send_suback(w, slot, pending),
        Some(e) => fail(w, h, reason::UNSPECIFIED, &format!("the session could not be stored: {e}")),
    }
}

fn send_suback(w: &mut Shard, slot: usize, pending: PendingSuback) {
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
pub fn on_retained(w: &mut Shard, slot: usize, session: u64, subscription: u64, values: Vec<Arc<Publication>>) {
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
        let out = Outgoing { qos: p.qos.min(qos), retain: true, sub_ids: ids.clone(), msg: p, seq: 0 };
        match w.mqtt.sessions[slot].moving {
            Some((to, session)) => w.peers.send(to, ShardMsg::Mqtt(Msg::Forward { session, out: Box::new(out) })),
            None => offer_recorded(w, slot, out, &mut Converted::default()),
        }
    }
}

pub(super) fn unsubscribe(w: &mut Shard, handle: usize, slot: usize, pkid: u16, filters: Vec<String>) {
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
    persist::save(w, slot);
    send(w, handle, codec::unsuback(ver, pkid, &codes));
}
