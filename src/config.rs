//! Configuration: built-in defaults, then a TOML file (`--config`), then
//! command-line flags, each overriding the one before.

use crate::wamp::uri::UriCheck;
use clap::Parser;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default bound of one message (WAMP) or packet (MQTT): 16 MiB, so a 1 MiB
/// binary argument in JSON (base64, a third larger) and more pass, as real
/// applications expect; memory stays bounded by the outbound queues.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 << 20;

/// What happens to a session whose outbound queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SlowPolicy {
    /// Drop events for it (and count them); replies are still queued.
    Drop,
    /// Drop events during the grace period, then close the session.
    Close,
}

#[derive(Parser, Debug, Default)]
#[command(name = "fennec", version, about = "Fennec: a thread-per-core WAMP v2 message router")]
pub struct Cli {
    /// TOML configuration file; flags override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory of the durable store [default: ./fennec-data].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// When a retained write is acknowledged: `sync` (once on disk), `batch`
    /// (at once; committed every `store.batch_ms`), `none` (memory only) [default: sync].
    #[arg(long, value_name = "MODE")]
    pub durability: Option<Durability>,
    /// Start on a store with unreadable records: drop them (each is
    /// reported) and keep the rest. Without it such a store stops the start.
    #[arg(long)]
    pub repair: bool,
    /// Worker threads, each pinned to a core and owning a share of the sessions [default: all cores].
    #[arg(long, value_name = "N")]
    pub cores: Option<usize>,
    /// Do not pin workers to cores.
    #[arg(long)]
    pub no_pin: bool,
    /// Address of the WAMP WebSocket listener (port 0 picks a free port) [default: 127.0.0.1:8080].
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<SocketAddr>,
    /// HTTP path of the WAMP WebSocket endpoint [default: /ws].
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,
    /// Address of a WAMP-over-RawSocket listener (port 0 picks a free port) [default: none].
    #[arg(long, value_name = "HOST:PORT")]
    pub rawsocket: Option<SocketAddr>,
    /// Address of a TLS listener for WebSocket (wss://: WAMP, and MQTT on its path) [default: none].
    #[arg(long, value_name = "HOST:PORT")]
    pub wss: Option<SocketAddr>,
    /// Address of an MQTT-over-TLS listener (conventionally port 8883) [default: none].
    #[arg(long, value_name = "HOST:PORT")]
    pub mqtt_tls: Option<SocketAddr>,
    /// PEM certificate chain of the TLS listeners.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the TLS listeners.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA whose client certificates the TLS listeners accept (authmethod `tls`).
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// A new listener for WAMP-over-RawSocket over TLS [default: none].
    #[arg(long, value_name = "HOST:PORT")]
    pub rawsocket_tls: Option<SocketAddr>,
    /// A realm to serve (repeatable) [default: realm1].
    #[arg(long = "realm", value_name = "NAME")]
    pub realms: Vec<String>,
    /// Accept any valid realm name, creating realms on first use.
    #[arg(long)]
    pub any_realm: bool,
    /// URI rules for topics and procedures: loose or strict [default: loose].
    #[arg(long, value_name = "RULES")]
    pub uri_check: Option<UriCheck>,
    /// Largest WebSocket message accepted, in bytes; bigger closes the connection (1009) [default: 16777216].
    #[arg(long, value_name = "BYTES")]
    pub max_message_size: Option<usize>,
    /// Bound of each session's outbound queue, in bytes [default: 4194304].
    #[arg(long, value_name = "BYTES")]
    pub outbound_queue_bytes: Option<usize>,
    /// Bound of each session's outbound queue, in messages [default: 65536].
    #[arg(long, value_name = "N")]
    pub outbound_queue_messages: Option<usize>,
    /// Policy for a session whose outbound queue is full [default: close].
    #[arg(long, value_name = "POLICY")]
    pub slow_consumer: Option<SlowPolicy>,
    /// Under the close policy: how long a queue may stay full before the session is closed [default: 2000].
    #[arg(long, value_name = "MS")]
    pub slow_grace_ms: Option<u64>,
    /// A new connection that has not opened a WAMP session by then is closed, in milliseconds [default: 10000].
    #[arg(long, value_name = "MS")]
    pub open_timeout_ms: Option<u64>,
    /// Send metrics to this StatsD server over UDP.
    #[arg(long, value_name = "HOST:PORT")]
    pub statsd: Option<String>,
    /// The admin listener: GET /metrics (Prometheus) [default: none; e.g. 127.0.0.1:9180].
    #[arg(long, value_name = "HOST:PORT")]
    pub admin: Option<SocketAddr>,
    /// What to log, RUST_LOG-style: a level (off, error, warn, info, debug,
    /// trace) and TARGET=LEVEL pairs, e.g. `info,wamp=debug` [default: the
    /// RUST_LOG environment variable, else info].
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Prefix of every StatsD metric name [default: fennec].
    #[arg(long, value_name = "PREFIX")]
    pub statsd_prefix: Option<String>,
    /// How often metrics are flushed to StatsD, in milliseconds [default: 1000].
    #[arg(long, value_name = "MS")]
    pub metrics_interval_ms: Option<u64>,
    /// On SIGINT/SIGTERM: how long to flush outbound queues before closing, in milliseconds [default: 2000].
    #[arg(long, value_name = "MS")]
    pub shutdown_grace_ms: Option<u64>,
    /// Address of the MQTT listener (port 0 picks a free port) [default: 127.0.0.1:1883].
    #[arg(long, value_name = "HOST:PORT")]
    pub mqtt: Option<SocketAddr>,
    /// Do not listen for MQTT (neither TCP nor WebSocket).
    #[arg(long)]
    pub no_mqtt: bool,
    /// Realm of MQTT clients that do not name one as `user@realm` [default: the first realm].
    #[arg(long, value_name = "NAME")]
    pub mqtt_realm: Option<String>,
    /// Seconds between `$SYS` topic updates, 0 for none [default: 10].
    #[arg(long, value_name = "S")]
    pub sys_interval: Option<u32>,
    /// Join a cluster through this NATS server (docs/CLUSTER.md) [default: none, one node].
    #[arg(long, value_name = "URL")]
    pub cluster: Option<String>,
    /// This node's name in the cluster, unique in it [default: the host name].
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
}

/// The `[mqtt]` table.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct MqttFile {
    pub listen: Option<SocketAddr>,
    pub enabled: Option<bool>,
    /// HTTP path of MQTT over WebSocket (subprotocol `mqtt`) on the WAMP listener.
    pub ws_path: Option<String>,
    pub realm: Option<String>,
    /// Keep-alive granted at most, seconds (0: whatever the client asks).
    pub max_keepalive: Option<u16>,
    /// Unacknowledged QoS 1/2 messages in flight toward one client.
    pub max_inflight: Option<u16>,
    /// QoS 2 messages from one client awaiting PUBREL (the CONNACK receive maximum).
    pub receive_maximum: Option<u16>,
    /// QoS 1/2 messages queued for one session (offline, or window full);
    /// beyond it they are dropped and counted.
    pub max_queued_messages: Option<usize>,
    /// Largest packet accepted, bytes [default: limits.max_message_size].
    pub max_packet_size: Option<usize>,
    /// Topic aliases a client may use toward the broker.
    pub topic_alias_maximum: Option<u16>,
    /// Longest session expiry granted, seconds (none: as asked).
    pub max_session_expiry: Option<u32>,
    /// Topic filters (MQTT syntax) nobody may subscribe to: SUBACK 0x80.
    pub deny_subscribe: Option<Vec<String>>,
    /// Subscriptions one session may hold; more get SUBACK 0x97 (quota exceeded).
    pub max_subscriptions: Option<usize>,
    /// Most levels in a topic name or filter: deeper ones are refused
    /// (3.1.1: the connection is closed; v5: SUBACK 0x8F, DISCONNECT 0x90).
    pub max_topic_levels: Option<usize>,
    /// Seconds between `$SYS/broker/...` updates (0: no `$SYS` topics).
    pub sys_interval: Option<u32>,
    /// MQTT clients without a user name, on top of the realm's own
    /// `allow_anonymous` [default: true].
    pub allow_anonymous: Option<bool>,
    /// MQTT-over-TLS listener (none by default; conventionally port 8883).
    pub tls_listen: Option<SocketAddr>,
    /// A client certificate's common name is the user name (a principal
    /// with `tls = true`; no password) [default: false].
    pub username_from_cert: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct Mqtt {
    /// `None`: MQTT is off.
    pub listen: Option<SocketAddr>,
    pub ws_path: Option<String>,
    pub realm: String,
    pub max_keepalive: u16,
    pub max_inflight: u16,
    pub receive_maximum: u16,
    pub max_queued_messages: usize,
    pub max_packet_size: usize,
    pub topic_alias_maximum: u16,
    pub max_session_expiry: Option<u32>,
    pub deny_subscribe: Vec<String>,
    pub max_subscriptions: usize,
    pub allow_anonymous: bool,
    /// MQTT over TLS, if on.
    pub tls_listen: Option<SocketAddr>,
    pub username_from_cert: bool,
    pub max_topic_levels: usize,
    pub sys_interval: u32,
}

/// The configuration file. Every key is optional.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub cores: Option<usize>,
    pub pin: Option<bool>,
    #[serde(default)]
    pub wamp: WampFile,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub metrics: MetricsFile,
    #[serde(default, rename = "realm")]
    pub realms: Vec<RealmConfig>,
    pub any_realm: Option<bool>,
    pub uri_check: Option<UriCheck>,
    pub shutdown_grace_ms: Option<u64>,
    #[serde(default)]
    pub mqtt: MqttFile,
    #[serde(default)]
    pub store: StoreFile,
    #[serde(default)]
    pub tls: TlsFile,
    #[serde(default)]
    pub cluster: crate::cluster::ClusterFile,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    pub data: Option<PathBuf>,
    pub durability: Option<Durability>,
    pub batch_ms: Option<u64>,
    pub max_retained_keys: Option<usize>,
    pub max_retained_value: Option<usize>,
}

/// What PUBLISHED / PUBACK of a retained write promises.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// The write is on disk (fsync) before it is acknowledged.
    #[default]
    Sync,
    /// Acknowledged at once; written within `batch_ms`, without fsync.
    Batch,
    /// Memory only: nothing survives a restart.
    None,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sync" => Ok(Durability::Sync),
            "batch" => Ok(Durability::Batch),
            "none" => Ok(Durability::None),
            _ => Err(format!("unknown durability '{s}' (sync, batch or none)")),
        }
    }
}

/// The durable store's settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data: PathBuf,
    pub durability: Durability,
    /// Under `batch`: the longest a write waits for its commit.
    pub batch: Duration,
    /// Retained keys per realm. Each of N workers holds at most
    /// ⌈max / N⌉ of a realm's keys (keys are spread by hash).
    pub max_retained_keys: usize,
    /// Largest retained value, in bytes (MQTT: the payload; WAMP: the
    /// arguments in MessagePack).
    pub max_retained_value: usize,
    /// `--repair`: unreadable records are dropped at start, not fatal.
    pub repair: bool,
}

/// Default bound on a realm's retained keys.
pub const MAX_RETAINED_KEYS: usize = 1_000_000;
/// Default bound on a retained value (1 MiB).
pub const MAX_RETAINED_VALUE: usize = 1 << 20;

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct WampFile {
    pub listen: Option<SocketAddr>,
    pub path: Option<String>,
    /// WAMP-over-RawSocket listener (none by default).
    pub rawsocket: Option<SocketAddr>,
    /// TLS WebSocket listener (wss://; none by default).
    pub wss: Option<SocketAddr>,
    /// WAMP-over-RawSocket over TLS (none by default).
    pub rawsocket_tls: Option<SocketAddr>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Clients may present a certificate this CA (PEM) signed: authmethod `tls`.
    pub client_ca: Option<PathBuf>,
}

/// The TLS listeners' certificate chain and key (PEM files).
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub max_message_size: Option<usize>,
    pub max_uri_components: Option<usize>,
    pub outbound_queue_bytes: Option<usize>,
    pub outbound_queue_messages: Option<usize>,
    pub slow_consumer: Option<SlowPolicy>,
    pub slow_grace_ms: Option<u64>,
    pub open_timeout_ms: Option<u64>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct MetricsFile {
    pub statsd: Option<String>,
    pub prefix: Option<String>,
    pub interval_ms: Option<u64>,
    /// The admin listener (`GET /metrics`).
    pub admin: Option<SocketAddr>,
    /// The bearer token every admin request must carry; required when the
    /// admin listener is not on a loopback address.
    pub admin_token: Option<String>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RealmConfig {
    pub name: String,
    /// Overrides the global slow-consumer policy for sessions of this realm.
    pub slow_consumer: Option<SlowPolicy>,
    /// Whether callers and publishers are disclosed to callees and
    /// subscribers: as they ask (`disclose_me`, the default), always, or never.
    #[serde(default)]
    pub disclose: Disclose,
    /// Topics whose events are kept (`[[realm.history]]`).
    #[serde(default)]
    pub history: Vec<HistoryRule>,
    /// Built-in reducers (`[[realm.reducer]]`).
    #[serde(default, rename = "reducer")]
    pub reducers: Vec<ReducerRule>,
    /// The aggregate engine's tables (a JSON or TOML file, `tables::schema`;
    /// a relative path is relative to the configuration file).
    pub schema: Option<PathBuf>,
    /// The above, compiled at start.
    #[serde(skip)]
    pub tables: Option<std::sync::Arc<crate::tables::schema::Schema>>,
    /// Anonymous sessions (WAMP `anonymous`, MQTT without a user name)
    /// [default: allowed unless the realm has principals].
    pub allow_anonymous: Option<bool>,
    /// Their role [default: `anonymous`].
    pub anonymous_role: Option<String>,
    /// Who may authenticate (`[[realm.principal]]`).
    #[serde(default, rename = "principal")]
    pub principals: Vec<crate::auth::PrincipalConfig>,
    /// More principals, from a file of their own (`[[principal]]`), so the
    /// main config can be shared without secrets.
    pub principals_file: Option<PathBuf>,
    /// A procedure that authenticates ticket and cryptosign principals the
    /// configuration does not list (a dynamic authenticator).
    pub authenticator: Option<String>,
    /// What each role may do (`[[realm.role]]`); none: everything, for all.
    #[serde(default, rename = "role")]
    pub roles: Vec<crate::auth::RoleConfig>,
    /// The above, compiled at start.
    #[serde(skip)]
    pub auth: std::sync::Arc<crate::auth::RealmAuth>,
}

impl RealmConfig {
    /// A realm with the defaults (open to anonymous, no roles).
    pub fn named(name: &str) -> RealmConfig {
        RealmConfig { name: name.to_owned(), ..RealmConfig::default() }
    }

    /// Reads the principals file and compiles principals and roles.
    fn compile_auth(&mut self) -> Result<(), String> {
        let mut principals = self.principals.clone();
        if let Some(path) = &self.principals_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("realm '{}': cannot read {}: {e}", self.name, path.display()))?;
            let file: crate::auth::PrincipalsFile =
                toml::from_str(&text).map_err(|e| format!("realm '{}': {}: {e}", self.name, path.display()))?;
            principals.extend(file.principals);
        }
        let mut auth = crate::auth::RealmAuth::compile(
            &self.name,
            self.allow_anonymous,
            self.anonymous_role.as_deref(),
            &principals,
            &self.roles,
        )?;
        auth.authenticator = self.authenticator.clone();
        self.auth = std::sync::Arc::new(auth);
        Ok(())
    }
}

/// Event history for topics matching `uri` under `match` (exact, prefix,
/// wildcard): the newest `limit` events per topic, none older than
/// `max_age_s` (if given).
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HistoryRule {
    pub uri: String,
    #[serde(rename = "match", default = "exact")]
    pub policy: String,
    #[serde(default = "history_limit")]
    pub limit: usize,
    pub max_age_s: Option<u64>,
}

fn exact() -> String {
    "exact".into()
}

/// Events kept per topic by default (a rule without `limit`, or `trace: true`).
pub const HISTORY_LIMIT: usize = 1000;

fn history_limit() -> usize {
    HISTORY_LIMIT
}

impl HistoryRule {
    /// Whether the rule covers `topic` (`policy` was checked at load).
    pub fn covers(&self, topic: &str) -> bool {
        use crate::router::MatchPolicy;
        let policy = match self.policy.as_str() {
            "prefix" => MatchPolicy::Prefix,
            "wildcard" => MatchPolicy::Wildcard,
            _ => MatchPolicy::Exact,
        };
        crate::router::topics::matches(policy, &self.uri, topic)
    }
}

/// A built-in reducer: publications to the topics `uri` matches under
/// `match` are folded into each topic's retained value by `kind`, over the
/// event's `field` path (`"a.b"`; none: the event's value itself), without
/// a callee (`router::fold`). `limit`: the list length of `append`.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReducerRule {
    pub uri: String,
    #[serde(rename = "match", default = "exact")]
    pub policy: String,
    pub kind: crate::router::fold::Kind,
    pub field: Option<String>,
    #[serde(default = "append_limit")]
    pub limit: usize,
}

fn append_limit() -> usize {
    crate::router::fold::APPEND_LIMIT
}

impl ReducerRule {
    pub fn covers(&self, topic: &str) -> bool {
        let policy = crate::router::MatchPolicy::parse(&self.policy).unwrap_or(crate::router::MatchPolicy::Exact);
        crate::router::topics::matches(policy, &self.uri, topic)
    }
}

/// A realm's caller / publisher disclosure policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Disclose {
    /// As the caller or publisher asks with `disclose_me`.
    #[default]
    Allow,
    /// Always, whatever it asks.
    Force,
    /// Never: `disclose_me: true` gets `wamp.error.option_disallowed.disclose_me`.
    Forbid,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_size: usize,
    /// Most components in a WAMP URI (topic, pattern, procedure): the
    /// tries and their walks are that deep at most.
    pub max_uri_components: usize,
    pub outbound_queue_bytes: usize,
    pub outbound_queue_messages: usize,
    pub slow_consumer: SlowPolicy,
    pub slow_grace: Duration,
    pub open_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Metrics {
    pub statsd: Option<String>,
    pub prefix: String,
    pub interval: Duration,
    /// The admin listener (Prometheus `/metrics`), if on.
    pub admin: Option<SocketAddr>,
    pub admin_token: Option<String>,
}

/// The resolved configuration the router runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The log filter (`log::Filter` syntax), checked.
    pub log_level: String,
    pub cores: usize,
    pub pin: bool,
    pub listen: SocketAddr,
    pub path: String,
    /// WAMP-over-RawSocket listener, if any.
    pub rawsocket: Option<SocketAddr>,
    /// TLS WebSocket listener, if any.
    pub wss: Option<SocketAddr>,
    /// RawSocket-over-TLS listener, if any.
    pub rawsocket_tls: Option<SocketAddr>,
    /// The TLS listeners' certificate and key (required with one).
    pub tls: Option<TlsConfig>,
    pub realms: Vec<RealmConfig>,
    pub any_realm: bool,
    pub uri_check: UriCheck,
    pub limits: Limits,
    pub metrics: Metrics,
    pub shutdown_grace: Duration,
    pub mqtt: Mqtt,
    pub store: StoreConfig,
    /// Some realm keeps event history.
    pub any_history: bool,
    /// Some realm has built-in reducers.
    pub any_reducer: bool,
    /// Some realm has aggregate tables.
    pub any_tables: bool,
    /// The cluster this node belongs to, if any (`--cluster`).
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

impl Default for Config {
    fn default() -> Config {
        Config::resolve(Cli::default(), File::default()).expect("defaults are valid")
    }
}

impl Config {
    /// Parses the command line (and the file it names).
    pub fn from_args() -> Result<Config, String> {
        let cli = Cli::parse();
        let file = match &cli.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
                toml::from_str(&text).map_err(|e| format!("invalid config {}: {e}", path.display()))?
            }
            None => File::default(),
        };
        Config::resolve(cli, file)
    }

    pub fn resolve(cli: Cli, file: File) -> Result<Config, String> {
        let available = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let cores = cli.cores.or(file.cores).unwrap_or(available);
        if cores == 0 || cores > 1024 {
            return Err(format!("--cores must be between 1 and 1024, got {cores}"));
        }
        let mut realms = file.realms;
        for name in cli.realms {
            if !realms.iter().any(|r| r.name == name) {
                realms.push(RealmConfig::named(&name));
            }
        }
        if realms.is_empty() {
            realms.push(RealmConfig::named("realm1"));
        }
        let uri_check = cli.uri_check.or(file.uri_check).unwrap_or_default();
        for r in &mut realms {
            if !crate::wamp::uri::valid_realm(&r.name, uri_check) {
                return Err(format!("invalid realm name '{}'", r.name));
            }
            r.compile_auth()?;
            if let Some(path) = &r.schema {
                // Relative to the configuration file's directory.
                let base = cli.config.as_deref().and_then(std::path::Path::parent);
                let path = match base {
                    Some(dir) if path.is_relative() => dir.join(path),
                    _ => path.clone(),
                };
                let schema =
                    crate::tables::schema::Schema::load(&path).map_err(|e| format!("realm '{}': {e}", r.name))?;
                r.tables = Some(std::sync::Arc::new(schema));
            }
        }
        let any_tables = realms.iter().any(|r| r.tables.is_some());
        let wss = cli.wss.or(file.wamp.wss);
        let rawsocket_tls = cli.rawsocket_tls.or(file.wamp.rawsocket_tls);
        let tls = match (cli.tls_cert.or(file.tls.cert), cli.tls_key.or(file.tls.key)) {
            (Some(cert), Some(key)) => {
                Some(TlsConfig { cert, key, client_ca: cli.tls_client_ca.or(file.tls.client_ca) })
            }
            (None, None) => None,
            _ => return Err("tls.cert and tls.key (--tls-cert, --tls-key) go together".into()),
        };
        let path = cli.path.or(file.wamp.path).unwrap_or_else(|| "/ws".into());
        if !path.starts_with('/') {
            return Err(format!("--path must start with '/', got '{path}'"));
        }
        let limits = Limits {
            max_message_size: cli.max_message_size.or(file.limits.max_message_size).unwrap_or(DEFAULT_MAX_MESSAGE_SIZE),
            max_uri_components: file.limits.max_uri_components.unwrap_or(256).max(1),
            outbound_queue_bytes: cli.outbound_queue_bytes.or(file.limits.outbound_queue_bytes).unwrap_or(4 << 20),
            outbound_queue_messages: cli
                .outbound_queue_messages
                .or(file.limits.outbound_queue_messages)
                .unwrap_or(65536),
            slow_consumer: cli.slow_consumer.or(file.limits.slow_consumer).unwrap_or(SlowPolicy::Close),
            slow_grace: Duration::from_millis(cli.slow_grace_ms.or(file.limits.slow_grace_ms).unwrap_or(2000)),
            open_timeout: Duration::from_millis(cli.open_timeout_ms.or(file.limits.open_timeout_ms).unwrap_or(10_000)),
        };
        if limits.max_message_size < 1024 || limits.outbound_queue_bytes < 1024 || limits.outbound_queue_messages < 16 {
            return Err("limits too small: max message and queue sizes must be at least 1024 bytes, 16 messages".into());
        }
        let metrics = Metrics {
            statsd: cli.statsd.or(file.metrics.statsd),
            prefix: cli.statsd_prefix.or(file.metrics.prefix).unwrap_or_else(|| "fennec".into()),
            interval: Duration::from_millis(
                cli.metrics_interval_ms.or(file.metrics.interval_ms).unwrap_or(1000).max(10),
            ),
            admin: cli.admin.or(file.metrics.admin),
            admin_token: file.metrics.admin_token.filter(|t| !t.is_empty()),
        };
        if metrics.admin.is_some_and(|a| !a.ip().is_loopback()) && metrics.admin_token.is_none() {
            return Err("the admin listener is not on a loopback address: set [metrics] admin_token".into());
        }
        let m = file.mqtt;
        let enabled = !cli.no_mqtt && m.enabled.unwrap_or(true);
        let mqtt_realm = cli.mqtt_realm.or(m.realm).unwrap_or_else(|| realms[0].name.clone());
        let mqtt = Mqtt {
            listen: enabled
                .then(|| cli.mqtt.or(m.listen).unwrap_or_else(|| "127.0.0.1:1883".parse().expect("literal"))),
            ws_path: enabled.then(|| m.ws_path.unwrap_or_else(|| "/mqtt".into())),
            realm: mqtt_realm,
            max_keepalive: m.max_keepalive.unwrap_or(0),
            max_inflight: m.max_inflight.unwrap_or(1000).max(1),
            receive_maximum: m.receive_maximum.unwrap_or(1000).max(1),
            max_queued_messages: m.max_queued_messages.unwrap_or(10_000),
            max_packet_size: m.max_packet_size.unwrap_or(limits.max_message_size).max(64),
            topic_alias_maximum: m.topic_alias_maximum.unwrap_or(64),
            max_session_expiry: m.max_session_expiry,
            deny_subscribe: m.deny_subscribe.unwrap_or_default(),
            max_subscriptions: m.max_subscriptions.unwrap_or(10_000),
            allow_anonymous: m.allow_anonymous.unwrap_or(true),
            tls_listen: if enabled { cli.mqtt_tls.or(m.tls_listen) } else { None },
            username_from_cert: m.username_from_cert.unwrap_or(false),
            max_topic_levels: m.max_topic_levels.unwrap_or(256).max(1),
            sys_interval: cli.sys_interval.or(m.sys_interval).unwrap_or(10),
        };
        if (wss.is_some() || rawsocket_tls.is_some() || mqtt.tls_listen.is_some()) && tls.is_none() {
            return Err("a TLS listener (--wss, --rawsocket-tls, --mqtt-tls) needs tls.cert and tls.key".into());
        }
        if let Some(p) = &mqtt.ws_path {
            if !p.starts_with('/') || *p == path {
                return Err(format!("mqtt.ws_path must start with '/' and differ from the WAMP path, got '{p}'"));
            }
        }
        for f in &mqtt.deny_subscribe {
            crate::mqtt::topic::parse_filter(f).map_err(|e| format!("mqtt.deny_subscribe: '{f}': {e}"))?;
        }
        for h in realms.iter().flat_map(|r| r.history.iter()) {
            if crate::router::MatchPolicy::parse(&h.policy).is_none() {
                return Err(format!("history rule for '{}': match must be exact, prefix or wildcard", h.uri));
            }
        }
        let any_history = realms.iter().any(|r| !r.history.is_empty());
        for r in realms.iter().flat_map(|r| r.reducers.iter()) {
            if crate::router::MatchPolicy::parse(&r.policy).is_none() {
                return Err(format!("reducer for '{}': match must be exact, prefix or wildcard", r.uri));
            }
            if r.limit == 0 || r.limit > crate::router::fold::APPEND_MAX {
                return Err(format!("reducer for '{}': limit must be 1 to {}", r.uri, crate::router::fold::APPEND_MAX));
            }
        }
        let any_reducer = realms.iter().any(|r| !r.reducers.is_empty());
        let log_level =
            cli.log_level.clone().or_else(|| std::env::var("RUST_LOG").ok()).unwrap_or_else(|| "info".into());
        crate::logging::Filter::parse(&log_level).map_err(|e| format!("--log-level: {e}"))?;
        let cluster = crate::cluster::ClusterConfig::resolve(cli.cluster, cli.node_name, file.cluster)?;
        Ok(Config {
            cluster,
            log_level,
            any_history,
            any_reducer,
            any_tables,
            cores,
            pin: !cli.no_pin && file.pin.unwrap_or(true),
            listen: cli.listen.or(file.wamp.listen).unwrap_or_else(|| "127.0.0.1:8080".parse().expect("literal")),
            path,
            rawsocket: cli.rawsocket.or(file.wamp.rawsocket),
            wss,
            rawsocket_tls,
            tls,
            realms,
            any_realm: cli.any_realm || file.any_realm.unwrap_or(false),
            uri_check,
            limits,
            metrics,
            shutdown_grace: Duration::from_millis(cli.shutdown_grace_ms.or(file.shutdown_grace_ms).unwrap_or(2000)),
            mqtt,
            store: StoreConfig {
                data: cli.data.or(file.store.data).unwrap_or_else(|| "fennec-data".into()),
                durability: cli.durability.or(file.store.durability).unwrap_or_default(),
                batch: Duration::from_millis(file.store.batch_ms.unwrap_or(10).max(1)),
                max_retained_keys: file.store.max_retained_keys.unwrap_or(MAX_RETAINED_KEYS).max(1),
                max_retained_value: file.store.max_retained_value.unwrap_or(MAX_RETAINED_VALUE),
                repair: cli.repair,
            },
        })
    }

    /// The realm configuration for a HELLO, or `None` if the realm is not served.
    pub fn realm(&self, name: &str) -> Option<RealmConfig> {
        if let Some(r) = self.realms.iter().find(|r| r.name == name) {
            return Some(r.clone());
        }
        (self.any_realm && crate::wamp::uri::valid_realm(name, self.uri_check)).then(|| RealmConfig::named(name))
    }

    /// Whether `procedure` is a dynamic authorizer of a role of `realm`.
    pub fn is_authorizer(&self, realm: &str, procedure: &str) -> bool {
        self.realms
            .iter()
            .find(|r| r.name == realm)
            .is_some_and(|r| r.roles.iter().any(|role| role.authorizer.as_deref() == Some(procedure)))
    }

    /// The aggregate tables of `realm`, if it has any.
    pub fn tables(&self, realm: &str) -> Option<&std::sync::Arc<crate::tables::schema::Schema>> {
        if !self.any_tables {
            return None;
        }
        self.realms.iter().find(|r| r.name == realm)?.tables.as_ref()
    }

    /// The built-in reducer of `topic` in `realm`, if any (the first rule
    /// that covers it; checked on the publish path).
    pub fn reducer_rule(&self, realm: &str, topic: &str) -> Option<&ReducerRule> {
        if !self.any_reducer {
            return None;
        }
        self.realms.iter().find(|r| r.name == realm)?.reducers.iter().find(|r| r.covers(topic))
    }

    /// The history rule covering `topic` in `realm`, if any (no clone: on
    /// the publish path).
    pub fn history_rule(&self, realm: &str, topic: &str) -> Option<&HistoryRule> {
        if !self.any_history {
            return None;
        }
        self.realms.iter().find(|r| r.name == realm)?.history.iter().find(|h| h.covers(topic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.path, "/ws");
        assert_eq!(c.realms[0].name, "realm1");
        assert!(c.realm("realm1").is_some() && c.realm("other").is_none());
        assert_eq!(c.limits.slow_consumer, SlowPolicy::Close);
    }

    #[test]
    fn file_then_flags() {
        let file: File = toml::from_str(
            r#"
            cores = 3
            any_realm = true
            [wamp]
            listen = "0.0.0.0:9000"
            [limits]
            slow_consumer = "drop"
            [[realm]]
            name = "com.example"
            slow_consumer = "close"
            "#,
        )
        .unwrap();
        let cli = Cli::try_parse_from(["fennec", "--cores", "2", "--realm", "realm2"]).unwrap();
        let c = Config::resolve(cli, file).unwrap();
        assert_eq!(c.cores, 2);
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.limits.slow_consumer, SlowPolicy::Drop);
        assert_eq!(c.realm("com.example").unwrap().slow_consumer, Some(SlowPolicy::Close));
        assert!(c.realm("realm2").is_some());
        assert!(c.realm("anything.else").is_some(), "any_realm");
        assert!(c.realm("wamp.reserved").is_none());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(toml::from_str::<File>("colour = 1").is_err());
        let cli = Cli::try_parse_from(["fennec", "--cores", "0"]).unwrap();
        assert!(Config::resolve(cli, File::default()).is_err());
        let cli = Cli::try_parse_from(["fennec", "--realm", "bad realm"]).unwrap();
        assert!(Config::resolve(cli, File::default()).is_err());
        let history = |m: &str| format!("[[realm]]\nname = \"r\"\n[[realm.history]]\nuri = \"a.\"\nmatch = \"{m}\"\n");
        let file: File = toml::from_str(&history("regex")).unwrap();
        assert!(Config::resolve(Cli::default(), file).is_err(), "an unknown history match policy");
        let file: File = toml::from_str(&history("wildcard")).unwrap();
        let cfg = Config::resolve(Cli::default(), file).unwrap();
        // Wildcard `a.`: two components, the first `a`.
        assert!(cfg.history_rule("r", "a.x").is_some());
        assert!(cfg.history_rule("r", "a").is_none() && cfg.history_rule("r", "a.x.y").is_none());
        let file: File = toml::from_str(&history("prefix")).unwrap();
        let cfg = Config::resolve(Cli::default(), file).unwrap();
        assert_eq!(cfg.history_rule("r", "a.x").map(|h| h.limit), Some(HISTORY_LIMIT));
    }
}
