//! The protocol-neutral operations of a worker: subscribe, unsubscribe,
//! publish (route + local fan-out), and the handling of every message from
//! other workers. Protocol sessions call in here; completions go back out
//! through `crate::wamp::session`.

use super::{LocalKey, LocalSub, Shard, SubWaiter};
use crate::metrics::Op;
use crate::mqtt::session::{self as mqtt, Converted};
use crate::router::owner::Outbox;
use crate::router::{
    owner_of, MatchPolicy, Member, Publication, Realm, RegRelease, RetainedReply, SessionRef, ShardMsg, SubKey,
};
use crate::store::thread::StoreReq;
use crate::store::{record, Write};
use crate::wamp::session;
use crate::worker::tables::Divert;
use std::sync::Arc;
use std::time::Instant;

/// What became of a write whose publisher waits (`PendingAck`).
#[derive(Clone, Copy, Debug)]
pub enum AckOutcome<'a> {
    /// Applied (and durable, if the store is on).
    Stored,
    /// The store could not write it.
    Failed(&'a str),
    /// Its condition (`when`) failed.
    Refused,
    /// Over a bound of the store (`store.max_retained_*`).
    Limit(&'a str),
}

/// An acknowledgement that waits for the store (`route_acked`) or for a
/// key's owner (`KeyWrite`).
#[derive(Debug)]
pub enum PendingAck {
    /// PUBLISHED (if `acknowledge`) for this request of this session.
    Wamp { handle: usize, session: u64, request: u64, publication: u64, acknowledge: bool },
    /// PUBACK / PUBREC on this connection (`serial`: still the same one).
    Mqtt { handle: usize, serial: u64, version: crate::mqtt::codec::Version, qos: u8, pkid: u16 },
    /// SUBACK (and the retained values after it) of a persistent session,
    /// once its new subscriptions are on disk.
    MqttSuback { slot: usize, session: u64, pending: Box<crate::mqtt::session::PendingSuback> },
}

/// A publisher's acknowledgement and what it still waits for: the
/// retained write at the topic's owner, the writes for persistent MQTT
/// sessions at each worker the publication went to (`--durability sync`),
/// the publisher's own QoS 2 packet ID, a conditional write's decision.
#[derive(Debug)]
pub struct Waiting {
    pub ack: PendingAck,
    /// Completions still to come.
    left: u32,
    /// The first failure any of them reported.
    error: Option<String>,
    /// A conditional write was refused.
    refused: bool,
    /// Refused over a bound, and why.
    limit: Option<String>,
    /// Some subscription matched (MQTT 5: otherwise PUBACK 0x10).
    matched: bool,
}

/// What became of a subscribe request.
pub enum Subscribed {
    /// Already routed here: the subscription ID, answer now.
    Now(u64),
    /// Waiting for the owner's grant; the session is notified then.
    Later,
}

impl Shard {
    pub fn on_shard_msg(&mut self, msg: ShardMsg) {
        match msg {
            // The worker's own: it handles them before they reach here.
            ShardMsg::Accept(..) | ShardMsg::Shutdown | ShardMsg::TlsConfig(_) => {
                unreachable!("handled by the worker loop")
            }
            ShardMsg::Started => {
                // Before any connection: wills due at once go out now.
                self.mqtt.started = true;
                mqtt::housekeeping(self);
            }
            ShardMsg::Publish(p, shared) => self.deliver(&p, &shared),
            ShardMsg::FromCluster(p, serve) => {
                self.route_publication(p, Some(&serve));
            }
            ShardMsg::RemoteRoute { key, subscription, node, add: true } => {
                self.remote_topics.add(&key, subscription, 0, node)
            }
            ShardMsg::RemoteRoute { key, subscription, node, add: false } => {
                self.remote_topics.remove(&key, subscription, node)
            }
            ShardMsg::SubAcquire { key, from } => {
                // The node's interest in a key starts with its first
                // subscriber; the other nodes' ack completes the barrier.
                let copy = self.cluster.is_some().then(|| key.clone());
                if let Some(barrier) = self.owner.sub_acquire(key, from, &mut self.ids, &mut self.peers) {
                    if let (Some(link), Some(key)) = (&mut self.cluster, copy) {
                        link.send(crate::cluster::ClusterReq::Interest { key, add: true, barrier: Some(barrier) });
                    }
                }
            }
            ShardMsg::ClusterSync { token } => {
                if let Some(link) = &mut self.cluster {
                    link.send(crate::cluster::ClusterReq::Synced { token });
                }
            }
            ShardMsg::SubRelease { key, from, session } => {
                let copy = self.cluster.is_some().then(|| key.clone());
                if self.owner.sub_release(key, from, session, &mut self.peers) {
                    if let (Some(link), Some(key)) = (&mut self.cluster, copy) {
                        link.send(crate::cluster::ClusterReq::Interest { key, add: false, barrier: None });
                    }
                }
            }
            ShardMsg::SubGranted { key, subscription, created } => self.sub_granted(key, subscription, created),
            ShardMsg::SubDeleted { realm, subscription, session } => {
                session::sub_deleted(self, &realm, subscription, session)
            }
            ShardMsg::RouteAdd { key, subscription, created, worker, barrier } => {
                self.topics.add(&key, subscription, created, worker);
                self.peers.send(barrier.owner, ShardMsg::BarrierAck { barrier: barrier.id });
            }
            ShardMsg::RouteRemove { key, subscription, worker } => self.topics.remove(&key, subscription, worker),
            ShardMsg::RegAcquire(req) => {
                let part = self.owner.reg_acquire(req, &mut self.ids, &mut self.peers);
                self.share_part(part);
            }
            ShardMsg::RegRelease(r) => {
                let part = self.owner.reg_release(r, &mut self.peers);
                self.share_part(part);
            }
            ShardMsg::Claimed { ticket, refused } => {
                for part in self.owner.claimed(ticket, refused, &mut self.ids, &mut self.peers) {
                    self.share_part(Some(part));
                }
            }
            ShardMsg::RemoteProcs { realm, policy, reg } => self.remote_procs.set(&realm, policy, reg),
            ShardMsg::NodeLost { node } => {
                session::on_node_lost(self, node);
                session::gathers_without(self, node);
                session::replays_without(self, node);
                mqtt::on_node_lost(self, node);
            }
            ShardMsg::NodeWorkers { node, workers } => {
                self.cluster_nodes.retain(|&(n, _)| n != node);
                if workers > 0 {
                    self.cluster_nodes.push((node, workers));
                }
            }
            ShardMsg::RegReply { realm, procedure, policy, session, request, started, result } => {
                let reg = session::LocalReg { registration: 0, procedure, policy };
                match self.sessions.get(&session) {
                    Some(&handle) => session::registered(self, handle, request, reg, started, result),
                    None => {
                        // The session left while the barrier ran: undo.
                        if let Ok((registration, _)) = result {
                            let owner = owner_of(&realm, &reg.procedure, self.workers);
                            let callee = SessionRef { worker: self.id, id: session };
                            let release = RegRelease { realm, procedure: reg.procedure, policy, registration, callee };
                            self.peers.send(owner, ShardMsg::RegRelease(release));
                        }
                    }
                }
            }
            ShardMsg::ProcAdd { realm, procedure, policy, added, barrier } => {
                self.procs.add(&realm, &procedure, policy, added);
                self.peers.send(barrier.owner, ShardMsg::BarrierAck { barrier: barrier.id });
            }
            ShardMsg::ProcRemove { realm, procedure, policy, registration, callee } => {
                self.procs.remove(&realm, &procedure, policy, registration, callee);
                // A dynamic authorizer going away takes its decisions along.
                if !self.authz_cache.is_empty() && self.cfg.is_authorizer(&realm, &procedure) {
                    self.authz_cache.forget_realm(&realm);
                }
            }
            ShardMsg::RegDeleted { realm, registration, session } => {
                session::reg_deleted(self, &realm, registration, session)
            }
            ShardMsg::BarrierAck { barrier } => self.owner.barrier_ack(barrier, &mut self.peers),
            ShardMsg::Invoke(inv) => session::on_invoke(self, *inv),
            ShardMsg::Pick { realm, registration, caller, request } => {
                let callee = self.procs.by_id(&realm, registration).and_then(|(_, _, r)| r.pick());
                self.peers.send(caller.worker, ShardMsg::Picked { caller: caller.id, request, callee });
            }
            ShardMsg::Picked { caller, request, callee } => session::on_picked(self, caller, request, callee),
            ShardMsg::CallDone(done) => session::on_call_done(self, *done),
            ShardMsg::CallerGone { caller } => session::on_caller_gone(self, caller),
            ShardMsg::Interrupt { callee, caller, request, why } => {
                session::on_interrupt(self, callee, caller, request, why)
            }
            ShardMsg::Retain(p, ack) => self.retain(p, ack),
            ShardMsg::RetainedFromCluster { p, revision, own } => self.retained_from_cluster(p, revision, own),
            ShardMsg::RetainedAck { realm, topic, revision } => self.retained_ack(realm, topic, revision),
            ShardMsg::CasDone { realm, topic, outcome } => self.cas_done(realm, topic, outcome),
            ShardMsg::DeadWill { p, revision } => self.dead_will(&p, revision),
            ShardMsg::MqttDeadWill(will) => {
                // Published by the router, as this node's (and so sent on
                // to the other nodes).
                let me = SessionRef { worker: self.id, id: crate::router::ROUTER_SESSION };
                let p = Publication { id: self.ids.next_id(), publisher: me, started: self.now, ..*will };
                self.route(p);
            }
            ShardMsg::Reduce(p, ack) => self.reduce(p, ack),
            ShardMsg::TableRow(w) => self.table_row(*w),
            ShardMsg::TableDelta(d) => self.table_delta(*d),
            ShardMsg::KeyWrite(kw) => self.key_write(kw),
            ShardMsg::Record { p, limit, max_age_ms } => self.record(p, limit, max_age_ms),
            ShardMsg::HistoryQuery { realm, pattern, after, reply } => {
                let (anchor, events) = self.history.after(&realm, &pattern, reply.policy, after);
                self.peers.send(reply.worker, ShardMsg::HistoryReplay { reply, anchor, events, from: None });
            }
            ShardMsg::HistoryReplay { reply, anchor, events, from } => {
                if let Member::Wamp(handle) = reply.member {
                    session::on_history(self, handle, &reply, anchor, events, from);
                }
            }
            ShardMsg::KeySessionGone { realm, topic, session } => self.key_session_gone(&realm, &topic, session),
            ShardMsg::KeyReply { ticket, accepted } => {
                if let Some(w) = self.pending_acks.get_mut(&ticket) {
                    w.refused |= !accepted;
                }
                self.complete(ticket, None);
            }
            ShardMsg::OverLimit { ticket, why } => {
                if let Some(w) = self.pending_acks.get_mut(&ticket) {
                    w.limit = Some(why.to_string());
                }
                self.complete(ticket, None);
            }
            ShardMsg::Stored { tickets, error } => {
                for t in tickets {
                    self.complete(t, error.as_deref());
                }
            }
            ShardMsg::RetainedQuery { realm, pattern, reply } => {
                let mut expired = Vec::new();
                let values = self.retained.query(&realm, &pattern, reply.policy, self.now, &mut expired);
                self.forget_expired(expired);
                if !values.is_empty() {
                    self.peers.send(reply.worker, ShardMsg::Retained { reply, values });
                }
            }
            ShardMsg::Retained { reply, values } => match reply.member {
                Member::Mqtt(slot) => mqtt::on_retained(self, slot, reply.session, reply.subscription, values),
                Member::Wamp(handle) => session::on_retained(self, handle, &reply, values),
            },
            ShardMsg::MetaQuery { realm, query, reply, gather } => {
                session::on_meta_query(self, &realm, query, reply, gather)
            }
            ShardMsg::MetaAnswer { gather, answer, from } => session::on_meta_answer(self, gather, answer, from),
            ShardMsg::Revoke { callee, registration, reason } => session::on_revoke(self, callee, registration, reason),
            ShardMsg::Mqtt(msg) => mqtt::on_registry(self, msg),
            // The asker's channel has room for every worker's answer.
            ShardMsg::Inspect(reply) => {
                let _ = reply.try_send(crate::inspect::report(self));
            }
            ShardMsg::Kill { session, reply } => {
                let _ = reply.try_send(crate::inspect::kill(self, session));
            }
            ShardMsg::Sys(msg) => crate::mqtt::sys::on_msg(self, msg),
        }
    }

    /// Asks for the retained values matching a subscription: the topic's
    /// owner for an exact key, every worker for a pattern.
    pub fn query_retained(&mut self, realm: Realm, pattern: String, reply: RetainedReply) {
        if reply.policy == MatchPolicy::Exact {
            let owner = owner_of(&realm, &pattern, self.workers);
            self.peers.send(owner, ShardMsg::RetainedQuery { realm, pattern, reply });
        } else {
            for w in 0..self.workers as u16 {
                let msg =
                    ShardMsg::RetainedQuery { realm: realm.clone(), pattern: pattern.clone(), reply: reply.clone() };
                self.peers.send(w, msg);
            }
        }
    }

    /// Whether a subscriber is still the session it was.
    fn member_alive(&self, member: Member, session: u64) -> bool {
        match member {
            Member::Wamp(h) => self.sessions.get(&session) == Some(&h),
            Member::Mqtt(slot) => self.mqtt.by_id.get(&session) == Some(&slot),
        }
    }

    /// Subscribes a session to `key`.
    pub fn subscribe(
        &mut self,
        member: Member,
        session: u64,
        key: SubKey,
        request: u64,
        started: Instant,
    ) -> Subscribed {
        match self.local_keys.get_mut(&key) {
            Some(LocalKey::Active(subscription)) => {
                let subscription = *subscription;
                let local = self.local_subs.get_mut(&subscription).expect("active key has local subscribers");
                if !local.members.contains(&member) {
                    local.members.push(member);
                }
                Subscribed::Now(subscription)
            }
            Some(LocalKey::Pending(waiters)) => {
                waiters.push(SubWaiter { member, session, request, started });
                Subscribed::Later
            }
            None => {
                let owner = owner_of(&key.realm, &key.topic, self.workers);
                self.local_keys
                    .insert(key.clone(), LocalKey::Pending(vec![SubWaiter { member, session, request, started }]));
                self.peers.send(owner, ShardMsg::SubAcquire { key, from: self.id });
                Subscribed::Later
            }
        }
    }

    fn sub_granted(&mut self, key: SubKey, subscription: u64, created: bool) {
        let waiters = match self.local_keys.remove(&key) {
            Some(LocalKey::Pending(waiters)) => waiters,
            other => {
                // Grants answer acquires one to one; anything else is a bug.
                debug_assert!(false, "unexpected grant for {key:?}");
                if let Some(state) = other {
                    self.local_keys.insert(key, state);
                }
                return;
            }
        };
        let alive: Vec<SubWaiter> = waiters.into_iter().filter(|w| self.member_alive(w.member, w.session)).collect();
        if alive.is_empty() {
            let owner = owner_of(&key.realm, &key.topic, self.workers);
            self.peers.send(owner, ShardMsg::SubRelease { key, from: self.id, session: None });
            return;
        }
        self.local_keys.insert(key.clone(), LocalKey::Active(subscription));
        let filter = key.filter.as_deref().and_then(|f| serde_json::from_str(f).ok());
        let local = self.local_subs.entry(subscription).or_insert(LocalSub {
            key: key.clone(),
            filter,
            members: Vec::new(),
            next: 0,
        });
        for w in &alive {
            if !local.members.contains(&w.member) {
                local.members.push(w.member);
            }
        }
        if created {
            session::sub_created(self, &key, subscription, alive[0].session);
        }
        for w in alive {
            match w.member {
                Member::Wamp(h) => session::subscribed(self, h, w.request, subscription, w.started),
                Member::Mqtt(slot) => mqtt::subscribed(self, slot, w.request, &key, subscription),
            }
        }
    }

    /// Removes a subscriber from a subscription; the last local subscriber
    /// releases the key at its owner.
    pub fn unsubscribe(&mut self, member: Member, subscription: u64) {
        self.leave(member, subscription, None)
    }

    /// `unsubscribe`, naming the session that leaves: if the subscription
    /// ends with it, it is named in the `wamp.subscription.on_delete` event.
    pub fn leave(&mut self, member: Member, subscription: u64, session: Option<u64>) {
        let Some(local) = self.local_subs.get_mut(&subscription) else { return };
        local.members.retain(|&m| m != member);
        if local.members.is_empty() {
            let local = self.local_subs.remove(&subscription).expect("present");
            self.local_keys.remove(&local.key);
            let owner = owner_of(&local.key.realm, &local.key.topic, self.workers);
            self.peers.send(owner, ShardMsg::SubRelease { key: local.key, from: self.id, session });
        }
    }

    /// Routes a publication, and stores it at its topic's owner if retained.
    /// Returns whether any subscription matched (see `publish_arc`).
    pub fn route(&mut self, p: Publication) -> bool {
        self.route_acked(p, None)
    }

    /// `route`; a retained publication with `ack` is acknowledged (the
    /// pending acknowledgement is sent) once the store has it on disk
    /// (`--durability sync`), or at once when nothing waits for the disk.
    pub fn route_acked(&mut self, p: Publication, ack: Option<PendingAck>) -> bool {
        self.route_full(p, ack, false)
    }

    /// `route_acked`; `trace` (WAMP's fox-wamp option) records the event in
    /// its topic's history even if no history rule covers it. Events a rule
    /// covers are recorded anyway (from MQTT: at QoS 1 and 2).
    pub fn route_full(&mut self, p: Publication, ack: Option<PendingAck>, trace: bool) -> bool {
        let ticket = ack.map(|ack| self.open_ticket(ack));
        self.route_ticketed(p, ticket, trace)
    }

    /// `route_full` for a publisher that waits under `ticket` (from
    /// `open_ticket`; the caller may have counted completions of its own
    /// with `expect`). What it waits for here: the retained write, and under
    /// `--durability sync` for a QoS 1/2 publication, one answer from each
    /// worker it is routed to (`Publication::durable_ack`, see `deliver`).
    pub fn route_ticketed(&mut self, p: Publication, ticket: Option<u64>, trace: bool) -> bool {
        match self.divert(&p) {
            Ok(divert) => self.route_diverted(p, divert, ticket, trace),
            Err(why) => {
                // The protocol layers refuse these before they route; a
                // publication of the router's own (a will, say) gets here.
                log::debug!("worker {}: a publication to '{}' is not routed: {why:?}", self.id, p.topic);
                if let Some(t) = ticket {
                    self.expect(t, 0, false);
                }
                false
            }
        }
    }

    /// `route_full` with where the publication goes already decided
    /// (`Shard::divert`, which the protocol layers ask first).
    pub fn route_decided(&mut self, p: Publication, divert: Divert, ack: Option<PendingAck>, trace: bool) -> bool {
        let ticket = ack.map(|ack| self.open_ticket(ack));
        self.route_diverted(p, divert, ticket, trace)
    }

    /// `route_ticketed`, decided.
    pub fn route_diverted(&mut self, mut p: Publication, divert: Divert, ticket: Option<u64>, trace: bool) -> bool {
        let ack = ticket.map(|t| (self.id, t));
        match divert {
            Divert::None => {}
            Divert::Reduce => {
                // Folded into the key's value by its reducer, at the key's
                // owner (`worker::reduce`), instead of delivered as it is. A
                // waiting publisher is answered once its publication is
                // reduced (or refused: the key has too many waiting).
                let owner = owner_of(&p.realm, &p.topic, self.workers);
                self.peers.send(owner, ShardMsg::Reduce(Arc::new(p), ack));
                if let Some(t) = ticket {
                    self.expect(t, 1, true);
                }
                return true;
            }
            Divert::Row { table, topic, row } => {
                // A source row, to the owner of its topic (`worker::tables`);
                // a waiting publisher is answered once it is stored.
                let owner = owner_of(&p.realm, &topic, self.workers);
                let write = crate::worker::tables::RowWrite { realm: p.realm.clone(), table, topic, row, ack };
                self.peers.send(owner, ShardMsg::TableRow(Box::new(write)));
                if let Some(t) = ticket {
                    self.expect(t, 1, true);
                }
                return true;
            }
        }
        let durable_delivery = ticket.is_some()
            && p.qos > 0
            && self.store.is_some()
            && self.cfg.store.durability == crate::config::Durability::Sync;
        if durable_delivery {
            p.durable_ack = ticket.map(|t| (self.id, t));
        }
        let p = Arc::new(p);
        if let Some((limit, max_age_ms)) = self.history_bounds(&p, trace) {
            let owner = owner_of(&p.realm, &p.topic, self.workers);
            self.peers.send(owner, ShardMsg::Record { p: p.clone(), limit, max_age_ms });
        }
        let mut left = 0;
        if p.retain {
            let owner = owner_of(&p.realm, &p.topic, self.workers);
            self.peers.send(owner, ShardMsg::Retain(p.clone(), ticket.map(|t| (self.id, t))));
            left += u32::from(ticket.is_some());
        }
        let (matched, targets) = self.publish_counted(p);
        if let Some(t) = ticket {
            if durable_delivery {
                left += targets;
            }
            self.expect(t, left, matched);
        }
        matched
    }

    /// Whether a publication goes into its topic's history, and the ring's
    /// bounds (count, age in ms): `trace`, or a rule of its realm covers it
    /// (from MQTT: at QoS 1 and 2).
    pub(crate) fn history_bounds(&self, p: &Publication, trace: bool) -> Option<(usize, Option<u64>)> {
        if !trace && !self.cfg.any_history {
            return None;
        }
        let rule = self.cfg.history_rule(&p.realm, &p.topic);
        let keep = rule.is_some() && (matches!(p.body, crate::router::Body::Wamp(_)) || p.qos > 0);
        if !trace && !keep {
            return None;
        }
        Some(
            rule.map_or((crate::config::HISTORY_LIMIT, None), |r| {
                (r.limit, r.max_age_s.map(|s| s.saturating_mul(1000)))
            }),
        )
    }

    /// Keeps a publisher's acknowledgement until what it waits for is done
    /// (`expect` says how much; `complete` counts it down).
    pub fn open_ticket(&mut self, ack: PendingAck) -> u64 {
        self.next_ticket += 1;
        let w = Waiting { ack, left: 0, error: None, refused: false, limit: None, matched: true };
        self.pending_acks.insert(self.next_ticket, w);
        self.next_ticket
    }

    /// `n` more completions for `ticket`; with none left, it is answered
    /// now. `matched`: whether the publication matched any subscription.
    pub fn expect(&mut self, ticket: u64, n: u32, matched: bool) {
        let Some(w) = self.pending_acks.get_mut(&ticket) else { return };
        w.left += n;
        w.matched &= matched;
        if w.left == 0 {
            self.finish(ticket);
        }
    }

    /// One completion for `ticket` (`error`: a failed store write).
    fn complete(&mut self, ticket: u64, error: Option<&str>) {
        let Some(w) = self.pending_acks.get_mut(&ticket) else { return };
        if let (Some(e), None) = (error, &w.error) {
            w.error = Some(e.to_owned());
        }
        w.left = w.left.saturating_sub(1);
        if w.left == 0 {
            self.finish(ticket);
        }
    }

    fn finish(&mut self, ticket: u64) {
        let Some(w) = self.pending_acks.remove(&ticket) else { return };
        let outcome = match (&w.error, &w.limit, w.refused) {
            (Some(e), _, _) => AckOutcome::Failed(e),
            (None, Some(why), _) => AckOutcome::Limit(why),
            (None, None, true) => AckOutcome::Refused,
            (None, None, false) => AckOutcome::Stored,
        };
        self.stored(w.ack, outcome, w.matched);
    }

    /// The workers that hold what a key or pattern covers (retained values,
    /// history): the topic's owner for an exact key, every worker else.
    pub fn key_workers(&self, realm: &str, topic: &str, policy: MatchPolicy) -> Vec<u16> {
        match policy {
            MatchPolicy::Exact => vec![owner_of(realm, topic, self.workers)],
            _ => (0..self.workers as u16).collect(),
        }
    }

    /// The workers holding the history of the topics a key matches: its
    /// `key_workers` here and the same workers of every other live node
    /// (each node records its own publishers' events).
    pub fn history_workers(&self, realm: &str, topic: &str, policy: MatchPolicy) -> Vec<crate::router::WorkerId> {
        let mut workers = self.key_workers(realm, topic, policy);
        for &(node, n) in &self.cluster_nodes {
            match policy {
                MatchPolicy::Exact => workers.push(crate::cluster::at_node(node, owner_of(realm, topic, n.into()))),
                _ => workers.extend(crate::cluster::workers_of(node, n)),
            }
        }
        workers
    }

    /// Whether any subscription (shared ones included) matches `topic`.
    pub fn matches_any(&self, realm: &str, topic: &str) -> bool {
        let mut any = false;
        self.topics.for_each_match(realm, topic, |_, r| any |= !r.workers.is_empty());
        any || self.topics.any_shared(realm, topic)
    }

    /// A publication the store has (or failed to write): its publisher
    /// gets the acknowledgement, or the error, if it is still there.
    fn stored(&mut self, ack: PendingAck, outcome: AckOutcome, matched: bool) {
        match ack {
            PendingAck::Wamp { handle, session: s, request, publication, acknowledge } => {
                if self.sessions.get(&s) == Some(&handle) {
                    session::on_stored(self, handle, request, publication, acknowledge, outcome);
                }
            }
            PendingAck::Mqtt { handle, serial, version, qos, pkid } => {
                if self.conns.get(handle).is_some_and(|c| c.serial == serial && !c.is_closed()) {
                    mqtt::on_stored(self, handle, version, qos, pkid, matched, outcome);
                }
            }
            PendingAck::MqttSuback { slot, session, pending } => {
                if self.member_alive(Member::Mqtt(slot), session) {
                    let error = if let AckOutcome::Failed(e) = outcome { Some(e) } else { None };
                    mqtt::suback_stored(self, slot, *pending, error);
                }
            }
        }
    }

    /// Expired retained values found by a query: the store forgets them.
    fn forget_expired(&mut self, expired: Vec<Arc<Publication>>) {
        let Some(link) = &mut self.store else { return };
        for p in expired {
            link.send(StoreReq { write: Write::Delete { key: record::retained_key(&p.realm, &p.topic) }, ack: None });
        }
    }

    pub fn publish(&mut self, p: Publication) -> bool {
        self.publish_arc(Arc::new(p))
    }

    /// Routes a publication in one hop: one message per other worker that
    /// has matching subscribers, and local delivery here. Returns whether
    /// this worker's routing table had any matching subscription (MQTT 5's
    /// PUBACK 0x10 "no matching subscribers" when it had none).
    pub fn publish_arc(&mut self, p: Arc<Publication>) -> bool {
        self.publish_counted(p).0
    }

    /// `publish_arc`, and the number of workers it went to (this one included).
    pub(super) fn publish_counted(&mut self, p: Arc<Publication>) -> (bool, u32) {
        self.route_publication(p, None)
    }

    /// `publish_counted` for a local publication (`serve: None`) or one
    /// from another node, with the MQTT shared subscriptions it picked this
    /// node to serve.
    fn route_publication(&mut self, p: Arc<Publication>, serve: Option<&[u64]>) -> (bool, u32) {
        let mut sent = 0;
        let mut targets = std::mem::take(&mut self.publish_targets);
        let mut matched = false;
        // This worker's own matches, kept for `deliver_matched`: the topic
        // is looked up once for both.
        let mut mine = std::mem::take(&mut self.match_scratch);
        let me = self.id;
        self.topics.for_each_match(&p.realm, &p.topic, |policy, route| {
            matched |= !route.workers.is_empty();
            for &w in &route.workers {
                targets[w as usize] = true;
            }
            if route.has(me) {
                mine.push((route.subscription, policy));
            }
        });
        let (picks, shares) = self.pick_shared(&p, serve, &mut matched);
        for &(w, _) in &picks {
            targets[w as usize] = true;
        }
        let mut here = None;
        for (w, hit) in targets.iter_mut().enumerate() {
            if std::mem::take(hit) {
                sent += 1;
                let shared: Vec<u64> = picks.iter().filter(|(pw, _)| *pw as usize == w).map(|&(_, s)| s).collect();
                if w == self.id as usize {
                    here = Some(shared);
                } else {
                    self.peers.send(w as u16, ShardMsg::Publish(p.clone(), shared));
                }
            }
        }
        self.publish_targets = targets;
        if self.cluster.is_some() && serve.is_none() && p.publisher.worker != crate::cluster::REMOTE {
            matched |= self.forward_to_nodes(&p, shares);
        }
        match here {
            Some(shared) => self.deliver_matched(&p, &shared, mine),
            None => {
                mine.clear();
                self.match_scratch = mine;
            }
        }
        (matched, sent)
    }

    /// Who serves each MQTT shared subscription `p` matches: one member in
    /// the whole cluster, each subscription taking its own turns
    /// (`topics::Turns`). Here, a worker with members (`picks`: worker,
    /// subscription; it takes its members in turn). In a cluster, for a
    /// local publication, the nodes with members take turns first: a turn
    /// of this node goes on as above, another node's goes in `shares`
    /// (node, `key_hash`) for `forward_to_nodes`. From another node
    /// (`serve`), only the subscriptions it picked this node for.
    #[allow(clippy::type_complexity)]
    fn pick_shared(
        &mut self,
        p: &Publication,
        serve: Option<&[u64]>,
        matched: &mut bool,
    ) -> (Vec<(u16, u64)>, Vec<(crate::cluster::NodeId, u64)>) {
        use crate::cluster::wire::key_hash;
        let (mut picks, mut shares) = (Vec::new(), Vec::new());
        // (`$SYS` is each node's own: never forwarded, so never another
        // node's turn.)
        let decide = self.cluster.is_some()
            && serve.is_none()
            && p.publisher.worker != crate::cluster::REMOTE
            && !crate::router::node_local(&p.topic);
        let remote = &self.remote_topics;
        self.topics.for_each_shared(&p.realm, &p.topic, |key, route, turns| {
            if route.workers.is_empty() {
                return;
            }
            *matched = true;
            if serve.is_some_and(|serve| !serve.contains(&key_hash(key))) {
                return;
            }
            let nodes = remote.get(key).filter(|_| decide).map_or(&[][..], |r| &r.workers[..]);
            if !nodes.is_empty() {
                turns.node = turns.node.wrapping_add(1);
                let i = turns.node % (nodes.len() + 1);
                if i > 0 {
                    return shares.push((nodes[i - 1], key_hash(key)));
                }
            }
            turns.worker = turns.worker.wrapping_add(1);
            picks.push((route.workers[turns.worker % route.workers.len()], route.subscription));
        });
        if decide {
            // Those with members on other nodes only.
            let local = &self.topics;
            self.remote_topics.for_each_shared(&p.realm, &p.topic, |key, route, turns| {
                if route.workers.is_empty() || local.get(key).is_some_and(|r| !r.workers.is_empty()) {
                    return;
                }
                turns.node = turns.node.wrapping_add(1);
                shares.push((route.workers[turns.node % route.workers.len()], key_hash(key)));
            });
        }
        (picks, shares)
    }

    /// This node's part of a registration, to the cluster thread.
    fn share_part(&mut self, part: Option<crate::router::owner::ClusterPart>) {
        let (Some(link), Some(part)) = (&mut self.cluster, part) else { return };
        let claim = part.claim.map(|ticket| crate::cluster::Claim { owner: self.id, ticket });
        link.send(crate::cluster::ClusterReq::Register { part: part.part, claim });
    }

    /// A local publication to the cluster thread, with the other nodes that
    /// have subscribers of it (none: it stays here) and the shared
    /// subscriptions other nodes serve (`pick_shared`). `$SYS` and the
    /// subscription and registration meta events are each node's own
    /// (`router::node_local`). Returns whether some node has.
    fn forward_to_nodes(&mut self, p: &Arc<Publication>, shares: Vec<(crate::cluster::NodeId, u64)>) -> bool {
        if self.remote_topics.is_empty() || crate::router::node_local(&p.topic) {
            return false;
        }
        let mut nodes = std::mem::take(&mut self.remote_targets);
        self.remote_topics.for_each_match(&p.realm, &p.topic, |_, route| nodes.extend_from_slice(&route.workers));
        nodes.extend(shares.iter().map(|&(n, _)| n));
        let any = !nodes.is_empty();
        if any {
            nodes.sort_unstable();
            nodes.dedup();
            let req = crate::cluster::ClusterReq::Publish { p: p.clone(), nodes: nodes.clone(), shares };
            self.cluster.as_mut().expect("checked").send(req);
            nodes.clear();
        }
        self.remote_targets = nodes;
        any
    }

    /// Delivers a publication to this worker's subscribers. Each matching
    /// subscription's EVENT is encoded and framed once per serializer and the
    /// bytes are shared by every subscriber's queue.
    ///
    /// An MQTT session gets one copy however many of its subscriptions
    /// match: its hits are collected and handed over together.
    pub fn deliver(&mut self, p: &Arc<Publication>, shared: &[u64]) {
        let mut matched = std::mem::take(&mut self.match_scratch);
        let me = self.id;
        self.topics.for_each_match(&p.realm, &p.topic, |policy, route| {
            if route.has(me) {
                matched.push((route.subscription, policy));
            }
        });
        self.deliver_matched(p, shared, matched);
    }

    /// `deliver`, the topic already matched: `matched` holds this worker's
    /// subscriptions that match (and goes back to `match_scratch`).
    fn deliver_matched(&mut self, p: &Arc<Publication>, shared: &[u64], matched: Vec<(u64, MatchPolicy)>) {
        self.delivery_stored = false;
        self.deliver_here(p, shared, matched);
        // A publisher that waits for persistent sessions' copies: told once
        // they are on disk (a barrier after them on this worker's store
        // channel), or at once if this worker wrote none.
        if let Some((worker, ticket)) = p.durable_ack {
            if std::mem::take(&mut self.delivery_stored) {
                if let Some(link) = &mut self.store {
                    link.send(StoreReq { write: Write::Barrier, ack: Some((worker, ticket)) });
                }
            } else {
                self.peers.send(worker, ShardMsg::Stored { tickets: vec![ticket], error: None });
            }
        }
    }

    fn deliver_here(&mut self, p: &Arc<Publication>, shared: &[u64], mut matched: Vec<(u64, MatchPolicy)>) {
        if p.expired(self.now) {
            matched.clear();
        }
        let mut delivered = 0u64;
        let mut conv = Converted::default();
        let mut cache = std::mem::take(&mut self.event_cache);
        let mut mqtt_hits = std::mem::take(&mut self.mqtt_hits);
        // The publication's value, for filtered subscriptions (made once).
        let mut value: Option<Option<crate::value::Value>> = None;
        for &(subscription, policy) in &matched {
            let Some(local) = self.local_subs.get_mut(&subscription) else { continue };
            if let Some(filter) = &local.filter {
                let v = value.get_or_insert_with(|| crate::router::keys::value_of(&p.body));
                if !crate::router::keys::fits(filter, v.as_ref()) {
                    continue;
                }
            }
            let members = std::mem::take(&mut local.members);
            cache.reset();
            for &m in &members {
                match m {
                    Member::Wamp(h) => {
                        if let Some(frame) = session::event_for(self, h, subscription, policy, p, &mut cache, &mut conv)
                        {
                            if self.send_event(h, frame) {
                                delivered += 1;
                            }
                        }
                    }
                    Member::Mqtt(slot) => mqtt_hits.push((slot, subscription)),
                }
            }
            self.local_subs.get_mut(&subscription).expect("still present").members = members;
        }
        matched.clear();
        self.match_scratch = matched;
        cache.reset();
        self.event_cache = cache;
        for &subscription in shared {
            let Some(local) = self.local_subs.get_mut(&subscription) else { continue };
            if local.members.is_empty() || p.expired(self.now) {
                continue;
            }
            local.next = local.next.wrapping_add(1);
            if let Member::Mqtt(slot) = local.members[local.next % local.members.len()] {
                mqtt_hits.push((slot, subscription));
            }
        }
        if !mqtt_hits.is_empty() {
            // Hits of one subscription name each session once; with several,
            // group them by session.
            let first = mqtt_hits[0].1;
            if mqtt_hits.iter().any(|h| h.1 != first) {
                mqtt_hits.sort_unstable();
            }
            let mut mqtt_sent = [0u64; 3];
            let mut i = 0;
            while i < mqtt_hits.len() {
                let slot = mqtt_hits[i].0;
                let start = i;
                while i < mqtt_hits.len() && mqtt_hits[i].0 == slot {
                    i += 1;
                }
                let sent = if i - start == 1 {
                    mqtt::deliver(self, slot, p, std::slice::from_ref(&mqtt_hits[start].1), &mut conv)
                } else {
                    let subs: Vec<u64> = mqtt_hits[start..i].iter().map(|h| h.1).collect();
                    mqtt::deliver(self, slot, p, &subs, &mut conv)
                };
                if let Some(qos) = sent {
                    mqtt_sent[usize::from(qos.min(2))] += 1;
                }
            }
            mqtt_hits.clear();
            let now = self.now;
            for (qos, &n) in mqtt_sent.iter().enumerate() {
                if n > 0 {
                    self.metrics.record_n(mqtt::deliver_op(qos as u8), p.started, now, n);
                }
            }
        }
        self.mqtt_hits = mqtt_hits;
        if delivered > 0 {
            self.metrics.record_n(Op::PublishDeliver, p.started, self.now, delivered);
        }
    }
}
