//! The cluster thread's view of the other nodes: their heartbeats, the
//! verdict on a silent one (and the probe of a late one, `cluster::probe`),
//! and what a node's death or restart ends on this node.

use super::*;
use crate::cluster::probe;

impl Node {
    pub(super) fn on_heartbeat(&mut self, subject: &str, payload: &[u8]) {
        let Some(name) = subject.rsplit('.').next() else { return };
        let Some((b, rest)) = payload.split_first_chunk::<8>() else { return };
        let incarnation = u64::from_be_bytes(*b);
        let workers = rest.first_chunk::<2>().map_or(0, |w| u16::from_be_bytes(*w));
        if name == self.cfg.node {
            if incarnation != self.incarnation && self.twin != Some(incarnation) {
                self.twin = Some(incarnation);
                log::error!("cluster: another node is named {name}: node names must be unique in a cluster");
            }
            return;
        }
        let id = self.peer(name);
        let peer = &mut self.peers[id as usize];
        peer.last_heard = Instant::now();
        peer.gone = 0;
        let was_alive = peer.alive;
        // A node new to this one (or new again) hears from it at once, not
        // at its next heartbeat: a subscription made here right after it
        // started then waits for it too.
        if peer.incarnation != incarnation {
            let restarted = peer.incarnation != 0;
            peer.incarnation = incarnation;
            self.beat_now = true;
            if restarted {
                log::info!("cluster: node {name} restarted");
                // Calls to and from its earlier life end; its parts of
                // registrations are that life's until it writes new ones.
                self.lost(id);
            } else {
                // Parts of registrations from an earlier life drop out.
                self.announce_node(id);
            }
        }
        if !was_alive {
            log::info!("cluster: node {name} is back");
            self.set_alive(id, true);
            self.beat_now = true;
        }
        let peer = &mut self.peers[id as usize];
        if peer.workers != workers || !was_alive {
            peer.workers = workers;
            self.tell_workers(id);
        }
    }

    /// Every worker learns how many workers node `id` has while it is
    /// alive (0: it is not), for the questions that go to all of them
    /// (the session meta API).
    pub(super) fn tell_workers(&mut self, id: NodeId) {
        let p = &self.peers[id as usize];
        let workers =
            if p.alive && (id as usize) < MAX_NODES { p.workers.min(crate::cluster::MAX_WORKERS as u16) } else { 0 };
        for w in 0..self.workers.len() {
            self.hand_to(w, ShardMsg::NodeWorkers { node: id, workers }, false);
        }
    }

    /// Takes the nodes silent for `DEAD_AFTER` for dead, and asks those
    /// whose heartbeat is late whether they are still connected (`probe`).
    pub(super) fn check_liveness(&mut self) {
        let now = Instant::now();
        let up = self.connected.load(Ordering::Relaxed);
        self.up_since = if up { self.up_since.or(Some(now)) } else { None };
        let may_ask = self.up_since.is_some_and(|t| now.duration_since(t) >= probe::PROBE_GRACE);
        for id in 0..self.peers.len() {
            let p = &mut self.peers[id];
            if !p.alive {
                continue;
            }
            let silent = now.duration_since(p.last_heard);
            if silent > DEAD_AFTER {
                log::warn!("cluster: node {} silent for {} s: its routes are dropped", p.name, DEAD_AFTER.as_secs());
                self.set_alive(id as NodeId, false);
            } else if silent > probe::PROBE_AFTER && may_ask && !p.probing {
                p.probing = true;
                let (client, tx, incarnation) = (self.client.clone(), self.probes.0.clone(), p.incarnation);
                let subject = wire::ping_subject(&self.cfg.prefix, &p.name);
                tokio::spawn(async move {
                    let answer = probe::ask(client, subject).await;
                    let _ = tx.send((id as NodeId, incarnation, answer)).await;
                });
            }
        }
    }

    /// A late node's answer (`probe`): two "no responders" since it was
    /// last heard (`probe::verdict`), and it is taken for dead now, if it
    /// is still silent in the same life.
    pub(super) fn on_probe(&mut self, id: NodeId, incarnation: u64, answer: probe::Answer) {
        let Some(p) = self.peers.get_mut(id as usize) else { return };
        p.probing = false;
        let still = p.alive && p.incarnation == incarnation && p.last_heard.elapsed() > probe::PROBE_AFTER;
        if !still {
            return;
        }
        if probe::verdict(&mut p.gone, answer) {
            log::warn!("cluster: node {} is gone from NATS: its routes are dropped", p.name);
            self.set_alive(id, false);
        }
    }

    /// The number of the node called `name` (new ones alive, on probation
    /// until their first heartbeat is `DEAD_AFTER` late).
    pub(super) fn peer(&mut self, name: &str) -> NodeId {
        if let Some(&id) = self.by_name.get(name) {
            return id;
        }
        let id = self.peers.len() as NodeId;
        self.peers.push(Peer {
            name: name.to_owned(),
            incarnation: 0,
            workers: 0,
            last_heard: Instant::now(),
            alive: true,
            probing: false,
            gone: 0,
            entries: AHashMap::new(),
        });
        self.by_name.insert(name.to_owned(), id);
        id
    }

    pub(super) fn set_alive(&mut self, id: NodeId, alive: bool) {
        self.peers[id as usize].alive = alive;
        let keys: Vec<SubKey> = self.peers[id as usize].entries.values().cloned().collect();
        for key in keys {
            self.route(id, &key, alive);
        }
        if alive {
            self.announce_node(id);
        } else {
            self.lost(id);
            self.adopt_sessions_of(id);
            self.tell_workers(id);
        }
    }

    /// Node `id` died or restarted: its callees leave the workers' tables
    /// first, then every worker ends the calls to and from it.
    pub(super) fn lost(&mut self, id: NodeId) {
        self.announce_node(id);
        for w in 0..self.workers.len() {
            self.hand_to(w, ShardMsg::NodeLost { node: id }, false);
        }
        self.wills_of(id);
    }
}
