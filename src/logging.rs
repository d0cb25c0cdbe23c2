//! Logging without blocking the workers: the `log` crate's macros format a
//! line on the calling thread and hand it to the `log` thread over a
//! bounded channel; a full channel drops the line and counts it
//! (`dropped`; `fennec_log_lines_dropped_total` in `/metrics`), it never waits. The `log`
//! thread writes lines to stderr, and says how many were dropped.
//!
//! Filtering is `RUST_LOG`-style: `--log-level` (or the `RUST_LOG`
//! environment variable when the flag is absent) is a comma-separated list
//! of `LEVEL` (the default) and `TARGET=LEVEL` (a module path prefix, with
//! or without the `fennec::` crate name: `wamp=debug`,
//! `fennec::mqtt::session=trace`); the longest matching target wins.
//! Levels: `off`, `error`, `warn`, `info`, `debug`, `trace`.
//!
//! What is logged: at `info` the router's start and stop and failures it
//! goes on after; at `warn` slow consumers closed, failed authentications,
//! store errors; at `debug` every session's open and close with its reason.

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Lines waiting for the `log` thread at most.
pub const QUEUE: usize = 4096;

static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Lines queued, and lines the `log` thread has written and flushed.
static QUEUED: AtomicU64 = AtomicU64::new(0);
static WRITTEN: AtomicU64 = AtomicU64::new(0);

/// Lines dropped so far because the `log` thread's queue was full.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// A parsed filter: the default level and per-target ones.
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    default: LevelFilter,
    /// (module path prefix, level), longest first.
    targets: Vec<(String, LevelFilter)>,
}

impl Filter {
    pub fn parse(spec: &str) -> Result<Filter, String> {
        let mut f = Filter { default: LevelFilter::Info, targets: Vec::new() };
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let level = |s: &str| {
                s.parse::<LevelFilter>()
                    .map_err(|_| format!("unknown log level '{s}' (off, error, warn, info, debug, trace)"))
            };
            match part.split_once('=') {
                None => f.default = level(part)?,
                Some((target, l)) => {
                    let target = target.trim();
                    let target = if target == "fennec" || target.starts_with("fennec::") {
                        target.to_owned()
                    } else {
                        format!("fennec::{target}")
                    };
                    f.targets.push((target, level(l.trim())?));
                }
            }
        }
        f.targets.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        Ok(f)
    }

    /// The level that applies to `target` (a module path).
    pub fn level(&self, target: &str) -> LevelFilter {
        for (t, l) in &self.targets {
            if target == t || (target.starts_with(t.as_str()) && target[t.len()..].starts_with("::")) {
                return *l;
            }
        }
        self.default
    }

    /// The most verbose level any target gets.
    pub fn max(&self) -> LevelFilter {
        self.targets.iter().map(|(_, l)| *l).chain([self.default]).max().unwrap_or(LevelFilter::Off)
    }
}

struct Logger {
    filter: Filter,
    tx: Sender<String>,
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= self.filter.level(m.target())
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let line = format_line(SystemTime::now(), r.level(), r.target(), r.args());
        send(&self.tx, line);
    }

    fn flush(&self) {}
}

/// Queues a line, or drops and counts it: never waits.
fn send(tx: &Sender<String>, line: String) {
    match tx.try_send(line) {
        Ok(()) => {
            QUEUED.fetch_add(1, Ordering::Relaxed);
        }
        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `2026-12-01T18:15:46.123Z WARN wamp::session: text` (UTC).
fn format_line(at: SystemTime, level: Level, target: &str, args: &std::fmt::Arguments) -> String {
    let ms = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    let target = target.strip_prefix("fennec::").unwrap_or(target);
    format!("{} {level:<5} {target}: {args}", crate::router::iso8601(ms))
}

/// Installs the logger (once per process: later calls change nothing) and
/// starts the `log` thread.
pub fn init(spec: &str) -> Result<(), String> {
    let filter = Filter::parse(spec)?;
    let (tx, rx) = bounded(QUEUE);
    let max = filter.max();
    if log::set_boxed_logger(Box::new(Logger { filter, tx })).is_err() {
        return Ok(()); // already installed (an embedding program, or a test)
    }
    log::set_max_level(max);
    std::thread::Builder::new()
        .name("log".into())
        .spawn(move || writer(rx, std::io::stderr()))
        .map_err(|e| format!("cannot start the log thread: {e}"))?;
    Ok(())
}

/// Waits (up to a second) until what was logged so far is written: for the
/// last lines before the process exits.
pub fn flush() {
    let until = std::time::Instant::now() + Duration::from_secs(1);
    let queued = QUEUED.load(Ordering::Relaxed);
    while WRITTEN.load(Ordering::Acquire) < queued && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The `log` thread: writes what comes, flushing when the queue is empty,
/// and a line saying how many were dropped since it last said so.
fn writer(rx: Receiver<String>, out: impl Write) {
    let mut out = std::io::BufWriter::new(out);
    let mut reported = 0;
    let mut written = 0;
    loop {
        let line = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => Some(line),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        };
        if let Some(line) = line {
            let _ = writeln!(out, "{line}");
            written += 1;
        }
        let now = dropped();
        if now > reported {
            let _ = writeln!(out, "fennec: {} log lines dropped (the log queue was full)", now - reported);
            reported = now;
        }
        if rx.is_empty() {
            let _ = out.flush();
            WRITTEN.fetch_max(written, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_like_rust_log() {
        let f = Filter::parse("warn,wamp=debug,fennec::wamp::session::auth=trace").unwrap();
        assert_eq!(f.level("fennec::worker::core"), LevelFilter::Warn);
        assert_eq!(f.level("fennec::wamp::session"), LevelFilter::Debug);
        assert_eq!(f.level("fennec::wamp::session::auth"), LevelFilter::Trace);
        assert_eq!(f.level("fennec::wampire"), LevelFilter::Warn, "a prefix ends at ::");
        assert_eq!(f.max(), LevelFilter::Trace);
        assert_eq!(Filter::parse("").unwrap().level("fennec::x"), LevelFilter::Info);
        assert_eq!(Filter::parse("off").unwrap().max(), LevelFilter::Off);
        assert!(Filter::parse("loud").is_err());
        assert!(Filter::parse("mqtt=loud").is_err());
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let (tx, rx) = bounded(2);
        let before = dropped();
        for i in 0..10 {
            send(&tx, format!("line {i}"));
        }
        assert_eq!(dropped() - before, 8);
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), ["line 0", "line 1"]);
    }

    #[test]
    fn lines_are_written_with_time_level_and_target() {
        let at = UNIX_EPOCH + Duration::from_millis(1_764_612_946_123);
        let line = format_line(at, Level::Warn, "fennec::worker::shard", &format_args!("slow consumer {}", 7));
        assert_eq!(line, "2025-12-01T18:15:46.123Z WARN  worker::shard: slow consumer 7");
        let (tx, rx) = bounded(4);
        tx.send("a".to_owned()).unwrap();
        tx.send("b".to_owned()).unwrap();
        drop(tx);
        let mut out = Vec::new();
        writer(rx, &mut out);
        // (Another test may be dropping lines: the writer's report of those
        // can come between.)
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = out.lines().filter(|l| !l.ends_with("(the log queue was full)")).collect();
        assert_eq!(lines, ["a", "b"]);
    }
}
