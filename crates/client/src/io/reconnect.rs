//! Reconnecting (`Options::reconnect`): when the connection is lost the
//! loop fails what was in flight, connects and joins again with backoff
//! (refusing commands meanwhile), and makes the subscriptions and
//! registrations again.

use super::{fail, Command, Io, Pending};
use crate::error::Error;
use crate::join;
use crate::transport::Transport;
use fennec_wamp::message::Msg;
use fennec_wamp::value::Dict;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Io {
    /// The connection is lost: what was in flight fails with
    /// [`Error::Closed`] (its outcome is unknown), running handlers are
    /// told they are interrupted, and the loop connects and joins again
    /// with backoff, failing commands meanwhile with
    /// [`Error::Disconnected`]. Once joined, it makes every subscription
    /// and registration again. `false`: no more tries (none configured,
    /// the tries are used up, the router refused the credentials or the
    /// realm, or the user left).
    pub(super) fn reconnect(&mut self) -> bool {
        let Some(policy) = self.settings.options.reconnect.clone() else { return false };
        self.shared.reconnecting.store(true, Ordering::Release);
        for (_, p) in std::mem::take(&mut self.pending) {
            self.fail(p, Error::Closed);
        }
        self.deadlines.clear();
        for (_, run) in self.running.drain() {
            run.interrupted.store(true, Ordering::Relaxed);
        }
        let mut delay = policy.initial;
        let mut tries = 0u32;
        let (t, session, welcome) = loop {
            if policy.attempts.is_some_and(|n| tries >= n) {
                return false;
            }
            tries += 1;
            let until = Instant::now() + jitter(delay, tries);
            while Instant::now() < until {
                if !self.refuse_commands() {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(10).min(until.saturating_duration_since(Instant::now())));
            }
            let o = &self.settings.options;
            let joined = Transport::connect(&self.settings.url, o.serializer, &o.tls, o.connect_timeout)
                .and_then(|mut t| join::join(&mut t, &self.settings.realm, &o.auth).map(|(s, w)| (t, s, w)));
            match joined {
                Ok(j) => break j,
                Err(Error::Aborted { reason, .. }) if FINAL.contains(&reason.as_str()) => return false,
                Err(_) => delay = (delay * 2).min(policy.max),
            }
        };
        let blocking = || -> std::io::Result<()> {
            t.tcp().set_read_timeout(None)?;
            t.tcp().set_write_timeout(None)?;
            t.tcp().set_nonblocking(true)
        };
        if blocking().is_err() {
            return false;
        }
        self.cancel = join::feature(&welcome, "dealer", "call_canceling");
        *self.shared.session.lock().expect("session") = (session, welcome);
        self.shared.reconnecting.store(false, Ordering::Release);
        self.t = t;
        self.open = true;
        self.backlogged = false;
        // Make the subscriptions and registrations again.
        self.subs.clear();
        self.locals.clear();
        let specs: Vec<(u64, String, Dict)> =
            self.sub_specs.iter().map(|(l, (t, o))| (*l, t.clone(), o.clone())).collect();
        for (local, topic, options) in specs {
            let request = self.request();
            self.send(&Msg::Subscribe { request, options, topic });
            self.expect(request, Pending::Resubscribe { local });
        }
        let regs: Vec<(u64, String, Dict)> =
            self.regs.iter().map(|(h, r)| (*h, r.procedure.clone(), r.options.clone())).collect();
        for (handle, procedure, options) in regs {
            let request = self.request();
            self.send(&Msg::Register { request, options, procedure });
            self.expect(request, Pending::Reregister { handle });
        }
        true
    }

    /// While reconnecting: fails each queued command with
    /// [`Error::Disconnected`]; `false` if the user left.
    fn refuse_commands(&mut self) -> bool {
        while let Ok(c) = self.commands.try_recv() {
            match c {
                Command::Leave { reply } => {
                    if let Some(r) = reply {
                        let _ = r.try_send(Ok(()));
                    }
                    return false;
                }
                Command::Yield { .. } => {}
                c => fail(c, Error::Disconnected),
            }
        }
        true
    }
}

/// ABORT reasons a new try would get again: stop reconnecting.
const FINAL: [&str; 4] = [
    "wamp.error.authentication_failed",
    "wamp.error.not_authorized",
    "wamp.error.no_such_realm",
    "wamp.error.no_auth_method",
];

/// `delay`, 25 % either way, so that clients the same router dropped do
/// not all come back at once.
fn jitter(delay: Duration, salt: u32) -> Duration {
    use std::hash::BuildHasher;
    let r = std::collections::hash_map::RandomState::new().hash_one(salt) % 1000;
    delay.mul_f64(0.75 + r as f64 / 2000.0)
}
