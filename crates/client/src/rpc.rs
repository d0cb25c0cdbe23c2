//! The Advanced Profile's RPC, both ends: a [`Call`] in progress (its
//! progressive results, more input for a progressive call, CANCEL in each
//! mode) and an [`Invocation`] of one of this client's procedures (send
//! progressive results, take a progressive call's further input, see an
//! INTERRUPT).

use crate::args::Args;
use crate::error::{Error, Result};
use crate::io::{Command, Shared};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use fennec_wamp::value::Dict;
use mio::Waker;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How a CANCEL ends a call (WAMP's three modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelMode {
    /// The caller gets `wamp.error.canceled` at once; the callee is not
    /// told and runs to its end.
    Skip,
    /// The callee is interrupted; the caller gets the callee's answer to
    /// the INTERRUPT (normally `wamp.error.canceled`).
    Kill,
    /// The callee is interrupted and the caller gets `wamp.error.canceled`
    /// at once.
    KillNoWait,
}

impl CancelMode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CancelMode::Skip => "skip",
            CancelMode::Kill => "kill",
            CancelMode::KillNoWait => "killnowait",
        }
    }
}

/// One answer to a [`Call`].
#[derive(Clone, Debug)]
pub enum Reply {
    /// A progressive result; more follow.
    Progress(Args),
    /// The result; the call is over.
    Final(Args),
}

/// The connection's side of a call: where its answers go, and the
/// commands it may still send.
pub(crate) struct Caller {
    pub commands: Sender<Command>,
    pub waker: Arc<Waker>,
    pub shared: Arc<Shared>,
}

impl Caller {
    pub(crate) fn tell(&self, c: Command) -> Result<()> {
        self.commands.send(c).map_err(|_| Error::Closed)?;
        let _ = self.waker.wake();
        Ok(())
    }
}

/// A call in progress ([`Client::start_call`](crate::Client::start_call)):
/// read its progressive results and its result with [`Call::next`], send
/// a progressive call's further input with [`Call::send`], or cancel it.
pub struct Call {
    pub(crate) request: u64,
    pub(crate) procedure: String,
    pub(crate) replies: Receiver<Result<Reply>>,
    pub(crate) caller: Caller,
    pub(crate) input_open: AtomicBool,
}

impl Call {
    /// The call's request ID.
    pub fn request(&self) -> u64 {
        self.request
    }

    /// The next answer, waiting for it: progressive results in the order
    /// the callee sent them, then the result (or the call's error). After
    /// the result, [`Error::Closed`].
    pub fn next(&self) -> Result<Reply> {
        self.caller.shared.wait(&self.replies)
    }

    /// As [`Call::next`], waiting at most `wait`: `Ok(None)` if nothing came.
    pub fn next_timeout(&self, wait: Duration) -> Result<Option<Reply>> {
        match self.replies.recv_timeout(wait) {
            Ok(r) => r.map(Some),
            Err(RecvTimeoutError::Timeout) if self.caller.shared.closed.load(Ordering::Acquire) => Err(Error::Closed),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(Error::Closed),
        }
    }

    /// The result, skipping progressive results.
    pub fn result(self) -> Result<Args> {
        loop {
            if let Reply::Final(args) = self.next()? {
                return Ok(args);
            }
        }
    }

    /// Sends more input to a progressive call (one started with the
    /// option `progress: true`); `last` ends its input. An error if the
    /// call was not progressive or its input has ended.
    pub fn send(&self, args: Args, last: bool) -> Result<()> {
        if !self.input_open.load(Ordering::Relaxed) {
            return Err(Error::Protocol("this call takes no more input".into()));
        }
        if last {
            self.input_open.store(false, Ordering::Relaxed);
        }
        let mut options = Dict::new();
        if !last {
            options.push(("progress".into(), fennec_wamp::value::Value::Bool(true)));
        }
        self.caller.tell(Command::Call {
            request: self.request,
            procedure: self.procedure.clone(),
            options,
            args,
            reply: None,
        })
    }

    /// Asks the router to cancel the call (CANCEL with `mode`); its answer
    /// comes through [`Call::next`] (`Error::Canceled`, or the result if
    /// the callee was faster).
    pub fn cancel(&self, mode: CancelMode) -> Result<()> {
        self.caller.tell(Command::Cancel { request: self.request, mode })
    }
}

/// A call of one of this client's procedures.
#[derive(Clone, Debug)]
pub struct Invocation {
    /// The router's request ID of this invocation.
    pub request: u64,
    /// The registration it is for.
    pub registration: u64,
    /// The procedure called, for a prefix or wildcard registration.
    pub procedure: Option<String>,
    /// The caller's session ID, if disclosed.
    pub caller: Option<u64>,
    /// The INVOCATION's details, all of them.
    pub details: Dict,
    /// What the caller sent (for a progressive call: its first input).
    pub args: Args,
    pub(crate) callee: Callee,
}

/// What a running invocation shares with the connection's thread.
#[derive(Clone)]
pub(crate) struct Callee {
    pub commands: Sender<Command>,
    pub waker: Arc<Waker>,
    /// Set when the router INTERRUPTs the call.
    pub interrupted: Arc<AtomicBool>,
    /// A progressive call's further input, until its last.
    pub input: Option<Receiver<Args>>,
    pub receive_progress: bool,
}

impl std::fmt::Debug for Callee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callee").field("interrupted", &self.interrupted).finish_non_exhaustive()
    }
}

impl Invocation {
    /// Whether the caller asked for progressive results.
    pub fn receives_progress(&self) -> bool {
        self.callee.receive_progress
    }

    /// Sends a progressive result to the caller (before the handler's
    /// return value, which is the result). An error if the caller did not
    /// ask for progressive results.
    pub fn progress(&self, args: Args) -> Result<()> {
        if !self.callee.receive_progress {
            return Err(Error::Protocol("the caller did not ask for progressive results".into()));
        }
        let c = Command::Yield { request: self.request, outcome: Ok(args), progress: true };
        self.callee.commands.send(c).map_err(|_| Error::Closed)?;
        let _ = self.callee.waker.wake();
        Ok(())
    }

    /// Whether the router interrupted the call (the caller canceled it,
    /// or its timeout passed): the handler may stop; what it returns is
    /// dropped (the client has answered `wamp.error.canceled`).
    pub fn interrupted(&self) -> bool {
        self.callee.interrupted.load(Ordering::Relaxed)
    }

    /// A progressive call's next input, waiting for it: `None` once the
    /// caller has sent its last (or if the call is not progressive).
    pub fn next_input(&self) -> Option<Args> {
        self.callee.input.as_ref()?.recv().ok()
    }
}
