//! The dispatcher thread: runs the event handlers in the order the
//! router sent their events, off the connection's thread (so a handler
//! may use the client itself), hands invocations to a pool of threads,
//! and passes a started call's answers and a progressive call's input on
//! (waiting for their takers: the bounded job queue behind it makes the
//! connection stop reading, not grow).

use crate::args::Args;
use crate::error::{Error, Result};
use crate::io::{Command, RegHandler, SubHandler};
use crate::rpc::{Invocation, Reply};
use crate::Event;
use crossbeam_channel::{Receiver, Sender};
use mio::Waker;
use std::collections::HashMap;
use std::sync::Arc;

/// What the dispatcher thread does, in order.
pub(crate) enum Job {
    AddSub {
        subscription: u64,
        local: u64,
        handler: SubHandler,
    },
    RemoveSub {
        local: u64,
    },
    Event {
        subscription: u64,
        event: Event,
    },
    AddReg {
        registration: u64,
        handler: RegHandler,
    },
    RemoveReg {
        registration: u64,
    },
    /// A local subscription made again (after a reconnection) has a new
    /// router ID.
    MoveSub {
        local: u64,
        to: u64,
    },
    /// Likewise a registration.
    MoveReg {
        from: u64,
        to: u64,
    },
    Invocation {
        registration: u64,
        invocation: Invocation,
    },
    /// An answer to a `start_call` (the dispatcher waits for the caller
    /// to take it: a caller slow to read slows the connection's reading).
    Reply {
        to: Sender<Result<Reply>>,
        reply: Result<Reply>,
    },
    /// A progressive call's further input to a running handler (waited
    /// for likewise).
    Input {
        to: Sender<Args>,
        args: Args,
    },
}

/// Threads that run invocation handlers (a handler that calls another of
/// this client's procedures waits on one of them for its answer).
pub(crate) const INVOKERS: usize = 4;

/// The dispatcher thread: runs the event handlers, in the order the router
/// sent their events, off the connection's thread (so a handler may use
/// the client itself), and hands invocations to `INVOKERS` threads.
pub(crate) fn dispatch(jobs: Receiver<Job>, commands: Sender<Command>, waker: Arc<Waker>) {
    let mut subs: HashMap<u64, Vec<(u64, SubHandler)>> = HashMap::new();
    let mut regs: HashMap<u64, RegHandler> = HashMap::new();
    let (calls_tx, calls_rx) = crossbeam_channel::bounded::<(RegHandler, Invocation)>(INVOKERS * 16);
    for i in 0..INVOKERS {
        let (rx, commands, waker) = (calls_rx.clone(), commands.clone(), waker.clone());
        let spawned = std::thread::Builder::new().name(format!("fennec-client-invoke-{i}")).spawn(move || {
            for (handler, invocation) in rx {
                let request = invocation.request;
                let outcome = handler(invocation);
                if commands.send(Command::Yield { request, outcome, progress: false }).is_err() {
                    return;
                }
                let _ = waker.wake();
            }
        });
        if spawned.is_err() {
            return;
        }
    }
    for job in jobs {
        match job {
            Job::AddSub { subscription, local, handler } => {
                subs.entry(subscription).or_default().push((local, handler))
            }
            Job::RemoveSub { local } => {
                for list in subs.values_mut() {
                    list.retain(|(l, _)| *l != local);
                }
                subs.retain(|_, l| !l.is_empty());
            }
            Job::Event { subscription, event } => {
                if let Some(list) = subs.get_mut(&subscription) {
                    for (_, h) in list.iter_mut() {
                        h(event.clone());
                    }
                }
            }
            Job::MoveSub { local, to } => {
                let mut moved = None;
                for list in subs.values_mut() {
                    if let Some(i) = list.iter().position(|(l, _)| *l == local) {
                        moved = Some(list.remove(i));
                    }
                }
                subs.retain(|_, l| !l.is_empty());
                if let Some(entry) = moved {
                    subs.entry(to).or_default().push(entry);
                }
            }
            Job::MoveReg { from, to } => {
                if let Some(h) = regs.remove(&from) {
                    regs.insert(to, h);
                }
            }
            Job::AddReg { registration, handler } => {
                regs.insert(registration, handler);
            }
            Job::RemoveReg { registration } => {
                regs.remove(&registration);
            }
            Job::Invocation { registration, invocation } => match regs.get(&registration) {
                Some(h) => {
                    if calls_tx.send((h.clone(), invocation)).is_err() {
                        return;
                    }
                }
                None => {
                    let outcome = Err(Error::NoSuchRegistration(None));
                    let answer = Command::Yield { request: invocation.request, outcome, progress: false };
                    if commands.send(answer).is_err() {
                        return;
                    }
                    let _ = waker.wake();
                }
            },
            // A caller, or a handler, gone is nobody to wait for.
            Job::Reply { to, reply } => drop(to.send(reply)),
            Job::Input { to, args } => drop(to.send(args)),
        }
    }
}
