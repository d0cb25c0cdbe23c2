//! Scale-out: several nodes serving one realm through NATS
//! (`docs/CLUSTER.md` is the design; this is what of it is built).
//!
//! The `cluster` thread (`thread/`) owns the NATS connection, on a
//! current-thread tokio runtime of its own: workers never see it. They
//! talk to it through a bounded channel (`ClusterLink`, like the store's:
//! overflow kept in order, sockets paused while it waits), and it talks to
//! them through their ordinary inboxes. `wire.rs` is the pure part: NATS
//! subject tokens and the form a publication travels in.

mod bucket;
mod probe;
pub mod procs;
pub mod rpc;
mod sessions;
pub mod thread;
pub mod wire;

use crate::router::{Barrier, Publication, ShardMsg, SubKey, WorkerId};
use serde::Deserialize;
use std::sync::Arc;

/// The pseudo-worker a publication from another node comes from: never a
/// local worker, so its publisher never equals a local session and it is
/// never forwarded to the cluster again.
pub const REMOTE: WorkerId = WorkerId::MAX;

/// A node of the cluster, numbered by this node's cluster thread in the
/// order it learns of them (the numbers are local to this node).
pub type NodeId = u16;

/// Worker IDs from here up name a worker of another node (`at_node`):
/// a session there is a `SessionRef` like a local one, so the dealer's
/// paths (INVOCATION, YIELD, CANCEL, a caller or callee leaving) take it
/// unchanged, and `Peers::send` hands what is addressed to it to the
/// cluster thread.
const NODE_BASE: WorkerId = 0x8000;
/// How many other nodes a node can address (node 127 would make `REMOTE`).
pub const MAX_NODES: usize = 127;
/// How many workers of a node another can address.
pub const MAX_WORKERS: usize = 256;

/// The worker ID that names worker `worker` of node `node`.
pub fn at_node(node: NodeId, worker: WorkerId) -> WorkerId {
    assert!((node as usize) < MAX_NODES && (worker as usize) < MAX_WORKERS, "node {node} worker {worker}");
    NODE_BASE | (node << 8) | worker
}

/// Every worker of node `node`, which has `n`.
pub fn workers_of(node: NodeId, n: u16) -> impl Iterator<Item = WorkerId> {
    (0..n).map(move |k| at_node(node, k))
}

/// The node and worker a worker ID names, if it is another node's.
pub fn node_of(w: WorkerId) -> Option<(NodeId, WorkerId)> {
    (w >= NODE_BASE && w != REMOTE).then(|| ((w - NODE_BASE) >> 8, w & 0xff))
}

/// The answers a question put to several workers (here and on other
/// nodes) is still owed, by node, so that it stops waiting for a node
/// taken for dead (`lost`): that node's share is counted out, what it held
/// having gone with it.
#[derive(Debug, Default)]
pub struct Owed {
    local: usize,
    remote: Vec<(NodeId, usize)>,
}

impl Owed {
    /// One answer from each of `to`.
    pub fn of(to: &[WorkerId]) -> Owed {
        let mut owed = Owed::default();
        for &w in to {
            match node_of(w) {
                None => owed.local += 1,
                Some((node, _)) => match owed.remote.iter_mut().find(|(n, _)| *n == node) {
                    Some((_, k)) => *k += 1,
                    None => owed.remote.push((node, 1)),
                },
            }
        }
        owed
    }

    /// An answer from this node's workers (`None`) or node `from`'s:
    /// `false` if none was owed (a node counted out, answering late).
    pub fn answered(&mut self, from: Option<NodeId>) -> bool {
        let k = match from {
            None => &mut self.local,
            Some(node) => match self.remote.iter_mut().find(|(n, _)| *n == node) {
                Some((_, k)) => k,
                None => return false,
            },
        };
        if *k == 0 {
            return false;
        }
        *k -= 1;
        true
    }

    /// Node `node` is gone: what it owed is counted out. Whether it owed
    /// anything.
    pub fn lost(&mut self, node: NodeId) -> bool {
        self.remote.iter_mut().find(|(n, k)| *n == node && *k > 0).map(|(_, k)| *k = 0).is_some()
    }

    /// The answers still owed.
    pub fn left(&self) -> usize {
        self.local + self.remote.iter().map(|(_, k)| k).sum::<usize>()
    }
}

/// Capacity of the workers' shared channel to the cluster thread.
pub const QUEUE: usize = 65_536;

/// The `[cluster]` table.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// NATS server URL (`nats://host:port`); none: a single node.
    pub url: Option<String>,
    /// This node's name, unique in the cluster [default: the host name].
    pub node: Option<String>,
    /// First token of every subject and bucket name [default: fnc].
    pub prefix: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    pub url: String,
    pub node: String,
    pub prefix: String,
    /// The most messages an MQTT session keeps queued and in flight (the
    /// queues stream's bound per session; set from `[mqtt]`).
    pub queue_bound: usize,
}

impl ClusterConfig {
    /// The flags over the file; `None` (one node) when neither names a URL.
    pub fn resolve(
        url: Option<String>,
        node: Option<String>,
        file: ClusterFile,
    ) -> Result<Option<ClusterConfig>, String> {
        let Some(url) = url.or(file.url) else {
            if node.is_some() || file.node.is_some() {
                return Err("a node name needs a cluster: give --cluster (or cluster.url) too".into());
            }
            return Ok(None);
        };
        let node = match node.or(file.node) {
            Some(n) => n,
            None => host_name().ok_or("no host name to name this node by: give --node-name")?,
        };
        if !wire::plain_token(&node) {
            return Err(format!("node name {node:?}: use letters, digits, '-' and '_' only"));
        }
        let prefix = file.prefix.unwrap_or_else(|| "fnc".into());
        if !wire::plain_token(&prefix) {
            return Err(format!("cluster prefix {prefix:?}: use letters, digits, '-' and '_' only"));
        }
        Ok(Some(ClusterConfig { url, node, prefix, queue_bound: 10_000 }))
    }
}

fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name: String = name.trim().chars().map(|c| if wire::plain_char(c) { c } else { '-' }).collect();
    (!name.is_empty()).then_some(name)
}

/// What a worker tells the cluster thread.
#[derive(Debug)]
pub enum ClusterReq {
    /// This node has (`add`) or no longer has a subscriber of `key`: sent
    /// by the key's owner when it creates or deletes the subscription. A
    /// new key's `barrier` is acked (`BarrierAck` to its owner) once every
    /// live node routes the key here.
    Interest { key: SubKey, add: bool, barrier: Option<Barrier> },
    /// A worker has applied everything the cluster thread sent it before
    /// its `ShardMsg::ClusterSync { token }`.
    Synced { token: u64 },
    /// A local publication that these nodes have interest in; `shares`:
    /// the MQTT shared subscriptions it matched with the node picked to
    /// serve each (`wire::key_hash`).
    Publish { p: Arc<Publication>, nodes: Vec<NodeId>, shares: Vec<(NodeId, u64)> },
    /// From a topic's owner: the key's new retained value (an empty body
    /// clears it), for the keys bucket and so the other nodes.
    /// `will`: the key is tied to the publisher's session, with this will.
    Retained { p: Arc<Publication>, will: Option<crate::router::Body> },
    /// From a topic's owner: a conditional write (`when`) that holds on
    /// this node's copy of the key, to be decided against the keys bucket
    /// (answered with `ShardMsg::CasDone`).
    CasWrite { p: Arc<Publication>, when: crate::value::Value, will: Option<crate::router::Body> },
    /// From a client ID's owner: a CONNECT's claim of a client ID no
    /// session of this node holds, decided in the cluster's bucket
    /// (answered with `mqtt::registry::Msg::Owned`).
    MqttClaim { claim: crate::mqtt::registry::Claim },
    /// A claim that waited for node `node`, now taken for dead: resumed
    /// from the record that node left of the session, if any (a clean
    /// start: that session ends, and its will goes out).
    MqttResume { claim: crate::mqtt::registry::Claim, node: NodeId },
    /// A persistent MQTT session's record (`None`: it ended), for the
    /// keys bucket: another node resumes it if this one dies.
    MqttSession { key: Arc<str>, record: Option<Vec<u8>> },
    /// Messages queued for an offline persistent MQTT session (sequence,
    /// `store::mqtt::MessageRecord`), kept in the queues stream so that a
    /// survivor takes them with the session if this node dies ...
    MqttQueued { key: Arc<str>, messages: Vec<(u64, Vec<u8>)> },
    /// ... and taken out once the session has a connection again, moves
    /// or ends.
    MqttQueueClear { key: Arc<str> },
    /// An MQTT session restored from this node's store at start (a
    /// persistent one, or one kept for its will): still this node's in the
    /// cluster (its client ID's holder is this node, in any life), or taken
    /// meanwhile by another node? And, if it has a will (`will`), is the
    /// will's entry still this node's (in any life), or did a survivor take
    /// it? Answered with `mqtt::registry::Msg::Restored`.
    MqttRestored { key: Arc<str>, will: bool },
    /// An MQTT session's will (with its delay in seconds), or none any
    /// more, for the keys bucket: a survivor publishes it if this node
    /// dies.
    MqttWill { key: Arc<str>, will: Option<(Publication, u32)> },
    /// A dealer message for worker `worker` of node `node` (`rpc.rs` says
    /// which travel).
    Rpc { node: NodeId, worker: WorkerId, msg: ShardMsg },
    /// From a procedure's owner: this node's part of a registration
    /// changed (its callees, in order; none: it left). A `claim` (this
    /// node's first callee) is decided cluster-wide and answered with
    /// `ShardMsg::Claimed` to `owner`.
    Register { part: procs::RegPart, claim: Option<Claim> },
}

/// The keys bucket's decision on a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasOutcome {
    /// Written, at this revision: the write is accepted.
    Won(u64),
    /// The bucket's value does not meet the condition.
    Refused,
    /// NATS could not be asked: not accepted (the cluster decides, or nobody).
    Failed,
}

/// What a procedure's owner waits for with a claim.
#[derive(Debug, Clone, Copy)]
pub struct Claim {
    pub owner: WorkerId,
    pub ticket: u64,
}

/// A worker's end of the channel to the cluster thread: like `StoreLink`,
/// a request that does not fit waits in the worker, in order, and the
/// worker stops reading sockets until it drains.
pub type ClusterLink = crate::worker::link::Link<tokio::sync::mpsc::Sender<ClusterReq>, ClusterReq>;

/// What a worker gets of the cluster thread: its channel, and whether the
/// node is connected to NATS now (cut off, it refuses new sessions).
pub type ClusterChannel = (tokio::sync::mpsc::Sender<ClusterReq>, Arc<std::sync::atomic::AtomicBool>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_dead_node_owed_is_counted_out() {
        let to = [0, 1, at_node(2, 0), at_node(2, 1), at_node(5, 0)];
        let mut owed = Owed::of(&to);
        assert_eq!(owed.left(), 5);
        assert!(owed.answered(None));
        assert!(owed.answered(Some(2)));
        assert!(owed.lost(2), "node 2 still owed one");
        assert_eq!(owed.left(), 2);
        assert!(!owed.answered(Some(2)), "a late answer of a node counted out");
        assert!(!owed.lost(2));
        assert!(!owed.answered(Some(7)), "never asked");
        assert!(owed.answered(None));
        assert!(owed.answered(Some(5)));
        assert_eq!(owed.left(), 0);
        assert!(!owed.answered(None), "nothing more owed here");
    }

    #[test]
    fn one_node_unless_a_url_is_given() {
        assert_eq!(ClusterConfig::resolve(None, None, ClusterFile::default()), Ok(None));
        assert!(ClusterConfig::resolve(None, Some("a".into()), ClusterFile::default()).is_err());
        let c = ClusterConfig::resolve(Some("nats://h:1".into()), Some("a".into()), ClusterFile::default())
            .unwrap()
            .unwrap();
        assert_eq!((c.url.as_str(), c.node.as_str(), c.prefix.as_str()), ("nats://h:1", "a", "fnc"));
        let file = ClusterFile { url: Some("nats://f:2".into()), node: Some("b".into()), prefix: Some("x".into()) };
        let c = ClusterConfig::resolve(None, None, file).unwrap().unwrap();
        assert_eq!((c.url.as_str(), c.node.as_str(), c.prefix.as_str()), ("nats://f:2", "b", "x"));
        assert!(ClusterConfig::resolve(Some("u".into()), Some("a.b".into()), ClusterFile::default()).is_err());
        assert!(ClusterConfig::resolve(Some("u".into()), Some("a*".into()), ClusterFile::default()).is_err());
    }

    #[test]
    fn another_nodes_workers_have_ids_of_their_own() {
        assert_eq!(node_of(3), None);
        assert_eq!(node_of(REMOTE), None);
        assert_eq!(node_of(at_node(0, 0)), Some((0, 0)));
        assert_eq!(node_of(at_node(126, 255)), Some((126, 255)));
        assert_ne!(at_node(126, 255), REMOTE);
        assert!(at_node(0, 0) as usize > MAX_WORKERS);
    }
}
