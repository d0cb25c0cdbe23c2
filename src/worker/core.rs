//! The protocol-neutral operations of a worker: subscribe, unsubscribe,
//! publish (route + local fan-out), and the handling of every message from
//! other workers. Protocol sessions call in here; completions go back out
//! through `crate::wamp::session`.

use super::{LocalKey, LocalSub, SubWaiter, Worker};
use crate::metrics::Op;
use crate::router::owner::Outbox;
use crate::router::{owner_of, Publication, ShardMsg, SubKey};
use crate::wamp::session;
use std::sync::Arc;
use std::time::Instant;

/// What became of a subscribe request.
pub enum Subscribed {
    /// Already routed here: the subscription ID, answer now.
    Now(u64),
    /// Waiting for the owner's grant; the session is notified then.
    Later,
}

impl Worker {
    pub fn on_shard_msg(&mut self, msg: ShardMsg) {
        match msg {
            ShardMsg::Accept(stream) => self.accept(stream),
            ShardMsg::Shutdown => self.begin_shutdown(),
            ShardMsg::Publish(p) => self.deliver(&p),
            ShardMsg::SubAcquire { key, from } => self.owner.sub_acquire(key, from, &mut self.ids, &mut self.peers),
            ShardMsg::SubRelease { key, from } => self.owner.sub_release(key, from, &mut self.peers),
            ShardMsg::SubGranted { key, subscription } => self.sub_granted(key, subscription),
            ShardMsg::RouteAdd { key, subscription, worker, barrier } => {
                self.topics.add(&key, subscription, worker);
                self.peers.send(barrier.owner, ShardMsg::BarrierAck { barrier: barrier.id });
            }
            ShardMsg::RouteRemove { key, subscription, worker } => self.topics.remove(&key, subscription, worker),
            ShardMsg::RegAcquire(req) => self.owner.reg_acquire(req, &mut self.ids, &mut self.peers),
            ShardMsg::RegRelease { realm, procedure, registration } => {
                self.owner.reg_release(realm, procedure, registration, &mut self.peers)
            }
            ShardMsg::RegReply { realm, procedure, session, request, started, result } => {
                match self.sessions.get(&session) {
                    Some(&handle) => session::registered(self, handle, request, procedure, started, result),
                    None => {
                        // The session left while the barrier ran: undo.
                        if let Ok(registration) = result {
                            let owner = owner_of(&realm, &procedure, self.workers);
                            self.peers.send(owner, ShardMsg::RegRelease { realm, procedure, registration });
                        }
                    }
                }
            }
            ShardMsg::ProcAdd { realm, procedure, registration, callee, barrier } => {
                let route = crate::router::procs::ProcRoute { registration, callee };
                self.procs.add(&realm, &procedure, route);
                self.peers.send(barrier.owner, ShardMsg::BarrierAck { barrier: barrier.id });
            }
            ShardMsg::ProcRemove { realm, procedure, registration } => {
                self.procs.remove(&realm, &procedure, registration)
            }
            ShardMsg::BarrierAck { barrier } => self.owner.barrier_ack(barrier, &mut self.peers),
            ShardMsg::Invoke(inv) => session::on_invoke(self, *inv),
            ShardMsg::CallDone(done) => session::on_call_done(self, *done),
            ShardMsg::CallerGone { caller } => session::on_caller_gone(self, caller),
        }
    }

    /// Subscribes the session on `handle` to `key`.
    pub fn subscribe(
        &mut self,
        handle: usize,
        session: u64,
        key: SubKey,
        request: u64,
        started: Instant,
    ) -> Subscribed {
        match self.local_keys.get_mut(&key) {
            Some(LocalKey::Active(subscription)) => {
                let subscription = *subscription;
                let local = self.local_subs.get_mut(&subscription).expect("active key has local subscribers");
                if !local.handles.contains(&handle) {
                    local.handles.push(handle);
                }
                Subscribed::Now(subscription)
            }
            Some(LocalKey::Pending(waiters)) => {
                waiters.push(SubWaiter { handle, session, request, started });
                Subscribed::Later
            }
            None => {
                let owner = owner_of(&key.realm, &key.topic, self.workers);
                self.local_keys
                    .insert(key.clone(), LocalKey::Pending(vec![SubWaiter { handle, session, request, started }]));
                self.peers.send(owner, ShardMsg::SubAcquire { key, from: self.id });
                Subscribed::Later
            }
        }
    }

    fn sub_granted(&mut self, key: SubKey, subscription: u64) {
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
        let alive: Vec<SubWaiter> =
            waiters.into_iter().filter(|w| self.sessions.get(&w.session) == Some(&w.handle)).collect();
        if alive.is_empty() {
            let owner = owner_of(&key.realm, &key.topic, self.workers);
            self.peers.send(owner, ShardMsg::SubRelease { key, from: self.id });
            return;
        }
        self.local_keys.insert(key.clone(), LocalKey::Active(subscription));
        let local = self.local_subs.entry(subscription).or_insert(LocalSub { key, handles: Vec::new() });
        for w in &alive {
            if !local.handles.contains(&w.handle) {
                local.handles.push(w.handle);
            }
        }
        for w in alive {
            session::subscribed(self, w.handle, w.request, subscription, w.started);
        }
    }

    /// Removes the session on `handle` from a subscription; the last local
    /// subscriber releases the key at its owner.
    pub fn unsubscribe(&mut self, handle: usize, subscription: u64) {
        let Some(local) = self.local_subs.get_mut(&subscription) else { return };
        local.handles.retain(|&h| h != handle);
        if local.handles.is_empty() {
            let local = self.local_subs.remove(&subscription).expect("present");
            self.local_keys.remove(&local.key);
            let owner = owner_of(&local.key.realm, &local.key.topic, self.workers);
            self.peers.send(owner, ShardMsg::SubRelease { key: local.key, from: self.id });
        }
    }

    /// Routes a publication in one hop: one message per other worker that
    /// has matching subscribers, and local delivery here.
    pub fn publish(&mut self, p: Publication) {
        let p = Arc::new(p);
        let mut targets = std::mem::take(&mut self.publish_targets);
        self.topics.for_each_match(&p.realm, &p.topic, |_, route| {
            for &w in &route.workers {
                targets[w as usize] = true;
            }
        });
        let mut here = false;
        for (w, hit) in targets.iter_mut().enumerate() {
            if std::mem::take(hit) {
                if w == self.id as usize {
                    here = true;
                } else {
                    self.peers.send(w as u16, ShardMsg::Publish(p.clone()));
                }
            }
        }
        self.publish_targets = targets;
        if here {
            self.deliver(&p);
        }
    }

    /// Delivers a publication to this worker's subscribers. Each matching
    /// subscription's EVENT is encoded and framed once per serializer and the
    /// bytes are shared by every subscriber's queue.
    pub fn deliver(&mut self, p: &Publication) {
        let mut matched = std::mem::take(&mut self.match_scratch);
        let me = self.id;
        self.topics.for_each_match(&p.realm, &p.topic, |policy, route| {
            if route.has(me) {
                matched.push((route.subscription, policy));
            }
        });
        let mut delivered = 0u64;
        for &(subscription, policy) in &matched {
            let Some(local) = self.local_subs.get_mut(&subscription) else { continue };
            let handles = std::mem::take(&mut local.handles);
            let mut cache = session::EventCache::default();
            for &h in &handles {
                if let Some(bytes) = session::event_for(self, h, subscription, policy, p, &mut cache) {
                    if self.send_event(h, bytes) {
                        delivered += 1;
                    }
                }
            }
            self.local_subs.get_mut(&subscription).expect("still present").handles = handles;
        }
        matched.clear();
        self.match_scratch = matched;
        if delivered > 0 {
            self.metrics.record_n(Op::PublishDeliver, p.started, Instant::now(), delivered);
        }
    }
}
