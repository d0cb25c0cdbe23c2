//! What a worker does as the owner of keys: it numbers subscriptions and
//! registrations, broadcasts routing-table changes to every worker, and
//! answers the requester only once every worker has applied the change (the
//! barrier), so that a publish or call issued after SUBSCRIBED / REGISTERED
//! on any core is routed to the new subscriber or callee.

use super::procs::{Added, Callee, InvokePolicy};
use super::{unix_millis, Barrier, IdGen, MatchPolicy, Realm, RegRelease, RegRequest, ShardMsg, SubKey, WorkerId};
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
    created: u64,
    /// Workers that acquired the key, sorted.
    workers: Vec<WorkerId>,
}

#[derive(Debug)]
struct OwnedReg {
    registration: u64,
    invoke: InvokePolicy,
    reducer: bool,
    created: u64,
    /// In the order they registered.
    callees: Vec<Callee>,
    /// In a cluster, the first callee's REGISTER while the other nodes
    /// decide (`Claimed`); the registration is not routed before.
    claiming: Option<RegRequest>,
    /// REGISTERs of the same URI that came meanwhile, run after the claim.
    waiting: Vec<RegRequest>,
}

/// What the owner tells the cluster about a registration: this node's
/// part of it (see `cluster::procs`), and, for a claim, the ticket its
/// answer (`Claimed`) comes back with.
#[derive(Debug)]
pub struct ClusterPart {
    pub part: crate::cluster::procs::RegPart,
    pub claim: Option<u64>,
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
    regs: AHashMap<Realm, AHashMap<(String, MatchPolicy), OwnedReg>>,
    barriers: AHashMap<u64, PendingBarrier>,
    next_barrier: u64,
    /// In a cluster a new subscription key's barrier also waits for the
    /// other nodes (one more ack, from the cluster thread), and a new
    /// registration is claimed cluster-wide before it is routed.
    pub cluster: bool,
    /// Claims waiting for the cluster's answer, by ticket.
    claims: AHashMap<u64, (Realm, String, MatchPolicy)>,
    next_claim: u64,
}

impl Owner {
    pub fn new(me: WorkerId, workers: usize) -> Owner {
        Owner {
            me,
            workers,
            subs: AHashMap::new(),
            regs: AHashMap::new(),
            barriers: AHashMap::new(),
            next_barrier: 0,
            cluster: false,
            claims: AHashMap::new(),
            next_claim: 0,
        }
    }

    fn barrier(&mut self, then: (WorkerId, ShardMsg)) -> Barrier {
        self.next_barrier += 1;
        let id = self.next_barrier;
        self.barriers.insert(id, PendingBarrier { remaining: self.workers, then });
        Barrier { owner: self.me, id }
    }

    /// A worker's first subscriber of `key`. In a cluster, when this made
    /// the key (the node's first subscriber of it), returns the barrier
    /// that also waits for the cluster thread's ack: SUBSCRIBED once every
    /// worker here and every other node routes the key.
    pub fn sub_acquire(
        &mut self,
        key: SubKey,
        from: WorkerId,
        ids: &mut IdGen,
        out: &mut impl Outbox,
    ) -> Option<Barrier> {
        let mut new = false;
        let sub = self.subs.entry(key.clone()).or_insert_with(|| {
            new = true;
            OwnedSub { subscription: ids.next_id(), created: unix_millis(), workers: Vec::new() }
        });
        let (subscription, created) = (sub.subscription, sub.created);
        match sub.workers.binary_search(&from) {
            // A worker acquires a key once until it releases it; a repeat is
            // answered without a second broadcast.
            Ok(_) => out.send(from, ShardMsg::SubGranted { key, subscription, created: false }),
            Err(at) => {
                sub.workers.insert(at, from);
                let granted = ShardMsg::SubGranted { key: key.clone(), subscription, created: new };
                let barrier = self.barrier((from, granted));
                for w in 0..self.workers as WorkerId {
                    let add = ShardMsg::RouteAdd { key: key.clone(), subscription, created, worker: from, barrier };
                    out.send(w, add);
                }
                if new && self.cluster {
                    self.barriers.get_mut(&barrier.id).expect("just made").remaining += 1;
                    return Some(barrier);
                }
            }
        }
        None
    }

    /// A worker's last subscriber of `key` left; true if this deleted the
    /// key (the node has no subscriber of it left).
    pub fn sub_release(&mut self, key: SubKey, from: WorkerId, session: Option<u64>, out: &mut impl Outbox) -> bool {
        let Some(sub) = self.subs.get_mut(&key) else { return false };
        let Ok(at) = sub.workers.binary_search(&from) else { return false };
        sub.workers.remove(at);
        let subscription = sub.subscription;
        let deleted = sub.workers.is_empty();
        if deleted {
            self.subs.remove(&key);
        }
        let realm = key.realm.clone();
        for w in 0..self.workers as WorkerId {
            out.send(w, ShardMsg::RouteRemove { key: key.clone(), subscription, worker: from });
        }
        if let (true, Some(session)) = (deleted, session) {
            out.send(from, ShardMsg::SubDeleted { realm, subscription, session });
        }
        deleted
    }

    /// A callee registers: a new registration, or (shared registration)
    /// one more callee of an existing one with the same invocation policy.
    /// In a cluster, returns what the other nodes are to know: a new
    /// registration is claimed first (answered by `claimed`), a new callee
    /// of a claimed one updates this node's part.
    pub fn reg_acquire(&mut self, req: RegRequest, ids: &mut IdGen, out: &mut impl Outbox) -> Option<ClusterPart> {
        let me = self.me;
        let cluster = self.cluster && !req.reducer;
        let procs = self.regs.entry(req.realm.clone()).or_default();
        let key = (req.procedure.clone(), req.policy);
        let callee = Callee { session: req.session, disclose_caller: req.disclose_caller, since: unix_millis() };
        let result = match procs.get_mut(&key) {
            Some(reg) if reg.claiming.is_some() => {
                reg.waiting.push(req);
                return None;
            }
            Some(reg)
                if reg.invoke != req.invoke
                    || reg.reducer != req.reducer
                    || req.invoke == InvokePolicy::Single
                    || reg.callees.iter().any(|c| c.session == req.session) =>
            {
                Err("wamp.error.procedure_already_exists")
            }
            Some(reg) => {
                reg.callees.push(callee);
                Ok((reg.registration, reg.created))
            }
            None => {
                let (registration, created) = (ids.next_id(), unix_millis());
                let reg = OwnedReg {
                    registration,
                    invoke: req.invoke,
                    reducer: req.reducer,
                    created,
                    callees: vec![callee],
                    claiming: None,
                    waiting: Vec::new(),
                };
                if cluster {
                    let part = part_of(&req.realm, &key.0, key.1, &reg);
                    self.next_claim += 1;
                    let ticket = self.next_claim;
                    self.claims.insert(ticket, (req.realm.clone(), key.0.clone(), key.1));
                    procs.insert(key, OwnedReg { claiming: Some(req), ..reg });
                    return Some(ClusterPart { part, claim: Some(ticket) });
                }
                procs.insert(key.clone(), reg);
                Ok((registration, created))
            }
        };
        let new = result.is_ok() && procs.get(&key).is_some_and(|r| r.callees.len() == 1);
        let part = match (&result, cluster) {
            (Ok(_), true) => procs.get(&key).map(|r| part_of(&req.realm, &key.0, key.1, r)),
            _ => None,
        };
        self.routed(req, result.map(|(r, c)| (r, c, new)), me, out);
        part.map(|part| ClusterPart { part, claim: None })
    }

    /// The REGISTER's answer, once every worker routes the callee (the
    /// barrier), or its refusal at once.
    fn routed(
        &mut self,
        req: RegRequest,
        result: Result<(u64, u64, bool), &'static str>,
        me: WorkerId,
        out: &mut impl Outbox,
    ) {
        let RegRequest {
            realm,
            procedure,
            policy,
            invoke,
            session: callee,
            request,
            started,
            disclose_caller,
            reducer,
        } = req;
        let reply = ShardMsg::RegReply {
            realm: realm.clone(),
            procedure: procedure.clone(),
            policy,
            session: callee.id,
            request,
            started,
            result: result.map(|(registration, _, new)| (registration, new)),
        };
        let Ok((registration, created, _)) = result else {
            out.send(callee.worker, reply);
            return;
        };
        let since = self
            .regs
            .get(&realm)
            .and_then(|p| p.get(&(procedure.clone(), policy)))
            .and_then(|r| r.callees.iter().find(|c| c.session == callee))
            .map_or(0, |c| c.since);
        let barrier = self.barrier((callee.worker, reply));
        let added = Added {
            registration,
            invoke,
            reducer,
            created,
            owner: me,
            callee: Callee { session: callee, disclose_caller, since },
        };
        for w in 0..self.workers as WorkerId {
            let add = ShardMsg::ProcAdd { realm: realm.clone(), procedure: procedure.clone(), policy, added, barrier };
            out.send(w, add);
        }
    }

    /// The cluster's answer to a claim: the registration is this node's to
    /// route (`ok`), or another node holds it (the REGISTER is refused).
    /// The REGISTERs that waited for it run now; what they change for the
    /// cluster is returned.
    pub fn claimed(
        &mut self,
        ticket: u64,
        refused: Option<&'static str>,
        ids: &mut IdGen,
        out: &mut impl Outbox,
    ) -> Vec<ClusterPart> {
        let me = self.me;
        let Some((realm, procedure, policy)) = self.claims.remove(&ticket) else { return Vec::new() };
        let key = (procedure, policy);
        let Some(procs) = self.regs.get_mut(&realm) else { return Vec::new() };
        let Some(reg) = procs.get_mut(&key) else { return Vec::new() };
        let Some(req) = reg.claiming.take() else { return Vec::new() };
        let waiting = std::mem::take(&mut reg.waiting);
        let (registration, created) = (reg.registration, reg.created);
        match refused {
            None => self.routed(req, Ok((registration, created, true)), me, out),
            Some(uri) => {
                procs.remove(&key);
                if procs.is_empty() {
                    self.regs.remove(&realm);
                }
                self.routed(req, Err(uri), me, out);
            }
        }
        waiting.into_iter().filter_map(|r| self.reg_acquire(r, ids, out)).collect()
    }

    /// A callee leaves a registration; the registration ends with its last
    /// callee, and then the callee's worker is told (`RegDeleted`).
    /// In a cluster, returns this node's new part of the registration.
    pub fn reg_release(&mut self, r: RegRelease, out: &mut impl Outbox) -> Option<ClusterPart> {
        let RegRelease { realm, procedure, policy, registration, callee } = r;
        let procs = self.regs.get_mut(&realm)?;
        let key = (procedure, policy);
        let reg = procs.get_mut(&key).filter(|r| r.registration == registration)?;
        let at = reg.callees.iter().position(|c| c.session == callee)?;
        reg.callees.remove(at);
        let part = (self.cluster && !reg.reducer).then(|| part_of(&realm, &key.0, key.1, reg));
        let deleted = reg.callees.is_empty();
        if deleted {
            procs.remove(&key);
            if procs.is_empty() {
                self.regs.remove(&realm);
            }
        }
        let (procedure, policy) = key;
        for w in 0..self.workers as WorkerId {
            let remove = ShardMsg::ProcRemove {
                realm: realm.clone(),
                procedure: procedure.clone(),
                policy,
                registration,
                callee,
            };
            out.send(w, remove);
        }
        if deleted {
            out.send(callee.worker, ShardMsg::RegDeleted { realm, registration, session: callee.id });
        }
        part.map(|part| ClusterPart { part, claim: None })
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

/// This node's part of a registration, for the cluster.
fn part_of(realm: &Realm, procedure: &str, policy: MatchPolicy, reg: &OwnedReg) -> crate::cluster::procs::RegPart {
    crate::cluster::procs::RegPart {
        realm: realm.to_string(),
        uri: procedure.to_owned(),
        policy: policy.name().to_owned(),
        invoke: reg.invoke.as_str().to_owned(),
        registration: reg.registration,
        callees: reg
            .callees
            .iter()
            .map(|c| crate::cluster::procs::PartCallee {
                worker: c.session.worker,
                session: c.session.id,
                disclose_caller: c.disclose_caller,
                since: c.since,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::{MatchPolicy, SessionRef};
    use std::time::Instant;

    /// A REGISTER of `p` in realm `r` by session `id` of worker 0.
    fn reg(id: u64, invoke: InvokePolicy, policy: MatchPolicy) -> RegRequest {
        RegRequest {
            realm: "r".into(),
            procedure: "p".into(),
            policy,
            invoke,
            session: SessionRef { worker: 0, id },
            request: id,
            started: Instant::now(),
            disclose_caller: false,
            reducer: false,
        }
    }

    /// Session `id` of worker 0 leaves registration 1 of `p` (exact).
    fn release(id: u64) -> RegRelease {
        RegRelease {
            realm: "r".into(),
            procedure: "p".into(),
            policy: MatchPolicy::Exact,
            registration: 1,
            callee: SessionRef { worker: 0, id },
        }
    }

    fn key() -> SubKey {
        SubKey { realm: "r".into(), topic: "t".into(), policy: MatchPolicy::Exact, share: None, filter: None }
    }

    #[test]
    fn in_a_cluster_a_new_key_also_waits_for_the_other_nodes() {
        let mut o = Owner::new(0, 2);
        o.cluster = true;
        let mut ids = IdGen::new(0, 2);
        let mut out = Sent::default();
        let barrier = o.sub_acquire(key(), 1, &mut ids, &mut out).expect("a new key waits for the cluster");
        out.0.clear();
        o.barrier_ack(barrier.id, &mut out);
        o.barrier_ack(barrier.id, &mut out);
        assert!(out.0.is_empty(), "granted before the other nodes route the key");
        o.barrier_ack(barrier.id, &mut out);
        assert!(matches!(&out.0[..], [(1, ShardMsg::SubGranted { created: true, .. })]));
        // A second worker's acquire of the same key: the nodes already route it.
        out.0.clear();
        assert_eq!(o.sub_acquire(key(), 0, &mut ids, &mut out), None);
        o.cluster = false;
        let other = SubKey { topic: "u".into(), ..key() };
        assert_eq!(o.sub_acquire(other, 0, &mut ids, &mut out), None, "one node: nothing to wait for");
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
        assert!(matches!(&out.0[..], [(2, ShardMsg::SubGranted { subscription: 1, created: true, .. })]));
        // Release by the last worker forgets the key: the next acquire gets a new ID.
        out.0.clear();
        o.sub_release(key(), 2, Some(5), &mut out);
        assert_eq!(out.0.len(), 4);
        assert!(matches!(&out.0[3], (2, ShardMsg::SubDeleted { subscription: 1, session: 5, .. })));
        out.0.clear();
        o.sub_acquire(key(), 1, &mut ids, &mut out);
        assert!(matches!(&out.0[0], (0, ShardMsg::RouteAdd { subscription: 4, .. })));
    }

    #[test]
    fn second_registration_is_refused() {
        let mut o = Owner::new(0, 1);
        let mut ids = IdGen::new(0, 1);
        let mut out = Sent::default();
        let req = |id, request| RegRequest { request, ..reg(id, InvokePolicy::Single, MatchPolicy::Exact) };
        o.reg_acquire(req(1, 10), &mut ids, &mut out);
        o.reg_acquire(req(2, 11), &mut ids, &mut out);
        assert!(matches!(
            &out.0[1],
            (0, ShardMsg::RegReply { session: 2, request: 11, result: Err("wamp.error.procedure_already_exists"), .. })
        ));
        o.reg_release(release(1), &mut out);
        assert!(matches!(&out.0[2], (0, ShardMsg::ProcRemove { registration: 1, .. })));
        assert!(matches!(&out.0[3], (0, ShardMsg::RegDeleted { registration: 1, session: 1, .. })));
    }

    #[test]
    fn shared_registration_needs_the_same_policy() {
        let mut o = Owner::new(0, 1);
        let mut ids = IdGen::new(0, 1);
        let mut out = Sent::default();
        let result = |out: &Sent| match out.0.last() {
            Some((_, ShardMsg::RegReply { result, .. })) => *result,
            Some((_, ShardMsg::ProcAdd { added, .. })) => Ok((added.registration, false)),
            other => panic!("{other:?}"),
        };
        o.reg_acquire(reg(1, InvokePolicy::RoundRobin, MatchPolicy::Exact), &mut ids, &mut out);
        assert_eq!(result(&out), Ok((1, false)));
        o.reg_acquire(reg(2, InvokePolicy::RoundRobin, MatchPolicy::Exact), &mut ids, &mut out);
        assert!(
            matches!(&out.0.last(), Some((_, ShardMsg::ProcAdd { added, .. })) if added.registration == 1 && added.callee.session.id == 2)
        );
        o.reg_acquire(reg(3, InvokePolicy::Random, MatchPolicy::Exact), &mut ids, &mut out);
        assert_eq!(result(&out), Err("wamp.error.procedure_already_exists"));
        o.reg_acquire(reg(2, InvokePolicy::RoundRobin, MatchPolicy::Exact), &mut ids, &mut out);
        assert_eq!(result(&out), Err("wamp.error.procedure_already_exists"), "a callee registers a URI once");
        // Another match policy is another registration.
        o.reg_acquire(reg(3, InvokePolicy::Single, MatchPolicy::Prefix), &mut ids, &mut out);
        assert!(
            matches!(&out.0.last(), Some((_, ShardMsg::ProcAdd { added, policy: MatchPolicy::Prefix, .. })) if added.registration == 2)
        );
        // The first of two callees leaving keeps the registration.
        out.0.clear();
        o.reg_release(release(1), &mut out);
        assert!(!out.0.iter().any(|(_, m)| matches!(m, ShardMsg::RegDeleted { .. })));
        o.reg_release(release(2), &mut out);
        assert!(matches!(out.0.last(), Some((_, ShardMsg::RegDeleted { registration: 1, session: 2, .. }))));
    }

    #[test]
    fn in_a_cluster_a_new_registration_is_claimed_first() {
        let mut o = Owner::new(0, 1);
        o.cluster = true;
        let mut ids = IdGen::new(0, 1);
        let mut out = Sent::default();
        let req = |id| reg(id, InvokePolicy::RoundRobin, MatchPolicy::Exact);
        let part = o.reg_acquire(req(1), &mut ids, &mut out).expect("a new registration goes to the cluster");
        let ticket = part.claim.expect("and is claimed");
        assert_eq!((part.part.invoke.as_str(), part.part.callees.len()), ("roundrobin", 1));
        // A second callee meanwhile waits for the claim; nothing is routed.
        assert!(o.reg_acquire(req(2), &mut ids, &mut out).is_none());
        assert!(out.0.is_empty(), "routed before the cluster decided: {:?}", out.0);
        // Granted: the first is routed, the second joins, and the cluster
        // learns this node's part with both callees (no new claim).
        let parts = o.claimed(ticket, None, &mut ids, &mut out);
        assert!(matches!(&parts[..], [ClusterPart { claim: None, part }] if part.callees.len() == 2));
        let added: Vec<u64> = out
            .0
            .iter()
            .filter_map(|(_, m)| match m {
                ShardMsg::ProcAdd { added, .. } => Some(added.callee.session.id),
                _ => None,
            })
            .collect();
        assert_eq!(added, [1, 2]);
        // Leaving states the smaller part; the last one leaving, none.
        assert_eq!(o.reg_release(release(1), &mut out).map(|p| p.part.callees.len()), Some(1));
        assert_eq!(o.reg_release(release(2), &mut out).map(|p| p.part.callees.len()), Some(0));

        // Refused (another node holds it): the REGISTER's ERROR, and the
        // owner forgets it.
        out.0.clear();
        let ticket = o.reg_acquire(req(3), &mut ids, &mut out).and_then(|p| p.claim).expect("claimed");
        assert!(o.claimed(ticket, Some("wamp.error.procedure_already_exists"), &mut ids, &mut out).is_empty());
        assert!(matches!(
            &out.0[..],
            [(0, ShardMsg::RegReply { session: 3, result: Err("wamp.error.procedure_already_exists"), .. })]
        ));
        assert!(o.reg_acquire(req(4), &mut ids, &mut out).and_then(|p| p.claim).is_some(), "claimed afresh");
    }
}
