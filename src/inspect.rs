//! What a worker shows the admin listener of itself (`ShardMsg::Inspect`):
//! its sessions (WAMP and MQTT, with identity, peer, outbound queue and
//! age), its subscriptions and its load. Built on the worker when asked
//! (a bounded list), sent back without waiting (`try_send` on the asker's
//! one-slot channel), serialized to JSON on the admin thread.

use crate::conn::{ConnStats, Proto};
use crate::metrics::{CloseReason, Load, Snapshot};
use crate::router::Member;
use crate::router::Realm;
use crate::worker::shard::Shard;
use serde::Serialize;

/// Most sessions (and subscriptions) one worker lists in one report.
pub const MAX_LISTED: usize = 2000;

/// Closes a worker remembers for the report (the newest).
pub const RECENT_CLOSES: usize = 32;

#[derive(Clone, Debug, Default, Serialize)]
pub struct WorkerReport {
    pub worker: u16,
    pub connections: usize,
    pub sessions: Vec<SessionInfo>,
    pub subscriptions: Vec<SubscriptionInfo>,
    /// The registrations this worker owns (each is owned by one worker).
    pub registrations: Vec<RegistrationInfo>,
    /// More sessions, subscriptions or registrations than `MAX_LISTED`:
    /// the lists are cut.
    pub truncated: bool,
    /// Bytes queued to clients on this worker, over all connections.
    pub queued_bytes: usize,
    /// The last sessions that ended here, oldest first.
    pub recent_closes: Vec<CloseInfo>,
}

/// A session that ended, and why.
#[derive(Clone, Debug, Serialize)]
pub struct CloseInfo {
    pub session: u64,
    pub protocol: &'static str,
    pub realm: String,
    pub authid: String,
    /// `CloseReason::name`: `client`, `lost`, `slow_consumer`, `killed`, ...
    pub reason: &'static str,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
}

/// Remembers a close for the report (bounded: the oldest goes).
pub fn note_close(w: &mut Shard, close: CloseInfo) {
    if w.recent_closes.len() == RECENT_CLOSES {
        w.recent_closes.pop_front();
    }
    w.recent_closes.push_back(close);
}

#[derive(Clone, Debug, Serialize)]
pub struct SessionInfo {
    pub id: u64,
    /// `wamp` or `mqtt`.
    pub protocol: &'static str,
    pub realm: String,
    pub authid: String,
    pub authrole: String,
    /// The peer's address; none for an MQTT session that is offline.
    pub peer: Option<String>,
    pub online: bool,
    pub queued_bytes: usize,
    pub queued_messages: usize,
    /// Seconds since the session opened (MQTT: since it was created).
    pub age_s: u64,
    pub subscriptions: usize,
    /// Messages from and to the client since the session began (MQTT: over
    /// its current connection), and those dropped for it.
    pub messages_in: u64,
    pub messages_out: u64,
    pub dropped: u64,
    /// Its outbound queue is refusing events (the slow-consumer grace
    /// period is running).
    pub slow: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct RegistrationInfo {
    pub id: u64,
    pub realm: String,
    pub procedure: String,
    #[serde(rename = "match")]
    pub policy: &'static str,
    pub invoke: &'static str,
    pub callees: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct SubscriptionInfo {
    pub id: u64,
    pub realm: String,
    pub topic: String,
    #[serde(rename = "match")]
    pub policy: &'static str,
    pub wamp_subscribers: usize,
    pub mqtt_subscribers: usize,
}

/// This worker's report.
pub fn report(w: &Shard) -> WorkerReport {
    let mut r = WorkerReport {
        worker: w.id,
        connections: w.conns.len(),
        recent_closes: w.recent_closes.iter().cloned().collect(),
        ..Default::default()
    };
    for (handle, c) in w.conns.iter() {
        r.queued_bytes += c.out.bytes();
        let peer = || c.peer.map(|a| a.to_string());
        match &c.proto {
            Proto::Wamp(conn) => {
                if let Some(info) = crate::wamp::session::inspect(w, handle, conn) {
                    push(&mut r.sessions, &mut r.truncated, SessionInfo { peer: peer(), ..info });
                }
            }
            Proto::Mqtt(_) => {} // listed below, with the offline ones
            _ => {}
        }
    }
    let now_ms = crate::router::unix_millis();
    for (_, s) in w.mqtt.sessions.iter() {
        let conn = s.conn.and_then(|h| w.conns.get(h));
        let info = SessionInfo {
            id: s.id,
            protocol: "mqtt",
            realm: s.realm.to_string(),
            authid: s.who.authid.clone(),
            authrole: s.who.authrole.to_string(),
            peer: conn.and_then(|c| c.peer).map(|a| a.to_string()),
            online: conn.is_some(),
            queued_bytes: conn.map_or(0, |c| c.out.bytes()),
            queued_messages: conn.map_or(0, |c| c.out.messages()) + s.queue.len(),
            age_s: now_ms.saturating_sub(s.created_ms()) / 1000,
            subscriptions: s.subs.len(),
            messages_in: conn.map_or(0, |c| c.stats.msgs_in),
            messages_out: conn.map_or(0, |c| c.stats.msgs_out),
            dropped: conn.map_or(0, |c| c.stats.dropped) + s.dropped,
            slow: conn.is_some_and(|c| c.over_since.is_some()),
        };
        push(&mut r.sessions, &mut r.truncated, info);
    }
    for (&id, sub) in &w.local_subs {
        let wamp = sub.members.iter().filter(|m| matches!(m, Member::Wamp(_))).count();
        let info = SubscriptionInfo {
            id,
            realm: sub.key.realm.to_string(),
            topic: sub.key.topic.clone(),
            policy: sub.key.policy.name(),
            wamp_subscribers: wamp,
            mqtt_subscribers: sub.members.len() - wamp,
        };
        push(&mut r.subscriptions, &mut r.truncated, info);
    }
    for realm in w.procs.realms() {
        w.procs.for_each(realm, |uri, policy, reg| {
            if reg.owner != w.id {
                return;
            }
            let info = RegistrationInfo {
                id: reg.registration,
                realm: realm.to_string(),
                procedure: uri.to_owned(),
                policy: policy.name(),
                invoke: reg.invoke.as_str(),
                callees: reg.callees.len(),
            };
            push(&mut r.registrations, &mut r.truncated, info);
        });
    }
    r
}

fn push<T>(list: &mut Vec<T>, truncated: &mut bool, item: T) {
    if list.len() < MAX_LISTED {
        list.push(item);
    } else {
        *truncated = true;
    }
}

/// Adds what a session's connection counted to its realm's totals (at
/// the session's end: the live sessions are added at each snapshot).
pub fn fold_stats(w: &mut Shard, realm: &Realm, stats: ConnStats, reason: CloseReason) {
    let r = w.realm_totals.entry(realm);
    r.messages_in += stats.msgs_in;
    r.messages_out += stats.msgs_out;
    r.dropped += stats.dropped;
    if reason == CloseReason::SlowConsumer {
        r.slow_consumer_closes += 1;
    }
}

/// A metrics snapshot with what only the shard knows: its load, and each
/// realm's figures (the ended sessions' totals plus the live sessions'
/// counts, its sessions and retained keys now). Once per interval: one
/// pass over the connections and the MQTT sessions.
pub fn snapshot(w: &mut Shard) -> Snapshot {
    let mut snap = w.metrics.snapshot();
    let mut realms = w.realm_totals.start_report();
    let mut load = Load { connections: w.conns.len() as u64, queued_bytes: 0 };
    for (_, c) in w.conns.iter() {
        load.queued_bytes += c.out.bytes() as u64;
        if let Proto::Wamp(conn) = &c.proto {
            if let Some(s) = &conn.session {
                let r = realms.get(&s.realm);
                r.wamp_sessions += 1;
                r.messages_in += c.stats.msgs_in;
                r.messages_out += c.stats.msgs_out;
                r.dropped += c.stats.dropped;
            }
        }
    }
    for (_, s) in w.mqtt.sessions.iter() {
        let stats = s.conn.and_then(|h| w.conns.get(h)).map(|c| c.stats);
        let r = realms.get(&s.realm);
        match stats {
            Some(st) => {
                r.mqtt_online += 1;
                r.messages_in += st.msgs_in;
                r.messages_out += st.msgs_out;
                r.dropped += st.dropped;
            }
            None => r.mqtt_offline += 1,
        }
        r.dropped += s.dropped;
    }
    for (realm, n) in w.retained.counts() {
        realms.get(realm).retained_keys += n as u64;
    }
    snap.load = load;
    snap.realms = realms.finish();
    snap
}

/// Ends session `id` if it is on this worker (the admin listener's kill):
/// a WAMP session gets GOODBYE `wamp.close.killed`, an MQTT connection is
/// closed (its session stays, as after any disconnect).
pub fn kill(w: &mut Shard, id: u64) -> bool {
    if let Some(&handle) = w.sessions.get(&id) {
        crate::wamp::session::kill_by_admin(w, handle);
        return true;
    }
    let conn = w.mqtt.sessions.iter().find(|(_, s)| s.id == id).and_then(|(_, s)| s.conn);
    match conn {
        Some(handle) => {
            w.close(handle, CloseReason::Killed, None);
            true
        }
        None => false,
    }
}
