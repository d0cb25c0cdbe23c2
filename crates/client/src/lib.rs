//! A WAMP v2 client for Rust services: a blocking API on a `mio` event
//! loop of its own (no async runtime), the wire format shared with the
//! Fennec router (`fennec-wamp`).
//!
//! A [`Client`] is one session. Its connection runs on a thread of its own
//! (reading, writing, the requests in flight); event handlers run on a
//! second thread, in the order the router sent the events, and procedure
//! handlers on a pool of four, so a handler may call the client itself
//! (one procedure of this client may call another). Every operation blocks its
//! caller until the router answers, and fails with a typed [`Error`].
//!
//! ```
//! use fennec_client::{Args, Client, Value};
//!
//! fn main() -> fennec_client::Result<()> {
//! #   // A Fennec router for the example, in-process, on a free port.
//! #   let cli = ["fennec", "--listen", "127.0.0.1:0", "--no-mqtt", "--no-pin", "--durability", "none", "--cores", "1"];
//! #   let cli = <fennec::config::Cli as clap::Parser>::try_parse_from(cli).unwrap();
//! #   let config = fennec::config::Config::resolve(cli, Default::default()).unwrap();
//! #   let router = fennec::server::start(config).unwrap();
//! #   let url = format!("ws://{}/ws", router.local_addr);
//!     let client = Client::connect(&url, "realm1")?; // "ws://127.0.0.1:8080/ws"
//!     // A procedure, called with typed arguments.
//!     client.register("com.example.add", |inv| {
//!         let (a, b): (i64, i64) = inv.args.to()?;
//!         Args::from(a + b)
//!     })?;
//!     let sum: i64 = client.call("com.example.add", (2, 3))?;
//!     assert_eq!(sum, 5);
//!     // Pub/sub.
//!     let (tx, rx) = std::sync::mpsc::channel();
//!     let sub = client.subscribe("com.example.ticks", move |e| tx.send(e.args.get::<u64>(0)).unwrap())?;
//!     // (A session does not get its own events unless it asks.)
//!     let to_me = vec![("exclude_me".into(), Value::Bool(false))];
//!     client.publish_acked("com.example.ticks", Args::from((1,))?, to_me)?;
//!     assert_eq!(rx.recv().unwrap()?, 1);
//!     client.unsubscribe(sub)?;
//!     client.leave()
//! #   ; router.shutdown(); Ok(())
//! }
//! ```
//!
//! Beyond that: [`Client::start_call`] for progressive results, progressive
//! calls and CANCEL ([`Call`]); [`Invocation::progress`],
//! [`Invocation::next_input`] and [`Invocation::interrupted`] for the
//! callee's side; [`Options`] for the serializer, authentication
//! ([`Auth`]), TLS ([`Tls`]), request timeouts and reconnecting
//! ([`Reconnect`]). URLs: `ws://`, `wss://` (WebSocket), `tcp://`,
//! `tcps://` (RawSocket).

#![deny(missing_docs)]

mod args;
mod dispatch;
mod error;
mod io;
mod join;
mod options;
mod rpc;
mod transport;

pub use args::{from_value, to_value, Args};
pub use error::{Error, Result};
pub use fennec_wamp::message::Serializer;
pub use fennec_wamp::value::{Dict, Value};
pub use join::Auth;
pub use options::{CallOptions, Invoke, Match, PublishOptions, RegisterOptions, SubscribeOptions};
pub use rpc::{Call, CancelMode, Invocation, Reply};
pub use transport::Tls;

use crossbeam_channel::{bounded, Sender};
use fennec_wamp::value::dict_get;
use io::{CallReply, Command, Io, RegisterReq, Settings, Shared, SubscribeReq, Wiring};
use mio::{Poll, Waker};
use rpc::Caller;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use transport::Transport;

/// An event received on a subscription.
#[derive(Clone, Debug)]
pub struct Event {
    /// The router's subscription ID.
    pub subscription: u64,
    /// The publication's ID (the same for every subscriber).
    pub publication: u64,
    /// The topic, for a prefix or wildcard subscription (the router names it).
    pub topic: Option<String>,
    /// The EVENT's details, all of them (`publisher`, `retained`, ...).
    pub details: Dict,
    /// What the publisher sent.
    pub args: Args,
}

/// A subscription of this client (give it back to [`Client::unsubscribe`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// The router's subscription ID (several local subscriptions to one
    /// topic share it).
    pub id: u64,
    local: u64,
}

/// How to connect.
#[derive(Clone, Debug)]
pub struct Options {
    /// JSON, MessagePack (the default) or CBOR.
    pub serializer: Serializer,
    /// Anonymous unless said.
    pub auth: Auth,
    /// Bound on connecting and joining.
    pub connect_timeout: Duration,
    /// The certificates of `wss://` and `tcps://` (by default the router's
    /// is checked against the Mozilla roots).
    pub tls: Tls,
    /// How long a request (a call, an acknowledged publish, a subscribe,
    /// ...) waits for the router's answer before it fails with
    /// [`Error::Timeout`]; `None` (the default) waits as long as the
    /// session lasts. A call that times out is cancelled at the router
    /// (CANCEL, mode `killnowait`) when the router offers call canceling.
    pub timeout: Option<Duration>,
    /// Reconnect when the connection is lost (`None`, the default: the
    /// session ends). See [`Reconnect`].
    pub reconnect: Option<Reconnect>,
}

/// Reconnecting with backoff. When the connection is lost, requests in
/// flight fail with [`Error::Closed`] (their outcome is unknown), running
/// handlers see [`Invocation::interrupted`], and the client connects and
/// joins again, waiting `initial`, then twice as long each try up to
/// `max` (25 % jitter); meanwhile every request fails at once with
/// [`Error::Disconnected`]. Once joined, it subscribes and registers again
/// what it had (a registration the router now refuses is dropped), and
/// [`Client::session_id`] is the new session's. It stops when `attempts`
/// are used up, when the router refuses the credentials or the realm, or
/// when the client leaves; then the session is over ([`Error::Closed`]).
#[derive(Clone, Debug)]
pub struct Reconnect {
    /// The wait before the first try.
    pub initial: Duration,
    /// The longest wait between tries.
    pub max: Duration,
    /// Tries at most per lost connection (`None`: no limit).
    pub attempts: Option<u32>,
}

impl Default for Reconnect {
    fn default() -> Reconnect {
        Reconnect { initial: Duration::from_millis(100), max: Duration::from_secs(10), attempts: None }
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            serializer: Serializer::MsgPack,
            auth: Auth::Anonymous,
            connect_timeout: Duration::from_secs(10),
            tls: Tls::default(),
            timeout: None,
            reconnect: None,
        }
    }
}

/// Options of a PUBLISH, CALL, SUBSCRIBE or REGISTER as the message
/// carries them: built with [`PublishOptions`], [`SubscribeOptions`],
/// [`CallOptions`], [`RegisterOptions`], or written as WAMP names them
/// (`("exclude_me", Value::Bool(false))`, `("match", Value::Str("prefix".into()))`, ...).
pub type Opts = Dict;

/// Commands the API may queue before the connection's thread takes them.
const COMMANDS: usize = 1024;
/// A started call's answers waiting for its caller, at most.
const CALL_REPLIES: usize = 64;
/// Events and invocations queued for the handlers at most (then the
/// connection stops reading until they drain).
const JOBS: usize = 4096;

struct Inner {
    commands: Sender<Command>,
    /// Request IDs, shared with the connection's thread.
    requests: Arc<AtomicU64>,
    waker: Arc<Waker>,
    shared: Arc<Shared>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: end the session (without waiting).
        if self.commands.try_send(Command::Leave { reply: None }).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

/// One WAMP session; cloning it gives another handle on the same session.
/// The session ends with [`Client::leave`], or when the last handle is
/// dropped (a handler that keeps a handle keeps the session: leave it).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Connects to `url` (`ws://HOST:PORT/PATH`) and joins `realm`
    /// anonymously, with MessagePack.
    pub fn connect(url: &str, realm: &str) -> Result<Client> {
        Client::connect_with(url, realm, Options::default())
    }

    /// Connects and joins with `options`. `url` is `ws://HOST[:PORT]/PATH`
    /// or `wss://...` (WebSocket), `tcp://HOST:PORT` or `tcps://HOST:PORT`
    /// (RawSocket, plain or over TLS).
    pub fn connect_with(url: &str, realm: &str, options: Options) -> Result<Client> {
        let mut t = Transport::connect(url, options.serializer, &options.tls, options.connect_timeout)?;
        let (session, welcome) = join::join(&mut t, realm, &options.auth)?;
        // From here on the connection's thread owns the socket, non-blocking.
        t.tcp().set_read_timeout(None)?;
        t.tcp().set_write_timeout(None)?;
        t.tcp().set_nonblocking(true)?;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), io::WAKER)?);
        let (commands_tx, commands_rx) = bounded(COMMANDS);
        let (jobs_tx, jobs_rx) = bounded(JOBS);
        let requests = Arc::new(AtomicU64::new(0));
        let wiring = Wiring {
            commands: (commands_tx.clone(), commands_rx),
            waker: waker.clone(),
            jobs: jobs_tx,
            requests: requests.clone(),
        };
        let shared = Arc::new(Shared {
            session: Mutex::new((session, welcome)),
            reconnecting: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        let settings = Settings { url: url.into(), realm: realm.into(), options };
        let io = Io::new(t, poll, wiring, settings, shared.clone());
        std::thread::Builder::new().name("fennec-client-io".into()).spawn(move || io.run())?;
        let (tx, w) = (commands_tx.clone(), waker.clone());
        std::thread::Builder::new()
            .name("fennec-client-handlers".into())
            .spawn(move || dispatch::dispatch(jobs_rx, tx, w))?;
        Ok(Client { inner: Arc::new(Inner { commands: commands_tx, requests, waker, shared }) })
    }

    /// The session ID the router gave.
    /// The session ID the router gave (a new one after a reconnection).
    pub fn session_id(&self) -> u64 {
        self.inner.shared.session.lock().expect("session").0
    }

    /// The WELCOME's details (`authid`, `authrole`, `roles`, ...).
    pub fn welcome_details(&self) -> Dict {
        self.inner.shared.session.lock().expect("session").1.clone()
    }

    fn ask<T>(&self, make: impl FnOnce(Sender<Result<T>>) -> Command) -> Result<T> {
        self.connected()?;
        let (tx, rx) = bounded(1);
        self.inner.commands.send(make(tx)).map_err(|_| Error::Closed)?;
        let _ = self.inner.waker.wake();
        self.inner.shared.wait(&rx)
    }

    /// `Error::Disconnected` while reconnecting.
    fn connected(&self) -> Result<()> {
        match self.inner.shared.reconnecting.load(Ordering::Acquire) {
            false => Ok(()),
            true => Err(Error::Disconnected),
        }
    }

    fn tell(&self, c: Command) -> Result<()> {
        self.connected()?;
        self.inner.commands.send(c).map_err(|_| Error::Closed)?;
        let _ = self.inner.waker.wake();
        Ok(())
    }

    /// Publishes `args` (a tuple: one argument per element) to `topic`,
    /// without waiting for the router.
    pub fn publish<A: Serialize>(&self, topic: &str, args: A) -> Result<()> {
        let args = Args::from(args)?;
        self.tell(Command::Publish { topic: topic.into(), options: Opts::new(), args, reply: None })
    }

    /// Publishes with options ([`PublishOptions`] or a [`Dict`]), without
    /// waiting for the router.
    pub fn publish_with(&self, topic: &str, args: Args, options: impl Into<Opts>) -> Result<()> {
        self.tell(Command::Publish { topic: topic.into(), options: options.into(), args, reply: None })
    }

    /// Publishes with options and waits for the router's acknowledgement:
    /// the publication ID, or the refusal.
    pub fn publish_acked(&self, topic: &str, args: Args, options: impl Into<Opts>) -> Result<u64> {
        let options = options.into();
        self.ask(|reply| Command::Publish { topic: topic.into(), options, args, reply: Some(reply) })
    }

    /// Subscribes to `topic` (exact match); `handler` gets every event.
    pub fn subscribe(&self, topic: &str, handler: impl FnMut(Event) + Send + 'static) -> Result<Subscription> {
        self.subscribe_with(topic, Opts::new(), handler)
    }

    /// Subscribes with options (`match`, `get_retained`, ...).
    pub fn subscribe_with(
        &self,
        topic: &str,
        options: impl Into<Opts>,
        handler: impl FnMut(Event) + Send + 'static,
    ) -> Result<Subscription> {
        let (options, handler) = (options.into(), Box::new(handler));
        let (id, local) =
            self.ask(|reply| Command::Subscribe(SubscribeReq { topic: topic.into(), options, handler, reply }))?;
        Ok(Subscription { id, local })
    }

    /// Ends a subscription (the router's, once no other local one shares it).
    pub fn unsubscribe(&self, sub: Subscription) -> Result<()> {
        self.ask(|reply| Command::Unsubscribe { local: sub.local, reply })
    }

    /// Calls `procedure` with `args` (a tuple: one argument per element)
    /// and returns its first result argument as an `R` (`()` for none).
    pub fn call<A: Serialize, R: DeserializeOwned>(&self, procedure: &str, args: A) -> Result<R> {
        let result = self.call_with(procedure, Args::from(args)?, Opts::new())?;
        match result.args.first() {
            Some(v) => from_value(v),
            None => from_value(&Value::Null),
        }
    }

    /// Calls with raw arguments and options (`timeout`, `disclose_me`, ...);
    /// returns the whole result.
    pub fn call_with(&self, procedure: &str, args: Args, options: impl Into<Opts>) -> Result<Args> {
        let options = options.into();
        let request = self.request();
        self.ask(|reply| Command::Call {
            request,
            procedure: procedure.into(),
            options,
            args,
            reply: Some(CallReply::Once(reply)),
        })
    }

    /// Starts a call and returns at once: its progressive results (asked
    /// for: `receive_progress`), its result, more input and cancel go
    /// through the [`Call`]. With the option `progress: true` it is a
    /// progressive call: `args` is its first input, [`Call::send`] sends
    /// the rest.
    ///
    /// The answers wait for [`Call::next`] in a queue of their own; a
    /// caller that leaves them there (without dropping the `Call`) holds
    /// up the client's event handlers too.
    pub fn start_call(&self, procedure: &str, args: Args, options: impl Into<Opts>) -> Result<Call> {
        let mut options = options.into();
        let progressive = dict_get(&options, "progress").and_then(Value::as_bool) == Some(true);
        if dict_get(&options, "receive_progress").is_none() {
            options.push(("receive_progress".into(), Value::Bool(true)));
        }
        let request = self.request();
        let (tx, replies) = bounded(CALL_REPLIES);
        let caller = Caller {
            commands: self.inner.commands.clone(),
            waker: self.inner.waker.clone(),
            shared: self.inner.shared.clone(),
        };
        let call =
            Call { request, procedure: procedure.into(), replies, caller, input_open: AtomicBool::new(progressive) };
        self.tell(Command::Call {
            request,
            procedure: procedure.into(),
            options,
            args,
            reply: Some(CallReply::Stream(tx)),
        })?;
        Ok(call)
    }

    fn request(&self) -> u64 {
        self.inner.requests.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Registers `procedure`; `handler` answers each call (an `Err` goes
    /// back as the call's ERROR: [`Error::Application`] with its URI and
    /// arguments, another error with its WAMP URI). Calls run on the
    /// client's pool of four invocation threads, concurrently: a handler
    /// that keeps state guards it itself.
    pub fn register(
        &self,
        procedure: &str,
        handler: impl Fn(Invocation) -> Result<Args> + Send + Sync + 'static,
    ) -> Result<u64> {
        self.register_with(procedure, Opts::new(), handler)
    }

    /// Registers with options (`match`, `invoke`, ...).
    pub fn register_with(
        &self,
        procedure: &str,
        options: impl Into<Opts>,
        handler: impl Fn(Invocation) -> Result<Args> + Send + Sync + 'static,
    ) -> Result<u64> {
        let (options, handler) = (options.into(), Arc::new(handler));
        self.ask(|reply| Command::Register(RegisterReq { procedure: procedure.into(), options, handler, reply }))
    }

    /// Ends a registration.
    pub fn unregister(&self, registration: u64) -> Result<()> {
        self.ask(|reply| Command::Unregister { registration, reply })
    }

    /// Leaves the realm (GOODBYE, and the router's answer) and closes the
    /// connection; every other handle of this session sees `Error::Closed`.
    pub fn leave(&self) -> Result<()> {
        // Also while reconnecting: that stops it.
        let (tx, rx) = bounded(1);
        if self.inner.commands.send(Command::Leave { reply: Some(tx) }).is_err() {
            return Ok(());
        }
        let _ = self.inner.waker.wake();
        match self.inner.shared.wait(&rx) {
            Ok(()) | Err(Error::Closed) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
