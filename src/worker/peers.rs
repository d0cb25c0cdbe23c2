//! Sending to other workers. Each worker's inbox is a bounded
//! `crossbeam-channel`; a message that does not fit waits in a local per-peer
//! overflow list (order kept: once a peer has overflow, everything for it
//! goes there) and the worker stops reading sockets until the overflow
//! drains, so TCP backpressure reaches the publisher. A peer is woken once
//! per loop iteration, not once per message.

use crate::router::owner::Outbox;
use crate::router::{ShardMsg, WorkerId};
use crossbeam_channel::{Sender, TrySendError};
use mio::Waker;
use std::collections::VecDeque;
use std::sync::Arc;

pub struct Peers {
    me: WorkerId,
    senders: Vec<Sender<ShardMsg>>,
    wakers: Vec<Arc<Waker>>,
    overflow: Vec<VecDeque<ShardMsg>>,
    to_wake: Vec<bool>,
    /// Messages this worker sends to itself, handled in the same iteration.
    pub local: VecDeque<ShardMsg>,
    /// Messages for other nodes' workers (`cluster::at_node`), handed to
    /// the cluster link at the end of the iteration (`Shard::flush_cluster`).
    pub remote: Vec<(crate::cluster::NodeId, WorkerId, ShardMsg)>,
    congested: usize,
}

impl Peers {
    pub fn new(me: WorkerId, senders: Vec<Sender<ShardMsg>>, wakers: Vec<Arc<Waker>>) -> Peers {
        let n = senders.len();
        Peers {
            me,
            senders,
            wakers,
            overflow: (0..n).map(|_| VecDeque::new()).collect(),
            to_wake: vec![false; n],
            local: VecDeque::new(),
            remote: Vec::new(),
            congested: 0,
        }
    }

    /// True while some peer has overflow: stop reading sockets.
    pub fn congested(&self) -> bool {
        self.congested > 0
    }

    /// Moves overflow into peer inboxes as room allows and wakes every peer
    /// that got something since the last flush.
    pub fn flush(&mut self) {
        if self.congested > 0 {
            for to in 0..self.senders.len() {
                while let Some(msg) = self.overflow[to].pop_front() {
                    match self.senders[to].try_send(msg) {
                        Ok(()) => self.to_wake[to] = true,
                        Err(TrySendError::Full(msg)) => {
                            self.overflow[to].push_front(msg);
                            break;
                        }
                        Err(TrySendError::Disconnected(_)) => self.overflow[to].clear(),
                    }
                }
            }
            self.congested = self.overflow.iter().filter(|o| !o.is_empty()).count();
        }
        for (to, wake) in self.to_wake.iter_mut().enumerate() {
            if std::mem::take(wake) {
                // A failed wake means the peer is gone (shutdown); nothing to do.
                let _ = self.wakers[to].wake();
            }
        }
    }
}

impl Outbox for Peers {
    fn send(&mut self, to: WorkerId, msg: ShardMsg) {
        let i = to as usize;
        if i >= self.senders.len() {
            // Another node's worker; the pseudo-worker `REMOTE` takes nothing.
            if let Some((node, worker)) = crate::cluster::node_of(to) {
                self.remote.push((node, worker, msg));
            }
            return;
        }
        if to == self.me {
            self.local.push_back(msg);
            return;
        }
        if !self.overflow[i].is_empty() {
            self.overflow[i].push_back(msg);
            return;
        }
        match self.senders[i].try_send(msg) {
            Ok(()) => self.to_wake[i] = true,
            Err(TrySendError::Full(msg)) => {
                self.overflow[i].push_back(msg);
                self.congested += 1;
                self.to_wake[i] = true;
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}
