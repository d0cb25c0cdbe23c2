//! The outbound queue (`conn::OutQueue`): enqueue and write, as the worker
//! does for each connection it flushes, to a sink (no kernel).
//! - `one_small_frame`: one 100 B frame queued, then written: a fan-out
//!   subscriber or an RPC peer, emptied by every flush (the queue keeps its
//!   rings once it has given them back three times an epoch).
//! - `batch_100_small`: 100 frames of 100 B (copied into one chunk), then one
//!   vectored write.
//! - `batch_10_large`: 10 shared 4 KiB frames (one iovec each).
//! - `idle_cycle_1000`: 1,000 connections each sent one frame and emptied,
//!   then swept: the rings go round the worker's pool.
//!
//! Run: cargo bench --bench queue

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fennec::conn::{ChunkPool, Frame, OutQueue};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue");
    let small = [7u8; 100];
    let large = Bytes::from(vec![9u8; 4096]);
    let mut sink = std::io::sink();

    g.throughput(Throughput::Elements(1));
    g.bench_function("one_small_frame", |b| {
        let (mut pool, mut q) = (ChunkPool::default(), OutQueue::default());
        b.iter(|| {
            q.push(Frame::Slice(&small), &mut pool);
            q.write_to(&mut sink, &mut pool).unwrap()
        })
    });
    g.throughput(Throughput::Elements(100));
    g.bench_function("batch_100_small", |b| {
        let (mut pool, mut q) = (ChunkPool::default(), OutQueue::default());
        b.iter(|| {
            for _ in 0..100 {
                q.push(Frame::Slice(&small), &mut pool);
            }
            q.write_to(&mut sink, &mut pool).unwrap()
        })
    });
    g.throughput(Throughput::Elements(10));
    g.bench_function("batch_10_large", |b| {
        let (mut pool, mut q) = (ChunkPool::default(), OutQueue::default());
        b.iter(|| {
            for _ in 0..10 {
                q.push(Frame::Shared(&large), &mut pool);
            }
            q.write_to(&mut sink, &mut pool).unwrap()
        })
    });
    g.throughput(Throughput::Elements(1000));
    g.bench_function("idle_cycle_1000", |b| {
        let mut pool = ChunkPool::default();
        let mut queues: Vec<OutQueue> = (0..1000).map(|_| OutQueue::default()).collect();
        b.iter(|| {
            pool.next_epoch();
            for q in &mut queues {
                q.push(Frame::Slice(&small), &mut pool);
                q.write_to(&mut sink, &mut pool).unwrap();
            }
            for q in &mut queues {
                q.sweep(&mut pool);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
