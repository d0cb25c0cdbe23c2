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
//! ```no_run
//! use fennec_client::{Args, Client};
//!
//! fn main() -> fennec_client::Result<()> {
//!     let client = Client::connect("ws://127.0.0.1:8080/ws", "realm1")?;
//!     // A procedure, called with typed arguments.
//!     client.register("com.example.add", |inv| {
//!         let (a, b): (i64, i64) = inv.args.to()?;
//!         Args::from(a + b)
//!     })?;
//!     let sum: i64 = client.call("com.example.add", (2, 3))?;
//!     assert_eq!(sum, 5);
//!     // Pub/sub.
//!     let sub = client.subscribe("com.example.ticks", |e| println!("tick {:?}", e.args.get::<u64>(0)))?;
//!     client.publish("com.example.ticks", (1,))?;
//!     client.unsubscribe(sub)?;
//!     client.leave()
//! }
//! ```
//!
//! What this version does not do yet: reconnecting, progressive calls and
//! results, canceling a call other than on its timeout.

#![deny(missing_docs)]

mod args;
mod error;
mod io;
mod join;
mod transport;

pub use args::{from_value, to_value, Args};
pub use error::{Error, Result};
pub use fennec_wamp::message::Serializer;
pub use fennec_wamp::value::{Dict, Value};
pub use join::Auth;
pub use transport::Tls;

use crossbeam_channel::{bounded, Sender};
use io::{Command, Io};
use mio::{Poll, Waker};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
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
    /// What the caller sent.
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
}

impl Default for Options {
    fn default() -> Options {
        Options {
            serializer: Serializer::MsgPack,
            auth: Auth::Anonymous,
            connect_timeout: Duration::from_secs(10),
            tls: Tls::default(),
            timeout: None,
        }
    }
}

/// Options of a PUBLISH, CALL, SUBSCRIBE or REGISTER as WAMP names them
/// (`("exclude_me", Value::Bool(false))`, `("match", Value::Str("prefix".into()))`,
/// `("timeout", Value::UInt(500))`, Fennec's `retain`, ...).
pub type Opts = Dict;

/// Commands the API may queue before the connection's thread takes them.
const COMMANDS: usize = 1024;
/// Events and invocations queued for the handlers at most (then the
/// connection stops reading until they drain).
const JOBS: usize = 4096;

struct Inner {
    commands: Sender<Command>,
    waker: Arc<Waker>,
    session: u64,
    welcome: Dict,
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
        let cancel = join::feature(&welcome, "dealer", "call_canceling");
        let io = Io::new(t, poll, commands_rx, jobs_tx, options.timeout, cancel);
        std::thread::Builder::new().name("fennec-client-io".into()).spawn(move || io.run())?;
        let (tx, w) = (commands_tx.clone(), waker.clone());
        std::thread::Builder::new()
            .name("fennec-client-handlers".into())
            .spawn(move || io::dispatch(jobs_rx, tx, w))?;
        Ok(Client { inner: Arc::new(Inner { commands: commands_tx, waker, session, welcome }) })
    }

    /// The session ID the router gave.
    pub fn session_id(&self) -> u64 {
        self.inner.session
    }

    /// The WELCOME's details (`authid`, `authrole`, `roles`, ...).
    pub fn welcome_details(&self) -> &Dict {
        &self.inner.welcome
    }

    fn ask<T>(&self, make: impl FnOnce(Sender<Result<T>>) -> Command) -> Result<T> {
        let (tx, rx) = bounded(1);
        self.inner.commands.send(make(tx)).map_err(|_| Error::Closed)?;
        let _ = self.inner.waker.wake();
        rx.recv().map_err(|_| Error::Closed)?
    }

    fn tell(&self, c: Command) -> Result<()> {
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

    /// Publishes with options and waits for the router's acknowledgement:
    /// the publication ID, or the refusal.
    pub fn publish_acked(&self, topic: &str, args: Args, options: Opts) -> Result<u64> {
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
        options: Opts,
        handler: impl FnMut(Event) + Send + 'static,
    ) -> Result<Subscription> {
        let handler = Box::new(handler);
        let (id, local) = self.ask(|reply| Command::Subscribe { topic: topic.into(), options, handler, reply })?;
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
    pub fn call_with(&self, procedure: &str, args: Args, options: Opts) -> Result<Args> {
        self.ask(|reply| Command::Call { procedure: procedure.into(), options, args, reply })
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
        options: Opts,
        handler: impl Fn(Invocation) -> Result<Args> + Send + Sync + 'static,
    ) -> Result<u64> {
        let handler = Arc::new(handler);
        self.ask(|reply| Command::Register { procedure: procedure.into(), options, handler, reply })
    }

    /// Ends a registration.
    pub fn unregister(&self, registration: u64) -> Result<()> {
        self.ask(|reply| Command::Unregister { registration, reply })
    }

    /// Leaves the realm (GOODBYE, and the router's answer) and closes the
    /// connection; every other handle of this session sees `Error::Closed`.
    pub fn leave(&self) -> Result<()> {
        match self.ask(|reply| Command::Leave { reply: Some(reply) }) {
            Ok(()) | Err(Error::Closed) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
