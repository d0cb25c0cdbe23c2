//! The connection's thread: one mio loop that owns the transport, reads
//! the router's messages, writes the commands the API sends it, keeps the
//! requests in flight, and hands events and invocations to the dispatcher
//! thread (bounded; when it is full the loop stops reading the socket
//! until it drains, so a slow handler slows the router's sending, not the
//! client's memory).

use crate::args::Args;
use crate::dispatch::Job;
use crate::error::{Error, Result};
use crate::rpc::{Callee, CancelMode, Invocation, Reply};
use crate::transport::{Recv, Transport};
use crate::Event;
use crate::{join, Options};

mod reconnect;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use fennec_wamp::message::{self as m, decode_lenient, encode, Msg};
use fennec_wamp::value::{dict_get, Dict, Value};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::{HashMap, VecDeque};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) const SOCKET: Token = Token(0);
pub(crate) const WAKER: Token = Token(1);

/// Commands from the API to the loop.
pub(crate) type SubHandler = Box<dyn FnMut(Event) + Send>;
pub(crate) type RegHandler = Arc<dyn Fn(Invocation) -> Result<Args> + Send + Sync>;

pub(crate) enum Command {
    Publish {
        topic: String,
        options: Dict,
        args: Args,
        reply: Option<Sender<Result<u64>>>,
    },
    Subscribe(SubscribeReq),
    Unsubscribe {
        local: u64,
        reply: Sender<Result<()>>,
    },
    /// A CALL; `request` comes from the API (`Client::start_call` names
    /// it). `reply: None` is a progressive call's further input.
    Call {
        request: u64,
        procedure: String,
        options: Dict,
        args: Args,
        reply: Option<CallReply>,
    },
    Cancel {
        request: u64,
        mode: CancelMode,
    },
    Register(RegisterReq),
    Unregister {
        registration: u64,
        reply: Sender<Result<()>>,
    },
    /// A handler's outcome for an invocation, or a progressive result.
    Yield {
        request: u64,
        outcome: Result<Args>,
        progress: bool,
    },
    Leave {
        reply: Option<Sender<Result<()>>>,
    },
}

/// A SUBSCRIBE: the API's command, then the request in flight.
pub(crate) struct SubscribeReq {
    pub topic: String,
    pub options: Dict,
    pub handler: SubHandler,
    pub reply: Sender<Result<(u64, u64)>>,
}

/// A REGISTER: the API's command, then the request in flight.
pub(crate) struct RegisterReq {
    pub procedure: String,
    pub options: Dict,
    pub handler: RegHandler,
    pub reply: Sender<Result<u64>>,
}

/// Where a call's answers go.
pub(crate) enum CallReply {
    /// Its result only (`Client::call`).
    Once(Sender<Result<Args>>),
    /// Progressive results and the result, in order, through the
    /// dispatcher (`Client::start_call`).
    Stream(Sender<Result<Reply>>),
}

/// An invocation whose handler has not answered yet.
struct Running {
    interrupted: Arc<AtomicBool>,
    /// A progressive call's input channel, until its last input.
    input: Option<Sender<Args>>,
}

/// A progressive call's input waiting for its handler, at most.
const INPUT: usize = 64;

enum Pending {
    Publish(Sender<Result<u64>>),
    Subscribe(SubscribeReq),
    Unsubscribe {
        reply: Sender<Result<()>>,
    },
    Call(CallReply),
    Register(RegisterReq),
    Unregister {
        handle: u64,
        registration: u64,
        reply: Sender<Result<()>>,
    },
    /// A subscription made again after a reconnection.
    Resubscribe {
        local: u64,
    },
    /// A registration made again after a reconnection.
    Reregister {
        handle: u64,
    },
}

impl Pending {
    /// Answers the request with `e`.
    fn fail(self, e: Error) {
        let _ = match self {
            Pending::Publish(r) | Pending::Register(RegisterReq { reply: r, .. }) => r.try_send(Err(e)).is_ok(),
            Pending::Subscribe(req) => req.reply.try_send(Err(e)).is_ok(),
            Pending::Unsubscribe { reply: r, .. } | Pending::Unregister { reply: r, .. } => r.try_send(Err(e)).is_ok(),
            Pending::Call(CallReply::Once(r)) => r.try_send(Err(e)).is_ok(),
            // Its error goes behind the progressive results already queued
            // (`Io::fail`); here, at the end, the sender is dropped and the
            // caller sees `Error::Closed`.
            Pending::Call(CallReply::Stream(_)) => false,
            Pending::Resubscribe { .. } | Pending::Reregister { .. } => false,
        };
    }
}

/// How long a GOODBYE waits for the router's answer before the client
/// closes the connection anyway.
const LEAVE_WAIT: Duration = Duration::from_secs(5);

/// Jobs waiting for room in the dispatcher's channel, at most; past it
/// the loop stops reading the socket.
const OVERFLOW: usize = 1024;

pub(crate) struct Io {
    pub t: Transport,
    /// The socket would not take all that was written: take no more
    /// commands until it has (the commands' channel is what waits).
    backlogged: bool,
    pub poll: Poll,
    pub commands: Receiver<Command>,
    /// For invocations to send their answers with.
    commands_tx: Sender<Command>,
    waker: Arc<Waker>,
    pub jobs: Sender<Job>,
    /// Request IDs, shared with the API (which names its calls').
    requests: Arc<AtomicU64>,
    /// Invocations running, by request.
    running: HashMap<u64, Running>,
    overflow: VecDeque<Job>,
    next_local: u64,
    pending: HashMap<u64, Pending>,
    /// How long a request waits for the router's answer, if bounded.
    timeout: Option<Duration>,
    /// Each request's deadline, in the order they were sent (one timeout
    /// for all, so the earliest is always in front); answered ones are
    /// skipped when they come up. At most one entry per pending request.
    deadlines: VecDeque<(Instant, u64)>,
    /// The router offers call canceling: a call that times out is
    /// cancelled (`killnowait`), not only forgotten.
    cancel: bool,
    /// Router subscription ID -> the local subscriptions on it.
    subs: HashMap<u64, Vec<u64>>,
    /// Local subscription -> router subscription ID.
    locals: HashMap<u64, u64>,
    /// Each local subscription's topic and options (to make it again
    /// after a reconnection).
    sub_specs: HashMap<u64, (String, Dict)>,
    /// Registrations by the ID the API was given (the router's first).
    regs: HashMap<u64, Reg>,
    /// The GOODBYE we wait for the answer to.
    leaving: Option<Option<Sender<Result<()>>>>,
    /// When the user left (GOODBYE sent): the session ends for good, and
    /// the router's answer is waited for until `LEAVE_WAIT` after it.
    left: Option<Instant>,
    open: bool,
    /// Where and how to connect again.
    settings: Settings,
    /// The session the API sees (its ID and WELCOME details change when
    /// a reconnection joins anew).
    shared: Arc<Shared>,
}

/// A registration, to make again after a reconnection.
struct Reg {
    procedure: String,
    options: Dict,
    /// The router's ID of it now.
    current: u64,
}

/// What `Client::connect_with` was given.
pub(crate) struct Settings {
    pub url: String,
    pub realm: String,
    pub options: Options,
}

/// The session as the API reads it.
pub(crate) struct Shared {
    pub session: Mutex<(u64, Dict)>,
    /// True while reconnecting: the API fails requests at once.
    pub reconnecting: AtomicBool,
    /// The loop has ended. A command sent just as it ended may sit in the
    /// channel unanswered; a waiting caller that sees this gives up with
    /// `Error::Closed` (`Shared::wait`).
    pub closed: AtomicBool,
}

impl Shared {
    /// Waits for the answer to a command on `rx`.
    pub(crate) fn wait<T>(&self, rx: &Receiver<Result<T>>) -> Result<T> {
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(r) => return r,
                Err(RecvTimeoutError::Disconnected) => return Err(Error::Closed),
                Err(RecvTimeoutError::Timeout) if self.closed.load(Ordering::Acquire) => {
                    return rx.try_recv().unwrap_or(Err(Error::Closed))
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }
}

/// The channels between the API, the loop and the dispatcher.
pub(crate) struct Wiring {
    pub commands: (Sender<Command>, Receiver<Command>),
    pub waker: Arc<Waker>,
    pub jobs: Sender<Job>,
    pub requests: Arc<AtomicU64>,
}

impl Io {
    pub(crate) fn new(t: Transport, poll: Poll, wiring: Wiring, settings: Settings, shared: Arc<Shared>) -> Io {
        let Wiring { commands, waker, jobs, requests } = wiring;
        let cancel = join::feature(&shared.session.lock().expect("session").1, "dealer", "call_canceling");
        Io {
            t,
            backlogged: false,
            poll,
            commands: commands.1,
            commands_tx: commands.0,
            waker,
            jobs,
            requests,
            running: HashMap::new(),
            overflow: VecDeque::new(),
            next_local: 0,
            pending: HashMap::new(),
            timeout: settings.options.timeout,
            deadlines: VecDeque::new(),
            cancel,
            subs: HashMap::new(),
            locals: HashMap::new(),
            sub_specs: HashMap::new(),
            regs: HashMap::new(),
            leaving: None,
            left: None,
            open: true,
            settings,
            shared,
        }
    }

    /// Runs until the session ends (and, with `Options::reconnect`, until
    /// no reconnection is possible).
    pub(crate) fn run(mut self) {
        loop {
            self.serve();
            if self.left.is_some() || !self.reconnect() {
                break;
            }
        }
        // Over: from now on the API finds the commands' channel closed.
        self.shared.reconnecting.store(false, Ordering::Release);
        self.shared.closed.store(true, Ordering::Release);
        self.fail_all();
    }

    /// Runs one connection until it ends.
    fn serve(&mut self) {
        let fd = self.t.tcp().as_raw_fd();
        if self.poll.registry().register(&mut SourceFd(&fd), SOCKET, Interest::READABLE | Interest::WRITABLE).is_err() {
            return;
        }
        let mut events = Events::with_capacity(64);
        self.read_all();
        while self.open {
            // With jobs held back, look again soon for room; wake for the
            // next deadline.
            let room = (!self.overflow.is_empty()).then(|| Duration::from_millis(5));
            let first = self.deadlines.front().map(|(at, _)| *at);
            let deadline = match (first, self.left.map(|t| t + LEAVE_WAIT)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let deadline = deadline.map(|at| at.saturating_duration_since(Instant::now()));
            let wait = match (room, deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Err(e) = self.poll.poll(&mut events, wait) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    break;
                }
            }
            for ev in events.iter() {
                if ev.token() == SOCKET && ev.is_writable() {
                    self.flush();
                }
            }
            self.commands();
            self.expire();
            if self.left.is_some_and(|t| t.elapsed() >= LEAVE_WAIT) {
                // The router did not answer our GOODBYE: close anyway.
                self.t.close();
                self.open = false;
            }
            self.drain_overflow();
            if self.overflow.is_empty() {
                self.read_all();
            }
        }
        let _ = self.t.flush();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
    }

    fn request(&mut self) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Answers a request with `e`: directly, or for a call whose answers
    /// stream, behind its progressive results.
    fn fail(&mut self, p: Pending, e: Error) {
        match p {
            Pending::Call(CallReply::Stream(to)) => self.job(Job::Reply { to, reply: Err(e) }),
            p => p.fail(e),
        }
    }

    /// Keeps a request until its answer (or its deadline).
    fn expect(&mut self, request: u64, p: Pending) {
        if let Some(t) = self.timeout {
            self.deadlines.push_back((Instant::now() + t, request));
        }
        self.pending.insert(request, p);
    }

    /// Fails the requests whose deadline has passed with
    /// [`Error::Timeout`]; a call is cancelled at the router if it can be.
    /// An answer that comes later finds no request and is dropped (a late
    /// SUBSCRIBED or REGISTERED is undone: see `on_message`).
    fn expire(&mut self) {
        let now = Instant::now();
        while let Some(&(at, request)) = self.deadlines.front() {
            if at > now {
                break;
            }
            self.deadlines.pop_front();
            let Some(p) = self.pending.remove(&request) else { continue };
            if self.cancel && matches!(p, Pending::Call(_)) {
                let options = vec![("mode".to_owned(), Value::Str("killnowait".into()))];
                self.send(&Msg::Cancel { request, options });
            }
            let waited = self.timeout.unwrap_or_default();
            self.fail(p, Error::Timeout(Some(format!("no answer from the router in {waited:?}"))));
        }
    }

    fn send(&mut self, msg: &Msg) {
        let _ = self.try_send(msg);
    }

    /// Sends `msg`. A message the router would not take (longer than its
    /// RawSocket maximum) is not sent: `Err` says so and the session goes
    /// on. Any other failure ends the connection.
    fn try_send(&mut self, msg: &Msg) -> Result<()> {
        let mut bytes = Vec::new();
        encode(self.t.ser, msg, &mut bytes);
        match self.t.send(bytes) {
            Ok(()) => {
                self.flush();
                Ok(())
            }
            Err(e @ Error::Application { .. }) => Err(e),
            Err(_) => {
                self.open = false;
                Err(Error::Closed)
            }
        }
    }

    /// Sends a request and keeps it until its answer; one not sent fails
    /// at once.
    fn ask(&mut self, request: u64, msg: &Msg, p: Pending) {
        self.expect(request, p);
        if let Err(e) = self.try_send(msg) {
            if let Some(p) = self.pending.remove(&request) {
                self.fail(p, e);
            }
        }
    }

    fn flush(&mut self) {
        match self.t.flush() {
            Ok(all) => self.backlogged = !all,
            Err(_) => self.open = false,
        }
    }

    fn commands(&mut self) {
        while !self.backlogged && self.open {
            let Ok(c) = self.commands.try_recv() else { break };
            if self.leaving.is_some() {
                fail(c, Error::Closed);
                continue;
            }
            self.command(c);
        }
    }

    fn command(&mut self, c: Command) {
        let request = match &c {
            Command::Call { request, .. } | Command::Cancel { request, .. } | Command::Yield { request, .. } => {
                *request
            }
            _ => self.request(),
        };
        match c {
            Command::Publish { topic, mut options, args, reply } => {
                if reply.is_some() {
                    options.push(("acknowledge".into(), Value::Bool(true)));
                }
                let msg = Msg::Publish { request, options, topic, payload: args.payload() };
                match reply {
                    Some(reply) => self.ask(request, &msg, Pending::Publish(reply)),
                    None => self.send(&msg),
                }
            }
            Command::Subscribe(req) => {
                let msg = Msg::Subscribe { request, options: req.options.clone(), topic: req.topic.clone() };
                self.ask(request, &msg, Pending::Subscribe(req));
            }
            Command::Unsubscribe { local, reply } => {
                let known = self.sub_specs.remove(&local).is_some();
                let Some(subscription) = self.locals.remove(&local) else {
                    // Being made again after a reconnection: it will be
                    // undone when the router answers.
                    let outcome = if known { Ok(()) } else { Err(Error::NoSuchSubscription(None)) };
                    if known {
                        self.job(Job::RemoveSub { local });
                    }
                    let _ = reply.try_send(outcome);
                    return;
                };
                self.job(Job::RemoveSub { local });
                let others = self.subs.get_mut(&subscription).map(|l| {
                    l.retain(|x| *x != local);
                    l.len()
                });
                if others.unwrap_or(0) > 0 {
                    // Another local subscription still uses it.
                    let _ = reply.try_send(Ok(()));
                    return;
                }
                self.subs.remove(&subscription);
                self.send(&Msg::Unsubscribe { request, subscription });
                self.expect(request, Pending::Unsubscribe { reply });
            }
            Command::Call { request, procedure, options, args, reply } => {
                let more = reply.is_none();
                if more && !self.pending.contains_key(&request) {
                    // The call is over (its result came, or it failed):
                    // its further input has nowhere to go.
                    return;
                }
                let msg = Msg::Call { request, options, procedure, payload: args.payload() };
                match reply {
                    Some(reply) => self.ask(request, &msg, Pending::Call(reply)),
                    // More input that cannot go: the call fails (and is
                    // cancelled at the router, which waits for the rest).
                    None => {
                        if let Err(e) = self.try_send(&msg) {
                            if self.cancel {
                                let options = vec![("mode".to_owned(), Value::Str("killnowait".into()))];
                                self.send(&Msg::Cancel { request, options });
                            }
                            if let Some(p) = self.pending.remove(&request) {
                                self.fail(p, e);
                            }
                        }
                    }
                }
            }
            Command::Cancel { request, mode } => {
                if self.pending.contains_key(&request) {
                    let options = vec![("mode".to_owned(), Value::Str(mode.as_str().into()))];
                    self.send(&Msg::Cancel { request, options });
                }
            }
            Command::Register(req) => {
                let msg = Msg::Register { request, options: req.options.clone(), procedure: req.procedure.clone() };
                self.ask(request, &msg, Pending::Register(req));
            }
            Command::Unregister { registration: handle, reply } => {
                let registration = self.regs.get(&handle).map_or(handle, |r| r.current);
                self.send(&Msg::Unregister { request, registration });
                self.expect(request, Pending::Unregister { handle, registration, reply });
            }
            Command::Yield { request, outcome, progress } => {
                // An invocation answered, or interrupted, already: drop it.
                if !self.running.contains_key(&request) {
                    return;
                }
                if !progress {
                    self.running.remove(&request);
                }
                self.answer(request, outcome, progress);
            }
            Command::Leave { reply } => {
                self.send(&Msg::Goodbye { details: Dict::new(), reason: "wamp.close.close_realm".into() });
                self.leaving = Some(reply);
                self.left = Some(Instant::now());
            }
        }
    }

    /// A handler's YIELD (progressive or final) or ERROR.
    fn answer(&mut self, request: u64, outcome: Result<Args>, progress: bool) {
        match outcome {
            Ok(args) => {
                let mut options = Dict::new();
                if progress {
                    options.push(("progress".to_owned(), Value::Bool(true)));
                }
                if let Err(e) = self.try_send(&Msg::Yield { request, options, payload: args.payload() }) {
                    // Too long for the router: the call ends, and the
                    // caller gets why (the handler's later answers are
                    // dropped).
                    self.running.remove(&request);
                    self.answer(request, Err(e), false);
                }
            }
            Err(e) => {
                let (error, args) = match e {
                    Error::Application { uri, args, kwargs } => (uri, Args { args, kwargs }),
                    other => {
                        // The URI, and the message without it.
                        let (uri, text) = match other.uri() {
                            Some(uri) => (uri.to_owned(), other.message().map(str::to_owned)),
                            None => ("wamp.error.runtime_error".to_owned(), Some(other.to_string())),
                        };
                        (uri, Args { args: text.map(Value::Str).into_iter().collect(), kwargs: Dict::new() })
                    }
                };
                let msg = Msg::Error {
                    request_type: m::INVOCATION,
                    request,
                    details: Dict::new(),
                    error,
                    payload: args.payload(),
                };
                self.send(&msg);
            }
        }
    }

    fn read_all(&mut self) {
        while self.open && self.overflow.len() < OVERFLOW {
            match self.t.recv() {
                Recv::Message(bytes) => self.on_bytes(&bytes),
                Recv::Empty => break,
                Recv::Closed => self.open = false,
            }
        }
        // A pong or a close reply may be queued.
        self.flush();
    }

    fn on_bytes(&mut self, bytes: &[u8]) {
        match decode_lenient(self.t.ser, bytes) {
            Ok(msg) => self.on_message(msg),
            Err(e) => {
                // The router sent what is not WAMP: end the session.
                let details = vec![("message".to_owned(), Value::Str(e.0))];
                self.send(&Msg::Abort { details, reason: "wamp.error.protocol_violation".into() });
                self.open = false;
            }
        }
    }

    fn on_message(&mut self, msg: Msg) {
        match msg {
            Msg::Published { request, publication } => {
                if let Some(Pending::Publish(reply)) = self.pending.remove(&request) {
                    let _ = reply.try_send(Ok(publication));
                }
            }
            Msg::Subscribed { request, subscription } => {
                if let Some(Pending::Resubscribe { local }) = self.pending.get(&request) {
                    let local = *local;
                    self.pending.remove(&request);
                    if self.sub_specs.contains_key(&local) {
                        self.subs.entry(subscription).or_default().push(local);
                        self.locals.insert(local, subscription);
                        self.job(Job::MoveSub { local, to: subscription });
                    } else if !self.subs.contains_key(&subscription) {
                        // Unsubscribed while it was being made again.
                        let request = self.request();
                        self.send(&Msg::Unsubscribe { request, subscription });
                    }
                    return;
                }
                let Some(Pending::Subscribe(SubscribeReq { topic, options, handler, reply })) =
                    self.pending.remove(&request)
                else {
                    // Too late: the request timed out. Nobody has the
                    // subscription; end it, unless another uses it.
                    if !self.subs.contains_key(&subscription) {
                        let request = self.request();
                        self.send(&Msg::Unsubscribe { request, subscription });
                    }
                    return;
                };
                self.next_local += 1;
                let local = self.next_local;
                self.subs.entry(subscription).or_default().push(local);
                self.locals.insert(local, subscription);
                self.sub_specs.insert(local, (topic, options));
                self.job(Job::AddSub { subscription, local, handler });
                let _ = reply.try_send(Ok((subscription, local)));
            }
            Msg::Unsubscribed { request } => {
                if let Some(Pending::Unsubscribe { reply, .. }) = self.pending.remove(&request) {
                    let _ = reply.try_send(Ok(()));
                }
            }
            Msg::Event { subscription, publication, details, payload } => {
                let topic = details.iter().find(|(k, _)| k == "topic").and_then(|(_, v)| v.as_str()).map(str::to_owned);
                let event = Event { subscription, publication, topic, details, args: Args::of(payload) };
                self.job(Job::Event { subscription, event });
            }
            Msg::Result { request, details, payload } => {
                let progress = dict_get(&details, "progress").and_then(Value::as_bool) == Some(true);
                match self.pending.remove(&request) {
                    Some(Pending::Call(CallReply::Once(reply))) => {
                        // Progress nobody asked for: wait for the result.
                        if progress {
                            self.pending.insert(request, Pending::Call(CallReply::Once(reply)));
                        } else {
                            let _ = reply.try_send(Ok(Args::of(payload)));
                        }
                    }
                    Some(Pending::Call(CallReply::Stream(to))) => {
                        let args = Args::of(payload);
                        let reply = if progress {
                            self.pending.insert(request, Pending::Call(CallReply::Stream(to.clone())));
                            Reply::Progress(args)
                        } else {
                            Reply::Final(args)
                        };
                        self.job(Job::Reply { to, reply: Ok(reply) });
                    }
                    Some(other) => drop(self.pending.insert(request, other)),
                    None => {}
                }
            }
            Msg::Registered { request, registration } => {
                if let Some(Pending::Reregister { handle }) = self.pending.get(&request) {
                    let handle = *handle;
                    self.pending.remove(&request);
                    if let Some(reg) = self.regs.get_mut(&handle) {
                        let from = std::mem::replace(&mut reg.current, registration);
                        self.job(Job::MoveReg { from, to: registration });
                    }
                    return;
                }
                let Some(Pending::Register(RegisterReq { procedure, options, handler, reply })) =
                    self.pending.remove(&request)
                else {
                    // Too late: the request timed out. Nobody would answer
                    // the registration's calls; end it.
                    let request = self.request();
                    return self.send(&Msg::Unregister { request, registration });
                };
                self.regs.insert(registration, Reg { procedure, options, current: registration });
                self.job(Job::AddReg { registration, handler });
                let _ = reply.try_send(Ok(registration));
            }
            Msg::Unregistered { request } => {
                if let Some(Pending::Unregister { handle, registration, reply }) = self.pending.remove(&request) {
                    self.regs.remove(&handle);
                    self.job(Job::RemoveReg { registration });
                    let _ = reply.try_send(Ok(()));
                }
            }
            Msg::Invocation { request, registration, details, payload } => {
                let flag = |k: &str| dict_get(&details, k).and_then(Value::as_bool) == Some(true);
                let more = flag("progress");
                let args = Args::of(payload);
                if let Some(run) = self.running.get_mut(&request) {
                    // A progressive call's further input.
                    if let Some(to) = run.input.clone() {
                        if !more {
                            run.input = None;
                        }
                        self.job(Job::Input { to, args });
                    }
                    return;
                }
                let (input_tx, input) = match more {
                    true => {
                        let (tx, rx) = crossbeam_channel::bounded(INPUT);
                        (Some(tx), Some(rx))
                    }
                    false => (None, None),
                };
                let interrupted = Arc::new(AtomicBool::new(false));
                self.running.insert(request, Running { interrupted: interrupted.clone(), input: input_tx });
                let callee = Callee {
                    commands: self.commands_tx.clone(),
                    waker: self.waker.clone(),
                    interrupted,
                    input,
                    receive_progress: flag("receive_progress"),
                };
                let procedure = dict_get(&details, "procedure").and_then(Value::as_str).map(str::to_owned);
                let caller = dict_get(&details, "caller").and_then(Value::as_u64);
                let invocation = Invocation { request, registration, procedure, caller, details, args, callee };
                self.job(Job::Invocation { registration, invocation });
            }
            Msg::Interrupt { request, options } => {
                // The handler sees it (`Invocation::interrupted`); its
                // answer will be dropped. The router waits for ours unless
                // it said it would not.
                let Some(run) = self.running.remove(&request) else { return };
                run.interrupted.store(true, Ordering::Relaxed);
                if dict_get(&options, "mode").and_then(Value::as_str) != Some("killnowait") {
                    let e = Error::Canceled(Some("interrupted".into()));
                    self.answer(request, Err(e), false);
                }
            }
            Msg::Error { request, error, payload, .. } => {
                let Some(p) = self.pending.remove(&request) else { return };
                // Made again after a reconnection, refused this time (the
                // procedure is someone else's now, ...): it is gone.
                match p {
                    Pending::Resubscribe { local } => {
                        self.sub_specs.remove(&local);
                        return self.job(Job::RemoveSub { local });
                    }
                    Pending::Reregister { handle } => {
                        if let Some(reg) = self.regs.remove(&handle) {
                            self.job(Job::RemoveReg { registration: reg.current });
                        }
                        return;
                    }
                    _ => {}
                }
                let v = Args::of(payload);
                self.fail(p, Error::from_uri(error, v.args, v.kwargs));
            }
            Msg::Goodbye { .. } => {
                match self.leaving.take() {
                    // The router's answer to ours.
                    Some(reply) => {
                        if let Some(r) = reply {
                            let _ = r.try_send(Ok(()));
                        }
                    }
                    // The router ends the session: answer, and stop.
                    None => {
                        self.send(&Msg::Goodbye { details: Dict::new(), reason: "wamp.close.goodbye_and_out".into() })
                    }
                }
                self.t.close();
                self.open = false;
            }
            Msg::Abort { .. } => self.open = false,
            _ => {
                let details = vec![("message".to_owned(), Value::Str("a message a router does not send".into()))];
                self.send(&Msg::Abort { details, reason: "wamp.error.protocol_violation".into() });
                self.open = false;
            }
        }
    }

    fn job(&mut self, job: Job) {
        if !self.overflow.is_empty() {
            return self.overflow.push_back(job);
        }
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) => self.overflow.push_back(job),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    fn drain_overflow(&mut self) {
        while let Some(job) = self.overflow.pop_front() {
            match self.jobs.try_send(job) {
                Ok(()) => {}
                Err(TrySendError::Full(job)) => return self.overflow.push_front(job),
                Err(TrySendError::Disconnected(_)) => self.overflow.clear(),
            }
        }
    }

    /// The session is over: every request in flight, and every command
    /// still queued, fails with [`Error::Closed`].
    fn fail_all(&mut self) {
        for (_, p) in self.pending.drain() {
            p.fail(Error::Closed);
        }
        if let Some(Some(r)) = self.leaving.take() {
            let _ = r.try_send(Ok(()));
        }
        while let Ok(c) = self.commands.try_recv() {
            fail(c, Error::Closed);
        }
    }
}

/// Answers a command that will not be done.
fn fail(c: Command, e: Error) {
    let _ = match c {
        Command::Publish { reply: Some(r), .. } | Command::Register(RegisterReq { reply: r, .. }) => {
            r.try_send(Err(e)).is_ok()
        }
        Command::Subscribe(req) => req.reply.try_send(Err(e)).is_ok(),
        Command::Unsubscribe { reply: r, .. } | Command::Unregister { reply: r, .. } => r.try_send(Err(e)).is_ok(),
        Command::Call { reply: Some(CallReply::Once(r)), .. } => r.try_send(Err(e)).is_ok(),
        Command::Call { reply: Some(CallReply::Stream(r)), .. } => r.try_send(Err(e)).is_ok(),
        Command::Leave { reply: Some(r) } => r.try_send(Ok(())).is_ok(),
        _ => false,
    };
}
