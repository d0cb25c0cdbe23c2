//! The `store` thread: the only one that touches the store's files.
//!
//! Workers send `StoreReq`s over one bounded channel (a worker that finds
//! it full keeps the request in its own overflow list and stops reading
//! sockets until it drains, as with a full peer inbox: see `StoreLink`).
//! The thread takes every request that arrived while the previous commit
//! ran (at most `MAX_GROUP`) and commits them as one group: one fsync for
//! all under `sync`. Each request that carries an acknowledgement
//! (`ack`: worker and ticket) is answered with `ShardMsg::Stored` once its
//! group is on disk, or failed, so the publisher's worker can send
//! PUBLISHED / PUBACK, or the error. Under `batch` the thread commits at
//! most every `interval` without fsync, and nobody waits for it.

use super::{Store, Write};
use crate::metrics::{Op, Snapshot, Source, WorkerMetrics};
use crate::router::{ShardMsg, WorkerId};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use mio::Waker;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Capacity of the channel to the store thread, in requests.
pub const CAPACITY: usize = 64 * 1024;
/// Most writes in one group commit.
pub const MAX_GROUP: usize = 16 * 1024;

/// One write for the store; `ack`: tell this worker this ticket when done.
#[derive(Debug)]
pub struct StoreReq {
    pub write: Write,
    pub ack: Option<(WorkerId, u64)>,
}

/// How the thread commits.
#[derive(Clone, Copy, Debug)]
pub enum Commit {
    /// As soon as there is something, durable before the acknowledgement.
    Now,
    /// Every `interval` at most, without waiting for the disk.
    Every(Duration),
}

/// Where the store thread sends its metrics (commit latency, counts),
/// and how often.
pub type MetricsLink = (Sender<(Source, Snapshot)>, Duration);

/// Runs until every sender is gone, then commits what is left.
pub fn run(
    mut store: Box<dyn Store>,
    rx: Receiver<StoreReq>,
    commit: Commit,
    workers: Vec<(Sender<ShardMsg>, Arc<Waker>)>,
    metrics: Option<MetricsLink>,
) {
    let mut group: Vec<StoreReq> = Vec::new();
    let mut open = true;
    let mut m = Metered { metrics: WorkerMetrics::default(), link: metrics, next: Instant::now() };
    while open {
        // Wait for the first request of a group (reporting the metrics
        // meanwhile, if they are on).
        match m.wait(&rx) {
            Some(r) => group.push(r),
            None => break,
        }
        if let Commit::Every(interval) = commit {
            // Gather for the interval (or until the group is full).
            let until = Instant::now() + interval;
            while group.len() < MAX_GROUP {
                match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                    Ok(r) => group.push(r),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
        }
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        commit_group(store.as_mut(), &mut group, &workers, &mut m.metrics);
    }
    while let Ok(r) = rx.try_recv() {
        group.push(r);
    }
    if !group.is_empty() {
        commit_group(store.as_mut(), &mut group, &workers, &mut m.metrics);
    }
    m.report();
}

/// The store thread's metrics and where they go.
struct Metered {
    metrics: WorkerMetrics,
    link: Option<MetricsLink>,
    next: Instant,
}

impl Metered {
    /// The next request; none when every sender is gone. Sends a snapshot
    /// every interval while waiting or between groups.
    fn wait(&mut self, rx: &Receiver<StoreReq>) -> Option<StoreReq> {
        let Some((_, interval)) = self.link else { return rx.recv().ok() };
        loop {
            if Instant::now() >= self.next {
                self.report();
                self.next = Instant::now() + interval;
            }
            match rx.recv_deadline(self.next) {
                Ok(r) => return Some(r),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    fn report(&mut self) {
        if let Some((tx, _)) = &self.link {
            // A full metrics channel loses this interval's data, as it
            // does a worker's.
            let _ = tx.try_send((Source::Store, self.metrics.snapshot()));
        }
    }
}

fn commit_group(
    store: &mut dyn Store,
    group: &mut Vec<StoreReq>,
    workers: &[(Sender<ShardMsg>, Arc<Waker>)],
    metrics: &mut WorkerMetrics,
) {
    let writes: Vec<Write> = group.iter().map(|r| r.write.clone()).collect();
    let started = Instant::now();
    let result = store.commit(&writes).map_err(|e| Arc::<str>::from(e.as_str()));
    metrics.record(Op::StoreCommit, started, Instant::now());
    metrics.counters.store_commits += 1;
    metrics.counters.store_writes += writes.len() as u64;
    if let Err(e) = &result {
        metrics.counters.store_errors += 1;
        log::error!("store: a commit failed: {e}");
    }
    // One message per worker with every ticket of this group.
    let mut tickets: Vec<Vec<u64>> = vec![Vec::new(); workers.len()];
    for r in group.drain(..) {
        if let Some((w, t)) = r.ack {
            tickets[w as usize].push(t);
        }
    }
    for (w, t) in tickets.into_iter().enumerate() {
        if t.is_empty() {
            continue;
        }
        let (tx, waker) = &workers[w];
        // The store thread may wait for a worker (it is no worker); a
        // worker never waits for it.
        if tx.send(ShardMsg::Stored { tickets: t, error: result.clone().err() }).is_ok() {
            let _ = waker.wake();
        }
    }
}

/// A worker's end of the channel to the store thread (bounded; what does
/// not fit waits in the worker, which stops reading sockets meanwhile).
pub type StoreLink = crate::worker::link::Link<Sender<StoreReq>, StoreReq>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;

    #[test]
    fn groups_are_committed_and_acknowledged_per_worker() {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (wtx, wrx) = crossbeam_channel::unbounded();
        let (tx, rx) = crossbeam_channel::bounded(16);
        for i in 0..5u64 {
            let write = Write::Put { key: vec![i as u8], value: vec![1] };
            tx.send(StoreReq { write, ack: (i % 2 == 0).then_some((0, i)) }).unwrap();
        }
        drop(tx);
        let (mtx, mrx) = crossbeam_channel::unbounded();
        run(Box::new(MemStore::default()), rx, Commit::Now, vec![(wtx, waker)], Some((mtx, Duration::from_secs(60))));
        let mut acked = Vec::new();
        while let Ok(ShardMsg::Stored { tickets, error }) = wrx.try_recv() {
            assert!(error.is_none());
            acked.extend(tickets);
        }
        assert_eq!(acked, vec![0, 2, 4]);
        // Its metrics: every commit timed, every write counted (in the
        // snapshots it sent, the last one at its end).
        let (mut commits, mut writes, mut timed) = (0, 0, 0);
        while let Ok((source, snap)) = mrx.try_recv() {
            assert_eq!(source, Source::Store);
            commits += snap.counters.store_commits;
            writes += snap.counters.store_writes;
            timed += snap.hist[Op::StoreCommit as usize].len();
            assert_eq!(snap.counters.store_errors, 0);
        }
        assert_eq!(writes, 5);
        assert!((1..=5).contains(&commits), "{commits}");
        assert_eq!(timed, commits);
    }

    #[test]
    fn a_failed_commit_is_reported() {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (wtx, wrx) = crossbeam_channel::unbounded();
        let (tx, rx) = crossbeam_channel::bounded(16);
        tx.send(StoreReq { write: Write::Delete { key: vec![1] }, ack: Some((0, 7)) }).unwrap();
        drop(tx);
        let (mtx, mrx) = crossbeam_channel::unbounded();
        let failing = Box::new(MemStore { fail: true, ..Default::default() });
        run(failing, rx, Commit::Now, vec![(wtx, waker)], Some((mtx, Duration::from_secs(60))));
        let errors: u64 = mrx.try_iter().map(|(_, s)| s.counters.store_errors).sum();
        assert_eq!(errors, 1);
        match wrx.try_recv() {
            Ok(ShardMsg::Stored { tickets, error: Some(e) }) => {
                assert_eq!(tickets, vec![7]);
                assert!(e.contains("failed"));
            }
            other => panic!("{other:?}"),
        }
    }
}
