//! What a worker does as the owner of keys: it numbers subscriptions and
//! registrations, broadcasts routing-table changes to every worker, and
//! answers the requester only once every worker has applied the change (the
//! barrier), so that a publish or call issued after SUBSCRIBED / REGISTERED
//! on any core is routed to the new subscriber or callee.

use super::{Barrier, IdGen, Realm, RegRequest, ShardMsg, SubKey, WorkerId};
use ahash::AHashMap;

/// Where the owner sends what it decides.
pub trait Outbox {
    fn send(&mut self, to: WorkerId, msg: ShardMsg);
}

/// An outbox that keeps what is sent, for unit tests.
#[cfg(test)]
#[derive(Default)]
pub struct Sent(pub Vec<(WorkerId, ShardMsg)>);

#[cfg(test)]
impl Outbox for Sent {
    fn send(&mut self, to: WorkerId, msg: ShardMsg) {
        self.0.push((to, msg));
    }
}

#[derive(Debug)]
struct OwnedSub {
    subscription: u64,
    /// Workers that acquired the key, sorted.
    workers: Vec<WorkerId>,
}

#[derive(Debug)]
struct OwnedReg {
    registration: u64,
}

#[derive(Debug)]
struct PendingBarrier {
    remaining: usize,
    then: (WorkerId, ShardMsg),
}

#[derive(Debug)]
pub struct Owner {
    me: WorkerId,
    workers: usize,
    subs: AHashMap<SubKey, OwnedSub>,
    regs: AHashMap<Realm, AHashMap<String, OwnedReg>>,
    barriers: AHashMap<u64, PendingBarrier>,
    next_barrier: u64,
}

impl Owner {
    pub fn new(me: WorkerId, workers: usize) -> Owner {
        Owner { me, workers, subs: AHashMap::new(), regs: AHashMap::new(), barriers: AHashMap::new(), next_barrier: 0 }
    }

    fn barrier(&mut self, then: (WorkerId, ShardMsg)) -> Barrier {
        self.next_barrier += 1;
        let id = self.next_barrier;
        self.barriers.insert(id, PendingBarrier { remaining: self.workers, then });
        Barrier { owner: self.me, id }
    }

    pub fn sub_acquire(&mut self, key: SubKey, from: WorkerId, ids: &mut IdGen, out: &mut impl Outbox) {
        let sub = self
            .subs
            .entry(key.clone())
            .or_insert_with(|| OwnedSub { subscription: ids.next_id(), workers: Vec::new() });
        let subscription = sub.subscription;
        match sub.workers.binary_search(&from) {
            // A worker acquires a key once until it releases it; a repeat is
            // answered without a second broadcast.
            Ok(_) => out.send(from, ShardMsg::SubGranted { key, subscription }),
            Err(at) => {
                sub.workers.insert(at, from);
                let barrier = self.barrier((from, ShardMsg::SubGranted { key: key.clone(), subscription }));
                for w in 0..self.workers as WorkerId {
                    out.send(w, ShardMsg::RouteAdd { key: key.clone(), subscription, worker: from, barrier });
                }
            }
        }
    }

    pub fn sub_release(&mut self, key: SubKey, from: WorkerId, out: &mut impl Outbox) {
        let Some(sub) = self.subs.get_mut(&key) else { return };
        let Ok(at) = sub.workers.binary_search(&from) else { return };
        sub.workers.remove(at);
        let subscription = sub.subscription;
        if sub.workers.is_empty() {
            self.subs.remove(&key);
        }
        for w in 0..self.workers as WorkerId {
            out.send(w, ShardMsg::RouteRemove { key: key.clone(), subscription, worker: from });
        }
    }

    pub fn reg_acquire(&mut self, req: RegRequest, ids: &mut IdGen, out: &mut impl Outbox) {
        let RegRequest { realm, procedure, session: callee, request, started, disclose_caller } = req;
        let procs = self.regs.entry(realm.clone()).or_default();
        let result = match procs.contains_key(&procedure) {
            true => Err("wamp.error.procedure_already_exists"),
            false => Ok(ids.next_id()),
        };
        let reply = ShardMsg::RegReply {
            realm: realm.clone(),
            procedure: procedure.clone(),
            session: callee.id,
            request,
            started,
            result,
        };
        let Ok(registration) = result else {
            out.send(callee.worker, reply);
            return;
        };
        procs.insert(procedure.clone(), OwnedReg { registration });
        let barrier = self.barrier((callee.worker, reply));
        for w in 0..self.workers as WorkerId {
            let add = ShardMsg::ProcAdd {
                realm: realm.clone(),
                procedure: procedure.clone(),
                registration,
                callee,
                disclose_caller,
                barrier,
            };
            out.send(w, add);
        }
    }

    pub fn reg_release(&mut self, realm: Realm, procedure: String, registration: u64, out: &mut impl Outbox) {
        let Some(procs) = self.regs.get_mut(&realm) else { return };
        if procs.get(&procedure).is_none_or(|r| r.registration != registration) {
            return;
        }
        procs.remove(&procedure);
        if procs.is_empty() {
            self.regs.remove(&realm);
        }
        for w in 0..self.workers as WorkerId {
            out.send(w, ShardMsg::ProcRemove { realm: realm.clone(), procedure: procedure.clone(), registration });
        }
    }

    pub fn barrier_ack(&mut self, id: u64, out: &mut impl Outbox) {
        let Some(b) = self.barriers.get_mut(&id) else {
            debug_assert!(false, "ack for unknown barrier {id}");
            return;
        };
        b.remaining -= 1;
        if b.remaining == 0 {
            let (to, msg) = self.barriers.remove(&id).expect("present").then;
            out.send(to, msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::{MatchPolicy, SessionRef};
    use std::time::Instant;

    fn key() -> SubKey {
        SubKey { realm: "r".into(), topic: "t".into(), policy: MatchPolicy::Exact, share: None }
    }

    #[test]
    fn subscribe_waits_for_every_worker() {
        let mut o = Owner::new(0, 3);
        let mut ids = IdGen::new(0, 3);
        let mut out = Sent::default();
        o.sub_acquire(key(), 2, &mut ids, &mut out);
        let barrier = match &out.0[..] {
            [(0, ShardMsg::RouteAdd { barrier, worker: 2, .. }), (1, _), (2, _)] => *barrier,
            other => panic!("{other:?}"),
        };
        out.0.clear();
        o.barrier_ack(barrier.id, &mut out);
        o.barrier_ack(barrier.id, &mut out);
        assert!(out.0.is_empty(), "granted before every worker applied the route");
        o.barrier_ack(barrier.id, &mut out);
        assert!(matches!(&out.0[..], [(2, ShardMsg::SubGranted { subscription: 1, .. })]));
        // Release by the last worker forgets the key: the next acquire gets a new ID.
        out.0.clear();
        o.sub_release(key(), 2, &mut out);
        assert_eq!(out.0.len(), 3);
        out.0.clear();
        o.sub_acquire(key(), 1, &mut ids, &mut out);
        assert!(matches!(&out.0[0], (0, ShardMsg::RouteAdd { subscription: 4, .. })));
    }

    #[test]
    fn second_registration_is_refused() {
        let mut o = Owner::new(0, 1);
        let mut ids = IdGen::new(0, 1);
        let mut out = Sent::default();
        let s1 = SessionRef { worker: 0, id: 1 };
        let s2 = SessionRef { worker: 0, id: 2 };
        let now = Instant::now();
        let req = |session, request| RegRequest {
            realm: "r".into(),
            procedure: "p".into(),
            session,
            request,
            started: now,
            disclose_caller: false,
        };
        o.reg_acquire(req(s1, 10), &mut ids, &mut out);
        o.reg_acquire(req(s2, 11), &mut ids, &mut out);
        assert!(matches!(
            &out.0[1],
            (0, ShardMsg::RegReply { session: 2, request: 11, result: Err("wamp.error.procedure_already_exists"), .. })
        ));
        o.reg_release("r".into(), "p".into(), 1, &mut out);
        assert!(matches!(&out.0[2], (0, ShardMsg::ProcRemove { registration: 1, .. })));
    }
}
