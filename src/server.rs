//! Starting and stopping the router: binds the listener, starts the pinned
//! workers, the metrics thread and the acceptor, and shuts them down in
//! order. Used by `main` and by in-process tests.

use crate::config::{Config, Durability};
use crate::metrics;
use crate::router::history::Recorded;
use crate::router::retained::is_empty_body;
use crate::router::{owner_of, Listener, Publication, ShardMsg, WorkerId};
use crate::store::thread::{self, Commit, StoreReq};
use crate::store::{record, FjallStore, Store, Write};
use crate::worker::{Setup, Worker, WAKER};
use crossbeam_channel::{bounded, Sender, TrySendError};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::{Domain, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Capacity of each worker's inbox, in messages.
pub const INBOX_CAPACITY: usize = 16 * 1024;
/// Capacity of the channel carrying metrics snapshots.
const METRICS_CAPACITY: usize = 256;

const LISTENER: Token = Token(0);
const STOP: Token = Token(1);
const MQTT_LISTENER: Token = Token(2);
const RAW_LISTENER: Token = Token(3);
const WSS_LISTENER: Token = Token(4);
const MQTT_TLS_LISTENER: Token = Token(5);
const RAW_TLS_LISTENER: Token = Token(6);

/// A running router.
pub struct Running {
    /// The address the WAMP listener is bound to (useful with port 0).
    pub local_addr: SocketAddr,
    /// The address of the MQTT listener, if MQTT is on.
    pub mqtt_addr: Option<SocketAddr>,
    /// The address of the WAMP-over-RawSocket listener, if there is one.
    pub rawsocket_addr: Option<SocketAddr>,
    /// The TLS WebSocket listener (wss://), if there is one.
    pub wss_addr: Option<SocketAddr>,
    /// The MQTT-over-TLS listener, if there is one.
    pub mqtt_tls_addr: Option<SocketAddr>,
    /// The RawSocket-over-TLS listener, if there is one.
    pub rawsocket_tls_addr: Option<SocketAddr>,
    /// The admin listener (`GET /metrics`), if there is one.
    pub admin_addr: Option<SocketAddr>,
    admin_stop: Arc<std::sync::atomic::AtomicBool>,
    stop: Arc<Waker>,
    acceptor: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    metrics: Option<JoinHandle<()>>,
    store: Option<JoinHandle<()>>,
    /// The cluster thread (`--cluster`): it leaves the cluster once the
    /// workers, and so their links to it, are gone.
    cluster: Option<crate::cluster::thread::ClusterThread>,
    senders: Vec<Sender<ShardMsg>>,
    wakers: Vec<Arc<Waker>>,
    /// The TLS certificate and key files, for `reload_tls`.
    tls: Option<crate::config::TlsConfig>,
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Binds and starts everything. Returns once the router accepts connections.
pub fn start(cfg: Config) -> io::Result<Running> {
    start_with(cfg, None)
}

/// `start` with a given store instead of the one `--data` names (tests:
/// an in-memory or failing store; `--durability` still decides whether
/// acknowledgements wait for it, and `none` uses no store at all).
pub fn start_with(cfg: Config, store: Option<Box<dyn Store>>) -> io::Result<Running> {
    let cfg = Arc::new(cfg);
    let mut listener = bind(cfg.listen)?;
    let local_addr = listener.local_addr()?;
    let mut mqtt_listener = match cfg.mqtt.listen {
        Some(addr) => Some(bind(addr).map_err(|e| io::Error::new(e.kind(), format!("MQTT listener {addr}: {e}")))?),
        None => None,
    };
    let mqtt_addr = match &mqtt_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let mut raw_listener = match cfg.rawsocket {
        Some(addr) => {
            Some(bind(addr).map_err(|e| io::Error::new(e.kind(), format!("RawSocket listener {addr}: {e}")))?)
        }
        None => None,
    };
    let rawsocket_addr = match &raw_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let bind_opt = |addr: Option<SocketAddr>, what: &str| -> io::Result<Option<TcpListener>> {
        addr.map(|a| bind(a).map_err(|e| io::Error::new(e.kind(), format!("{what} listener {a}: {e}")))).transpose()
    };
    let mut wss_listener = bind_opt(cfg.wss, "wss")?;
    let mut mqtt_tls_listener = bind_opt(cfg.mqtt.tls_listen, "MQTT TLS")?;
    let mut raw_tls_listener = bind_opt(cfg.rawsocket_tls, "RawSocket TLS")?;
    let rawsocket_tls_addr = raw_tls_listener.as_ref().map(|l| l.local_addr()).transpose()?;
    let wss_addr = wss_listener.as_ref().map(|l| l.local_addr()).transpose()?;
    let mqtt_tls_addr = mqtt_tls_listener.as_ref().map(|l| l.local_addr()).transpose()?;
    let tls = match &cfg.tls {
        Some(t) => Some(crate::tls::server_config(&t.cert, &t.key, t.client_ca.as_deref()).map_err(io::Error::other)?),
        None => None,
    };
    let n = cfg.cores;
    if cfg.cluster.is_some() && n > crate::cluster::MAX_WORKERS {
        let e = format!("a cluster node runs at most {} workers (--cores {n})", crate::cluster::MAX_WORKERS);
        return Err(io::Error::new(io::ErrorKind::InvalidInput, e));
    }

    let mut polls = Vec::with_capacity(n);
    let mut wakers = Vec::with_capacity(n);
    let (mut senders, mut inboxes) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let poll = Poll::new()?;
        wakers.push(Arc::new(Waker::new(poll.registry(), WAKER)?));
        polls.push(poll);
        let (tx, rx) = bounded(INBOX_CAPACITY);
        senders.push(tx);
        inboxes.push(rx);
    }

    let (metrics_tx, metrics_rx) = bounded(METRICS_CAPACITY);
    let store_metrics = metrics::interval(&cfg.metrics).map(|every| (metrics_tx.clone(), every));
    let StoreParts { tx: store_tx, thread: store, mut retained, mut history, mut sessions } =
        open_store(&cfg, store, &senders, &wakers, store_metrics)?;
    let (ready_tx, ready_rx) = bounded(n);
    // The aggregate tables' rows, made again from the source rows kept.
    let crate::worker::tables::Rebuilt { states: mut table_rows, rewrite, delete } =
        crate::worker::tables::rebuild(&cfg, &mut retained);
    if let Some(tx) = &store_tx {
        let now = std::time::Instant::now();
        for p in &rewrite {
            let value = crate::store::record::encode(p, None, now);
            let write = crate::store::Write::Put { key: crate::store::record::retained_key(&p.realm, &p.topic), value };
            let _ = tx.send(crate::store::thread::StoreReq { write, ack: None });
        }
        for (realm, topic) in &delete {
            let write = crate::store::Write::Delete { key: crate::store::record::retained_key(realm, topic) };
            let _ = tx.send(crate::store::thread::StoreReq { write, ack: None });
        }
    }

    // The cluster thread, connected to NATS before any worker runs (a node
    // that cannot reach its cluster does not start).
    let (cluster, cluster_tx) = match &cfg.cluster {
        Some(c) => {
            let workers = senders.iter().cloned().zip(wakers.iter().cloned()).collect();
            let every = metrics::interval(&cfg.metrics).map(|every| (metrics_tx.clone(), every));
            let mut c = c.clone();
            c.queue_bound = cfg.mqtt.max_queued_messages + usize::from(cfg.mqtt.max_inflight);
            let (thread, channel) = crate::cluster::thread::start(c, workers, every)?;
            (Some(thread), Some(channel))
        }
        None => (None, None),
    };

    let metrics_cfg = cfg.metrics.clone();
    // The admin listener: its own thread, reading the metrics thread's totals.
    let admin_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (totals, admin_addr) = match cfg.metrics.admin {
        Some(addr) => {
            let l = crate::admin::bind(addr)
                .map_err(|e| io::Error::new(e.kind(), format!("admin listener {addr}: {e}")))?;
            let local = l.local_addr()?;
            let totals = Arc::new(std::sync::Mutex::new(crate::admin::Totals::new(n)));
            let admin = crate::admin::Admin {
                totals: totals.clone(),
                workers: senders.iter().cloned().zip(wakers.iter().cloned()).collect(),
                token: cfg.metrics.admin_token.clone(),
            };
            let stop = admin_stop.clone();
            std::thread::Builder::new().name("admin".into()).spawn(move || crate::admin::serve(l, admin, stop))?;
            (Some(totals), Some(local))
        }
        None => (None, None),
    };
    let metrics = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || metrics::run(metrics_rx, n, metrics_cfg, totals))?;

    let cores = if cfg.pin { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
    let mut workers = Vec::with_capacity(n);
    for (i, (poll, inbox)) in polls.into_iter().zip(inboxes).enumerate() {
        let setup = Setup {
            id: i as WorkerId,
            config: cfg.clone(),
            poll,
            inbox,
            senders: senders.clone(),
            wakers: wakers.clone(),
            metrics: Some(metrics_tx.clone()),
            store: store_tx.clone(),
            cluster: cluster_tx.clone(),
            retained: std::mem::take(&mut retained[i]),
            history: std::mem::take(&mut history[i]),
            table_rows: std::mem::take(&mut table_rows[i]),
            mqtt_sessions: std::mem::take(&mut sessions[i]),
            tls: tls.clone(),
            ready: Some(ready_tx.clone()),
        };
        let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
        let handle = std::thread::Builder::new().name(format!("worker-{i}")).spawn(move || {
            if let Some(core) = core {
                core_affinity::set_for_current(core);
            }
            Worker::new(setup).run()
        })?;
        workers.push(handle);
    }
    drop(metrics_tx);
    drop(store_tx);
    drop(cluster_tx);
    drop(ready_tx);
    // The listeners open once every worker has routed the MQTT sessions it
    // restored (a publish from the first client reaches them); then the
    // restored sessions' offline deadlines (wills, expiry) may run.
    let until = std::time::Instant::now() + STARTUP_LIMIT;
    for _ in 0..n {
        if ready_rx.recv_deadline(until).is_err() {
            log::warn!("restored MQTT sessions not all routed within {} s; starting anyway", STARTUP_LIMIT.as_secs());
            break;
        }
    }
    for (tx, waker) in senders.iter().zip(&wakers) {
        if tx.send(ShardMsg::Started).is_ok() {
            let _ = waker.wake();
        }
    }

    let accept_poll = Poll::new()?;
    let stop = Arc::new(Waker::new(accept_poll.registry(), STOP)?);
    accept_poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    if let Some(l) = &mut mqtt_listener {
        accept_poll.registry().register(l, MQTT_LISTENER, Interest::READABLE)?;
    }
    if let Some(l) = &mut raw_listener {
        accept_poll.registry().register(l, RAW_LISTENER, Interest::READABLE)?;
    }
    if let Some(l) = &mut wss_listener {
        accept_poll.registry().register(l, WSS_LISTENER, Interest::READABLE)?;
    }
    if let Some(l) = &mut mqtt_tls_listener {
        accept_poll.registry().register(l, MQTT_TLS_LISTENER, Interest::READABLE)?;
    }
    if let Some(l) = &mut raw_tls_listener {
        accept_poll.registry().register(l, RAW_TLS_LISTENER, Interest::READABLE)?;
    }
    let (acc_senders, acc_wakers) = (senders.clone(), wakers.clone());
    let listeners = Listeners {
        http: listener,
        mqtt: mqtt_listener,
        raw: raw_listener,
        wss: wss_listener,
        mqtt_tls: mqtt_tls_listener,
        raw_tls: raw_tls_listener,
    };
    let acceptor = std::thread::Builder::new()
        .name("acceptor".into())
        .spawn(move || accept_loop(accept_poll, listeners, acc_senders, acc_wakers))?;

    Ok(Running {
        local_addr,
        mqtt_addr,
        rawsocket_addr,
        wss_addr,
        mqtt_tls_addr,
        rawsocket_tls_addr,
        admin_addr,
        admin_stop,
        stop,
        acceptor: Some(acceptor),
        workers,
        metrics: Some(metrics),
        store,
        cluster,
        senders,
        wakers,
        tls: cfg.tls.clone(),
    })
}

/// How long the start waits for the workers to route restored sessions.
const STARTUP_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The store channel, its thread, and per worker what it owns from the
/// store: retained values, history events, MQTT persistent sessions.
struct StoreParts {
    tx: Option<Sender<StoreReq>>,
    thread: Option<JoinHandle<()>>,
    retained: Vec<Vec<Arc<Publication>>>,
    history: Vec<Vec<Recorded>>,
    sessions: Vec<Vec<crate::store::mqtt::Loaded>>,
}

/// Opens the durable store (unless `--durability none`), reads the retained
/// values back for their owner workers, and starts the store thread. A
/// store that cannot be opened, or a record that cannot be read, stops the
/// start with the reason: the router does not serve with half its data.
fn open_store(
    cfg: &Config,
    given: Option<Box<dyn Store>>,
    senders: &[Sender<ShardMsg>],
    wakers: &[Arc<Waker>],
    metrics: Option<thread::MetricsLink>,
) -> io::Result<StoreParts> {
    let n = senders.len();
    let mut retained = vec![Vec::new(); n];
    let mut history = vec![Vec::new(); n];
    let mut sessions: Vec<Vec<crate::store::mqtt::Loaded>> = (0..n).map(|_| Vec::new()).collect();
    let sync = match cfg.store.durability {
        Durability::None => return Ok(StoreParts { tx: None, thread: None, retained, history, sessions }),
        Durability::Sync => true,
        Durability::Batch => false,
    };
    let dir = &cfg.store.data;
    let failed = |e: String| io::Error::other(e);
    let mut store: Box<dyn Store> = match given {
        Some(s) => s,
        None => {
            std::fs::create_dir_all(dir)
                .map_err(|e| failed(format!("cannot create the data directory {}: {e}", dir.display())))?;
            Box::new(FjallStore::open(dir, sync).map_err(failed)?)
        }
    };
    let now = std::time::Instant::now();
    // Expired values go; keys tied to a session (`will`) get their will
    // value, since no session survived the restart (as fox-wamp's SQLite
    // engine does). Both changes are written back before anything runs.
    let mut fixes = Vec::new();
    // An unreadable record stops the start, or under `--repair` is reported
    // and deleted (the rest is kept).
    let mut dropped: Vec<Vec<u8>> = Vec::new();
    let repair = cfg.store.repair;
    let mut corrupt = |key: &[u8], e: String| -> Result<(), String> {
        let what = format!("corrupt store in {}: key {:?}: {e}", dir.display(), String::from_utf8_lossy(key));
        if !repair {
            return Err(format!("{what} (start with --repair to drop unreadable records and keep the rest)"));
        }
        log::warn!("--repair: dropped a record: {what}");
        dropped.push(key.to_vec());
        Ok(())
    };
    for (key, value) in store.scan(record::retained_prefix()).map_err(failed)? {
        let decoded = match record::decode(&value, now) {
            Ok(d) => d,
            Err(e) => {
                corrupt(&key, e).map_err(failed)?;
                continue;
            }
        };
        let Some(record::Decoded { mut p, will, .. }) = decoded else {
            fixes.push(Write::Delete { key });
            continue;
        };
        if let Some(body) = will {
            if is_empty_body(&body) {
                fixes.push(Write::Delete { key });
                continue;
            }
            p.body = body;
            p.props = None;
            fixes.push(Write::Put { key, value: record::encode(&p, None, now) });
        }
        let owner = owner_of(&p.realm, &p.topic, n) as usize;
        retained[owner].push(Arc::new(p));
    }
    for (key, value) in store.scan(record::history_prefix()).map_err(failed)? {
        let (decoded, seq) = match (record::decode(&value, now), record::history_seq(&key)) {
            (Ok(d), Some(seq)) => (d, seq),
            (Err(e), _) => {
                corrupt(&key, e).map_err(failed)?;
                continue;
            }
            (Ok(_), None) => {
                corrupt(&key, "no sequence number".into()).map_err(failed)?;
                continue;
            }
        };
        let Some(record::Decoded { p, at, .. }) = decoded else {
            fixes.push(Write::Delete { key });
            continue;
        };
        let owner = owner_of(&p.realm, &p.topic, n) as usize;
        history[owner].push(Recorded { seq, at, p: Arc::new(p) });
    }
    // MQTT persistent sessions: the newest incarnation of each client ID,
    // at the worker that owns the client ID (its registry entry is there).
    {
        use crate::store::mqtt as sm;
        let scan = |store: &mut Box<dyn Store>, p: &[u8]| store.scan(p).map_err(failed);
        let (ms, mo, mi) =
            (scan(&mut store, sm::SESSION)?, scan(&mut store, sm::MESSAGE)?, scan(&mut store, sm::QOS2_IN)?);
        let (loaded, stale) = sm::load(ms, mo, mi, &mut corrupt).map_err(failed)?;
        fixes.extend(stale);
        for l in loaded {
            let owner = owner_of(&l.realm, &l.client, n) as usize;
            sessions[owner].push(l);
        }
    }
    fixes.extend(dropped.into_iter().map(|key| Write::Delete { key }));
    if !fixes.is_empty() {
        store.commit(&fixes).map_err(failed)?;
    }
    let (tx, rx) = bounded(thread::CAPACITY);
    let commit = if sync { Commit::Now } else { Commit::Every(cfg.store.batch) };
    let workers: Vec<_> = senders.iter().cloned().zip(wakers.iter().cloned()).collect();
    let handle = std::thread::Builder::new()
        .name("store".into())
        .spawn(move || thread::run(store, rx, commit, workers, metrics))?;
    Ok(StoreParts { tx: Some(tx), thread: Some(handle), retained, history, sessions })
}

/// Accepts connections and hands them to workers round-robin, so that
/// consecutive connections land on different cores.
struct Listeners {
    http: TcpListener,
    mqtt: Option<TcpListener>,
    raw: Option<TcpListener>,
    wss: Option<TcpListener>,
    mqtt_tls: Option<TcpListener>,
    raw_tls: Option<TcpListener>,
}

fn accept_loop(mut poll: Poll, listeners: Listeners, senders: Vec<Sender<ShardMsg>>, wakers: Vec<Arc<Waker>>) {
    let mut events = Events::with_capacity(64);
    let mut next = 0usize;
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            log::error!("acceptor: poll failed: {e}");
            return;
        }
        for ev in events.iter() {
            if ev.token() == STOP {
                return;
            }
        }
        accept_all(&listeners.http, Listener::Http, &senders, &wakers, &mut next);
        if let Some(m) = &listeners.mqtt {
            accept_all(m, Listener::Mqtt, &senders, &wakers, &mut next);
        }
        if let Some(r) = &listeners.raw {
            accept_all(r, Listener::RawSocket, &senders, &wakers, &mut next);
        }
        if let Some(l) = &listeners.wss {
            accept_all(l, Listener::HttpTls, &senders, &wakers, &mut next);
        }
        if let Some(l) = &listeners.mqtt_tls {
            accept_all(l, Listener::MqttTls, &senders, &wakers, &mut next);
        }
        if let Some(l) = &listeners.raw_tls {
            accept_all(l, Listener::RawSocketTls, &senders, &wakers, &mut next);
        }
    }
}

fn accept_all(
    listener: &TcpListener,
    kind: Listener,
    senders: &[Sender<ShardMsg>],
    wakers: &[Arc<Waker>],
    next: &mut usize,
) {
    {
        loop {
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: report, back off, keep serving.
                    log::warn!("accept failed: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    break;
                }
            };
            let mut msg = ShardMsg::Accept(stream, kind);
            for _ in 0..senders.len() {
                let w = *next % senders.len();
                *next = next.wrapping_add(1);
                match senders[w].try_send(msg) {
                    Ok(()) => {
                        let _ = wakers[w].wake();
                        break;
                    }
                    Err(TrySendError::Full(m)) | Err(TrySendError::Disconnected(m)) => msg = m,
                }
            }
            // If every worker's inbox was full the connection is dropped (closed).
        }
    }
}

impl Running {
    /// Stops accepting, tells every worker to say GOODBYE and flush, and
    /// waits for all threads.
    /// Reads the TLS certificate and key files again (SIGHUP) and gives
    /// them to every worker, for the connections it accepts from now on;
    /// open connections and their sessions go on. `Err`: the files do not
    /// make a configuration (the old one stays).
    pub fn reload_tls(&self) -> Result<(), String> {
        let Some(t) = &self.tls else { return Err("no TLS listener is configured".into()) };
        let cfg = crate::tls::server_config(&t.cert, &t.key, t.client_ca.as_deref())?;
        for (tx, waker) in self.senders.iter().zip(&self.wakers) {
            // A full inbox is waited for: this is the main thread, not a worker.
            if tx.send(ShardMsg::TlsConfig(cfg.clone())).is_ok() {
                let _ = waker.wake();
            }
        }
        Ok(())
    }

    pub fn shutdown(mut self) {
        self.admin_stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(mut addr) = self.admin_addr {
            // Wakes the admin thread's blocking accept.
            if addr.ip().is_unspecified() {
                addr.set_ip(if addr.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
            }
            let _ = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(500));
        }
        let _ = self.stop.wake();
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        for (tx, waker) in self.senders.iter().zip(&self.wakers) {
            // A blocking send is right here: this is the main thread, and
            // workers keep draining their inboxes until they stop.
            let _ = tx.send(ShardMsg::Shutdown);
            let _ = waker.wake();
        }
        self.senders.clear();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Some(c) = self.cluster.take() {
            let _ = c.thread.join();
        }
        // The workers' ends of the store channel are gone: the store
        // thread commits what is left and stops.
        if let Some(s) = self.store.take() {
            let _ = s.join();
        }
        // Every sender of snapshots is gone: the metrics thread sends the
        // last interval and stops.
        if let Some(m) = self.metrics.take() {
            let _ = m.join();
        }
    }
}
