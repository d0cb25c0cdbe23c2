//! Chooses Fennec's embedded store by measuring the candidates on the
//! router's workload (issue 9), each through the same small interface:
//!
//! - durable group commits: N small values (128 B) per commit, each commit
//!   on disk (fsync) before it returns, as `--durability sync` needs; batch
//!   sizes 1, 10, 100, 1,000 and 10,000, distinct keys, and one hot key
//!   overwritten (a retained topic updated at a high rate);
//! - start-up: reopen the files and read every key (retained values are
//!   loaded before the listeners open);
//! - event history: append 100,000 events of one topic, then read the newest
//!   100 (a range scan from the end), and the 100 after a given event.
//!
//! Candidates: redb (pure Rust B-tree, copy-on-write, one fsync per
//! commit), fjall (pure Rust LSM tree with a journal), SQLite through
//! rusqlite (bundled C; WAL, synchronous=FULL). Not part of the workspace
//! build: `cargo run --release --manifest-path perf/store-bench/Cargo.toml`
//! (`-- --quick` for a short run). Figures: perf/RESULTS.md.

use redb::ReadableTable;
use std::path::Path;
use std::time::{Duration, Instant};

const VALUE: usize = 128;

trait Engine {
    fn name(&self) -> &'static str;
    /// Writes the pairs in one transaction, durable before returning.
    fn commit(&mut self, pairs: &[(Vec<u8>, Vec<u8>)]);
    /// Every key and value (a start-up load): how many.
    fn load_all(&self) -> usize;
    /// The newest `n` values with keys under `prefix` (keys sort by sequence).
    fn newest(&self, prefix: &[u8], n: usize) -> usize;
    /// Up to `n` values after `after` (exclusive), under `prefix`.
    fn after(&self, prefix: &[u8], after: &[u8], n: usize) -> usize;
}

// ---------------------------------------------------------------- redb

const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("kv");

struct Redb(redb::Database);

impl Redb {
    fn open(dir: &Path) -> Redb {
        let db = redb::Database::create(dir.join("redb.db")).expect("redb open");
        let txn = db.begin_write().unwrap();
        txn.open_table(TABLE).unwrap();
        txn.commit().unwrap();
        Redb(db)
    }
}

impl Engine for Redb {
    fn name(&self) -> &'static str {
        "redb 2.6"
    }

    fn commit(&mut self, pairs: &[(Vec<u8>, Vec<u8>)]) {
        let txn = self.0.begin_write().unwrap();
        {
            let mut t = txn.open_table(TABLE).unwrap();
            for (k, v) in pairs {
                t.insert(k.as_slice(), v.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    fn load_all(&self) -> usize {
        let txn = self.0.begin_read().unwrap();
        let t = txn.open_table(TABLE).unwrap();
        t.iter().unwrap().map(|e| e.unwrap().1.value().len()).filter(|&n| n > 0).count()
    }

    fn newest(&self, prefix: &[u8], n: usize) -> usize {
        let txn = self.0.begin_read().unwrap();
        let t = txn.open_table(TABLE).unwrap();
        let end = prefix_end(prefix);
        t.range(prefix..end.as_slice()).unwrap().rev().take(n).count()
    }

    fn after(&self, prefix: &[u8], after: &[u8], n: usize) -> usize {
        let txn = self.0.begin_read().unwrap();
        let t = txn.open_table(TABLE).unwrap();
        let end = prefix_end(prefix);
        t.range(after..end.as_slice()).unwrap().skip(1).take(n).count()
    }
}

// --------------------------------------------------------------- fjall

struct Fjall {
    keyspace: fjall::Keyspace,
    part: fjall::PartitionHandle,
}

impl Fjall {
    fn open(dir: &Path) -> Fjall {
        let keyspace = fjall::Config::new(dir.join("fjall")).open().expect("fjall open");
        let part = keyspace.open_partition("kv", fjall::PartitionCreateOptions::default()).unwrap();
        Fjall { keyspace, part }
    }
}

impl Engine for Fjall {
    fn name(&self) -> &'static str {
        "fjall 2.11"
    }

    fn commit(&mut self, pairs: &[(Vec<u8>, Vec<u8>)]) {
        let mut batch = self.keyspace.batch().durability(Some(fjall::PersistMode::SyncAll));
        for (k, v) in pairs {
            batch.insert(&self.part, k.as_slice(), v.as_slice());
        }
        batch.commit().unwrap();
    }

    fn load_all(&self) -> usize {
        self.part.iter().map(|e| e.unwrap().1.len()).filter(|&n| n > 0).count()
    }

    fn newest(&self, prefix: &[u8], n: usize) -> usize {
        self.part.prefix(prefix).rev().take(n).map(|e| e.unwrap()).count()
    }

    fn after(&self, prefix: &[u8], after: &[u8], n: usize) -> usize {
        let end = prefix_end(prefix);
        self.part.range(after.to_vec()..end).skip(1).take(n).map(|e| e.unwrap()).count()
    }
}

// -------------------------------------------------------------- SQLite

struct Sqlite(rusqlite::Connection);

impl Sqlite {
    fn open(dir: &Path) -> Sqlite {
        let c = rusqlite::Connection::open(dir.join("sqlite.db")).expect("sqlite open");
        c.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;",
        )
        .unwrap();
        Sqlite(c)
    }
}

impl Engine for Sqlite {
    fn name(&self) -> &'static str {
        "SQLite 3 (rusqlite 0.32, bundled)"
    }

    fn commit(&mut self, pairs: &[(Vec<u8>, Vec<u8>)]) {
        let txn = self.0.transaction().unwrap();
        {
            let mut st = txn.prepare_cached("INSERT OR REPLACE INTO kv (k, v) VALUES (?1, ?2)").unwrap();
            for (k, v) in pairs {
                st.execute((k, v)).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    fn load_all(&self) -> usize {
        let mut st = self.0.prepare("SELECT k, v FROM kv").unwrap();
        let rows = st.query_map([], |r| r.get::<_, Vec<u8>>(1)).unwrap();
        rows.map(|v| v.unwrap().len()).filter(|&n| n > 0).count()
    }

    fn newest(&self, prefix: &[u8], n: usize) -> usize {
        let end = prefix_end(prefix);
        let mut st = self.0.prepare_cached("SELECT v FROM kv WHERE k >= ?1 AND k < ?2 ORDER BY k DESC LIMIT ?3").unwrap();
        let rows = st.query_map((prefix, end, n as i64), |r| r.get::<_, Vec<u8>>(0)).unwrap();
        rows.count()
    }

    fn after(&self, prefix: &[u8], after: &[u8], n: usize) -> usize {
        let end = prefix_end(prefix);
        let mut st = self.0.prepare_cached("SELECT v FROM kv WHERE k > ?1 AND k < ?2 ORDER BY k LIMIT ?3").unwrap();
        let rows = st.query_map((after, end, n as i64), |r| r.get::<_, Vec<u8>>(0)).unwrap();
        rows.count()
    }
}

// ------------------------------------------------------------- the runs

/// The first key after every key with this prefix.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    end.push(0xff);
    end
}

fn key(i: u64) -> Vec<u8> {
    format!("realm1\0com.example.sensor.{i}").into_bytes()
}

fn history_key(seq: u64) -> Vec<u8> {
    let mut k = b"h\0realm1\0com.example.trace\0".to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn value(i: u64) -> Vec<u8> {
    let mut v = vec![b'x'; VALUE];
    v[..8].copy_from_slice(&i.to_le_bytes());
    v
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Run {
    writes_per_s: f64,
    p50: Duration,
    p99: Duration,
}

/// `commits` commits of `batch` writes; `hot`: every write to one key.
fn commits(e: &mut dyn Engine, batch: usize, commits: usize, hot: bool, next: &mut u64) -> Run {
    let mut lat = Vec::with_capacity(commits);
    let t0 = Instant::now();
    for _ in 0..commits {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..batch)
            .map(|_| {
                *next += 1;
                (key(if hot { 0 } else { *next }), value(*next))
            })
            .collect();
        let t = Instant::now();
        e.commit(&pairs);
        lat.push(t.elapsed());
    }
    let total = t0.elapsed();
    lat.sort();
    Run { writes_per_s: (batch * commits) as f64 / total.as_secs_f64(), p50: percentile(&lat, 0.5), p99: percentile(&lat, 0.99) }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 10 } else { 1 };
    println!("| engine | workload | writes/s | commit p50 | commit p99 |");
    println!("|---|---|---|---|---|");
    let mut other = Vec::new();
    for which in 0..3 {
        let dir = tempfile::tempdir_in(std::env::var("STORE_BENCH_DIR").unwrap_or_else(|_| ".".into())).unwrap();
        let mut e: Box<dyn Engine> = match which {
            0 => Box::new(Redb::open(dir.path())),
            1 => Box::new(Fjall::open(dir.path())),
            _ => Box::new(Sqlite::open(dir.path())),
        };
        let mut next = 0u64;
        for (batch, n) in [(1usize, 2000usize), (10, 1000), (100, 400), (1000, 100), (10_000, 20)] {
            for hot in [false, true] {
                let r = commits(e.as_mut(), batch, (n / scale).max(3), hot, &mut next);
                let what = format!("{} x {batch}{}", (n / scale).max(3), if hot { ", one hot key" } else { "" });
                println!(
                    "| {} | {what} | {:.0} | {:.2} ms | {:.2} ms |",
                    e.name(),
                    r.writes_per_s,
                    r.p50.as_secs_f64() * 1e3,
                    r.p99.as_secs_f64() * 1e3
                );
            }
        }
        // Event history: 100,000 events of one topic, in commits of 1,000.
        let events = 100_000 / scale as u64;
        for chunk in 0..events / 1000 {
            let pairs: Vec<_> = (0..1000).map(|i| (history_key(chunk * 1000 + i), value(i))).collect();
            e.commit(&pairs);
        }
        let prefix = b"h\0realm1\0com.example.trace\0";
        let t = Instant::now();
        let got = e.newest(prefix, 100);
        let newest = t.elapsed();
        assert_eq!(got, 100);
        let t = Instant::now();
        let got = e.after(prefix, &history_key(events / 2), 100);
        let after = t.elapsed();
        assert_eq!(got, 100);
        let name = e.name();
        drop(e);
        // Start-up: reopen and read everything.
        let t = Instant::now();
        let e: Box<dyn Engine> = match which {
            0 => Box::new(Redb::open(dir.path())),
            1 => Box::new(Fjall::open(dir.path())),
            _ => Box::new(Sqlite::open(dir.path())),
        };
        let keys = e.load_all();
        let load = t.elapsed();
        let size: u64 = walk(dir.path());
        other.push(format!(
            "| {name} | {keys} keys: reopen + load {:.1} ms | newest 100 of {events}: {:.0} us | 100 after one: {:.0} us | on disk {:.1} MiB |",
            load.as_secs_f64() * 1e3,
            newest.as_secs_f64() * 1e6,
            after.as_secs_f64() * 1e6,
            size as f64 / (1 << 20) as f64
        ));
    }
    println!();
    println!("| engine | start-up | history: newest | history: after | size |");
    println!("|---|---|---|---|---|");
    for line in other {
        println!("{line}");
    }
}

fn walk(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let m = e.metadata().unwrap();
                    if m.is_dir() {
                        walk(&e.path())
                    } else {
                        m.len()
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}
