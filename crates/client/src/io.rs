//! The connection's thread: one mio loop that owns the transport, reads
//! the router's messages, writes the commands the API sends it, keeps the
//! requests in flight, and hands events and invocations to the dispatcher
//! thread (bounded; when it is full the loop stops reading the socket
//! until it drains, so a slow handler slows the router's sending, not the
//! client's memory).

use crate::args::Args;
use crate::error::{Error, Result};
use crate::transport::{Recv, Transport};
use crate::{Event, Invocation};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use fennec_wamp::message::{self as m, decode_lenient, encode, Msg};
use fennec_wamp::value::{Dict, Value};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::{HashMap, VecDeque};
use std::os::fd::AsRawFd;
use std::sync::Arc;
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
    Subscribe {
        topic: String,
        options: Dict,
        handler: SubHandler,
        reply: Sender<Result<(u64, u64)>>,
    },
    Unsubscribe {
        local: u64,
        reply: Sender<Result<()>>,
    },
    Call {
        procedure: String,
        options: Dict,
        args: Args,
        reply: Sender<Result<Args>>,
    },
    Register {
        procedure: String,
        options: Dict,
        handler: RegHandler,
        reply: Sender<Result<u64>>,
    },
    Unregister {
        registration: u64,
        reply: Sender<Result<()>>,
    },
    /// A handler's outcome for an invocation.
    Yield {
        request: u64,
        outcome: Result<Args>,
    },
    Leave {
        reply: Option<Sender<Result<()>>>,
    },
}

/// What the dispatcher thread does, in order.
pub(crate) enum Job {
    AddSub { subscription: u64, local: u64, handler: SubHandler },
    RemoveSub { local: u64 },
    Event { subscription: u64, event: Event },
    AddReg { registration: u64, handler: RegHandler },
    RemoveReg { registration: u64 },
    Invocation { registration: u64, invocation: Invocation },
}

enum Pending {
    Publish(Sender<Result<u64>>),
    Subscribe { handler: SubHandler, reply: Sender<Result<(u64, u64)>> },
    Unsubscribe { reply: Sender<Result<()>> },
    Call(Sender<Result<Args>>),
    Register { handler: RegHandler, reply: Sender<Result<u64>> },
    Unregister { registration: u64, reply: Sender<Result<()>> },
}

impl Pending {
    /// Answers the request with `e`.
    fn fail(self, e: Error) {
        let _ = match self {
            Pending::Publish(r) | Pending::Register { reply: r, .. } => r.try_send(Err(e)).is_ok(),
            Pending::Subscribe { reply, .. } => reply.try_send(Err(e)).is_ok(),
            Pending::Unsubscribe { reply: r, .. } | Pending::Unregister { reply: r, .. } => r.try_send(Err(e)).is_ok(),
            Pending::Call(r) => r.try_send(Err(e)).is_ok(),
        };
    }
}

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
    pub jobs: Sender<Job>,
    overflow: VecDeque<Job>,
    next_request: u64,
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
    /// The GOODBYE we wait for the answer to.
    leaving: Option<Option<Sender<Result<()>>>>,
    open: bool,
}

impl Io {
    pub(crate) fn new(
        t: Transport,
        poll: Poll,
        commands: Receiver<Command>,
        jobs: Sender<Job>,
        timeout: Option<Duration>,
        cancel: bool,
    ) -> Io {
        Io {
            t,
            backlogged: false,
            poll,
            commands,
            jobs,
            overflow: VecDeque::new(),
            next_request: 0,
            next_local: 0,
            pending: HashMap::new(),
            timeout,
            deadlines: VecDeque::new(),
            cancel,
            subs: HashMap::new(),
            locals: HashMap::new(),
            leaving: None,
            open: true,
        }
    }

    /// Runs until the session ends.
    pub(crate) fn run(mut self) {
        let fd = self.t.tcp().as_raw_fd();
        if self.poll.registry().register(&mut SourceFd(&fd), SOCKET, Interest::READABLE | Interest::WRITABLE).is_err() {
            return self.fail_all();
        }
        let mut events = Events::with_capacity(64);
        self.read_all();
        while self.open {
            // With jobs held back, look again soon for room; wake for the
            // next deadline.
            let room = (!self.overflow.is_empty()).then(|| Duration::from_millis(5));
            let deadline = self.deadlines.front().map(|(at, _)| at.saturating_duration_since(Instant::now()));
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
            self.drain_overflow();
            if self.overflow.is_empty() {
                self.read_all();
            }
        }
        let _ = self.t.flush();
        self.fail_all();
    }

    fn request(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
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
            p.fail(Error::Timeout(Some(format!("no answer from the router in {waited:?}"))));
        }
    }

    fn send(&mut self, msg: &Msg) {
        let mut bytes = Vec::new();
        encode(self.t.ser, msg, &mut bytes);
        match self.t.send(bytes) {
            Ok(()) => self.flush(),
            Err(_) => self.open = false,
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
        let request = self.request();
        match c {
            Command::Publish { topic, mut options, args, reply } => {
                if reply.is_some() {
                    options.push(("acknowledge".into(), Value::Bool(true)));
                }
                self.send(&Msg::Publish { request, options, topic, payload: args.payload() });
                if let Some(reply) = reply {
                    self.expect(request, Pending::Publish(reply));
                }
            }
            Command::Subscribe { topic, options, handler, reply } => {
                self.send(&Msg::Subscribe { request, options, topic });
                self.expect(request, Pending::Subscribe { handler, reply });
            }
            Command::Unsubscribe { local, reply } => {
                let Some(subscription) = self.locals.remove(&local) else {
                    let _ = reply.try_send(Err(Error::NoSuchSubscription(None)));
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
            Command::Call { procedure, options, args, reply } => {
                self.send(&Msg::Call { request, options, procedure, payload: args.payload() });
                self.expect(request, Pending::Call(reply));
            }
            Command::Register { procedure, options, handler, reply } => {
                self.send(&Msg::Register { request, options, procedure });
                self.expect(request, Pending::Register { handler, reply });
            }
            Command::Unregister { registration, reply } => {
                self.send(&Msg::Unregister { request, registration });
                self.expect(request, Pending::Unregister { registration, reply });
            }
            Command::Yield { request, outcome } => match outcome {
                Ok(args) => self.send(&Msg::Yield { request, options: Dict::new(), payload: args.payload() }),
                Err(e) => {
                    let (error, args) = match e {
                        Error::Application { uri, args, kwargs } => (uri, Args { args, kwargs }),
                        other => {
                            let uri = other.uri().unwrap_or("wamp.error.runtime_error").to_owned();
                            (uri, Args { args: vec![Value::Str(other.to_string())], kwargs: Dict::new() })
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
            },
            Command::Leave { reply } => {
                self.send(&Msg::Goodbye { details: Dict::new(), reason: "wamp.close.close_realm".into() });
                self.leaving = Some(reply);
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
                let Some(Pending::Subscribe { handler, reply }) = self.pending.remove(&request) else {
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
            Msg::Result { request, details: _, payload } => {
                if let Some(Pending::Call(reply)) = self.pending.remove(&request) {
                    let _ = reply.try_send(Ok(Args::of(payload)));
                }
            }
            Msg::Registered { request, registration } => {
                let Some(Pending::Register { handler, reply }) = self.pending.remove(&request) else {
                    // Too late: the request timed out. Nobody would answer
                    // the registration's calls; end it.
                    let request = self.request();
                    return self.send(&Msg::Unregister { request, registration });
                };
                self.job(Job::AddReg { registration, handler });
                let _ = reply.try_send(Ok(registration));
            }
            Msg::Unregistered { request } => {
                if let Some(Pending::Unregister { registration, reply }) = self.pending.remove(&request) {
                    self.job(Job::RemoveReg { registration });
                    let _ = reply.try_send(Ok(()));
                }
            }
            Msg::Invocation { request, registration, details, payload } => {
                let procedure =
                    details.iter().find(|(k, _)| k == "procedure").and_then(|(_, v)| v.as_str()).map(str::to_owned);
                let caller = details.iter().find(|(k, _)| k == "caller").and_then(|(_, v)| v.as_u64());
                let invocation =
                    Invocation { request, registration, procedure, caller, details, args: Args::of(payload) };
                self.job(Job::Invocation { registration, invocation });
            }
            Msg::Interrupt { .. } => {
                // Cancelation is not offered yet (HELLO announces no
                // call_canceling): the handler runs to its end.
            }
            Msg::Error { request, error, payload, .. } => {
                let Some(p) = self.pending.remove(&request) else { return };
                let v = Args::of(payload);
                p.fail(Error::from_uri(error, v.args, v.kwargs));
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
        Command::Publish { reply: Some(r), .. } | Command::Register { reply: r, .. } => r.try_send(Err(e)).is_ok(),
        Command::Subscribe { reply, .. } => reply.try_send(Err(e)).is_ok(),
        Command::Unsubscribe { reply: r, .. } | Command::Unregister { reply: r, .. } => r.try_send(Err(e)).is_ok(),
        Command::Call { reply, .. } => reply.try_send(Err(e)).is_ok(),
        Command::Leave { reply: Some(r) } => r.try_send(Ok(())).is_ok(),
        _ => false,
    };
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
                if commands.send(Command::Yield { request, outcome }).is_err() {
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
                    if commands.send(Command::Yield { request: invocation.request, outcome }).is_err() {
                        return;
                    }
                    let _ = waker.wake();
                }
            },
        }
    }
}
