//! Where each MQTT session lives. The owner shard of a client ID (hash of
//! realm and client ID) keeps one entry per client: the worker and session
//! ID of its current session. A CONNECT claims the entry; if another session
//! holds it, that session's worker is told to hand it over (taking its
//! connection down) and answers the new worker directly, with the session's
//! state unless the new connection asked for a clean start.
//!
//! The hand-over loses nothing: the old copy keeps its subscriptions and
//! forwards what it receives until the new copy's subscriptions are routed
//! everywhere (`HandoffDone`); while both receive, the new copy drops
//! publication IDs it has already seen.
//!
//! ```text
//! worker N (CONNECT) --Claim--> owner --Takeover--> worker O (old session)
//!        ^                        |                        |
//!        +------Claimed(None)-----+ (no old session)       |
//!        +------------------Claimed(state)-----------------+
//! ```

use super::session::{Outgoing, SessionState};
use crate::router::owner::Outbox;
use crate::router::{ShardMsg, WorkerId};
use ahash::AHashMap;
use std::sync::Arc;

/// A CONNECT waiting for its session.
#[derive(Debug, Clone)]
pub struct Claim {
    /// Realm and client ID, `realm\0client`.
    pub key: Arc<str>,
    pub session: u64,
    pub worker: WorkerId,
    pub handle: usize,
    pub serial: u64,
    pub clean_start: bool,
}

#[derive(Debug)]
pub enum Msg {
    /// To the owner.
    Claim(Claim),
    /// In a cluster, to the owner on the node that held the client ID
    /// (from the claiming node): hand the session over if it is here.
    RemoteClaim(Claim),
    /// In a cluster, from the cluster thread to the owner: the claim is
    /// this node's in the cluster's bucket; `prev`: the live node that held
    /// the client ID before (its session is taken over from there);
    /// `resume`: else, the record of the session a dead holder left.
    Owned { claim: Claim, prev: Option<u16>, resume: Option<Box<Left>> },
    /// From the owner to the claiming worker: the claim went to node
    /// `node`, whose answer it waits for (if that node is lost first, the
    /// connection goes ahead afresh).
    ClaimVia { session: u64, node: u16 },
    /// To the worker of the session now holding the client ID.
    Takeover { old: u64, claim: Claim },
    /// To the claiming worker: go ahead, with the old session's state if any.
    Claimed { claim: Claim, state: Option<Box<SessionState>> },
    /// To the owner: the session ended.
    Release { key: Arc<str>, session: u64 },
    /// Old worker -> new worker: a message for the session being moved,
    /// delivered to the old copy after it was handed over.
    Forward { session: u64, out: Box<Outgoing> },
    /// New worker -> old worker: every subscription is routed to the new
    /// copy; the old one can go.
    HandoffDone { old: u64, new: (WorkerId, u64) },
    /// Old worker -> new worker: nothing more will be forwarded.
    ForwardEnd { session: u64 },
    /// In a cluster, from the cluster thread to the owner: the persistent
    /// session of client ID `key` that a dead node left is this node's now
    /// (its record): it is made here, offline, until its client returns.
    Adopt { key: Arc<str>, left: Box<Left> },
    /// From the cluster thread to the owner: the client ID of a session
    /// restored from the store at start is still this node's (`kept`), or
    /// another node's now (it took the session in, or a client resumed it
    /// there, while this node was down): then the restored copy goes,
    /// unless a client is on it already. `will_kept`: its will's entry in
    /// the cluster is this life's now; without it the will is not sent
    /// here (a survivor sent it, or took it out).
    Restored { key: Arc<str>, kept: bool, will_kept: bool },
}

/// What a dead node left of a persistent session in the cluster: its
/// record (`store::mqtt::SessionRecord`) and the messages it had queued
/// while the session was offline (sequence, `store::mqtt::MessageRecord`).
#[derive(Debug, Default)]
pub struct Left {
    pub record: Vec<u8>,
    pub queued: Vec<(u64, Vec<u8>)>,
}

#[derive(Default)]
pub struct Registry {
    /// Client key -> (worker, session ID) of its current session.
    entries: AHashMap<Arc<str>, (WorkerId, u64)>,
    /// In a cluster: client keys whose claim the cluster is deciding, with
    /// the claims (`true`: from another node) that came meanwhile, run in
    /// order after it (bounded by the connections: each has at most one
    /// claim waiting).
    pub deciding: AHashMap<Arc<str>, Vec<(bool, Claim)>>,
}

impl Registry {
    pub fn claim(&mut self, claim: Claim, out: &mut impl Outbox) {
        let new = (claim.worker, claim.session);
        match self.entries.insert(claim.key.clone(), new) {
            Some((worker, old)) => out.send(worker, ShardMsg::Mqtt(Msg::Takeover { old, claim })),
            None => out.send(claim.worker, ShardMsg::Mqtt(Msg::Claimed { claim, state: None })),
        }
    }

    /// Whether a session of this node holds the client ID.
    pub fn holds(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// The session of this node that holds the client ID: its worker and ID.
    pub fn holder(&self, key: &str) -> Option<(WorkerId, u64)> {
        self.entries.get(key).copied()
    }

    /// Whether a session of this node other than `session` holds it.
    pub fn held_by_other(&self, key: &str, session: u64) -> bool {
        self.entries.get(key).is_some_and(|&(_, s)| s != session)
    }

    /// The cluster made `claim` this node's: its session holds the client
    /// ID here from now on. Whether it takes a session over from another
    /// node is the caller's to say (`RemoteClaim`).
    pub fn owned(&mut self, claim: &Claim) {
        self.entries.insert(claim.key.clone(), (claim.worker, claim.session));
    }

    /// Another node claims the client ID: the session here, if any, is
    /// taken over by it (and no longer this node's).
    pub fn remote_claim(&mut self, claim: Claim, out: &mut impl Outbox) {
        match self.entries.remove(&claim.key) {
            Some((worker, old)) => out.send(worker, ShardMsg::Mqtt(Msg::Takeover { old, claim })),
            None => out.send(claim.worker, ShardMsg::Mqtt(Msg::Claimed { claim, state: None })),
        }
    }

    /// A session restored at start (this worker owns its client ID).
    pub fn restore(&mut self, key: Arc<str>, worker: WorkerId, session: u64) {
        self.entries.insert(key, (worker, session));
    }

    pub fn release(&mut self, key: Arc<str>, session: u64) {
        if self.entries.get(&key).is_some_and(|&(_, s)| s == session) {
            self.entries.remove(&key);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::owner::Sent;

    fn claim(worker: WorkerId, session: u64) -> Claim {
        Claim { key: "r\0c".into(), session, worker, handle: 0, serial: 0, clean_start: false }
    }

    #[test]
    fn first_claim_is_granted_then_taken_over() {
        let mut r = Registry::default();
        let mut out = Sent::default();
        r.claim(claim(1, 10), &mut out);
        assert!(matches!(&out.0[0], (1, ShardMsg::Mqtt(Msg::Claimed { state: None, .. }))));
        r.claim(claim(2, 20), &mut out);
        assert!(matches!(&out.0[1], (1, ShardMsg::Mqtt(Msg::Takeover { old: 10, .. }))));
        // A stale release of the old session leaves the new entry.
        r.release("r\0c".into(), 10);
        assert_eq!(r.len(), 1);
        r.release("r\0c".into(), 20);
        assert!(r.is_empty());
    }

    #[test]
    fn a_claim_from_another_node_takes_the_session_over() {
        let mut r = Registry::default();
        let mut out = Sent::default();
        r.claim(claim(1, 10), &mut out);
        assert!(r.holds("r\0c"));
        // Node 3's worker 2 claims it: the old worker hands over to it.
        let remote = claim(crate::cluster::at_node(3, 2), 30);
        r.remote_claim(remote.clone(), &mut out);
        assert!(matches!(&out.0[1], (1, ShardMsg::Mqtt(Msg::Takeover { old: 10, .. }))));
        assert!(!r.holds("r\0c"), "no longer this node's");
        // Nothing here: the other node's connection starts afresh.
        r.remote_claim(remote, &mut out);
        assert!(
            matches!(&out.0[2], (w, ShardMsg::Mqtt(Msg::Claimed { state: None, .. })) if *w == crate::cluster::at_node(3, 2))
        );
    }
}
