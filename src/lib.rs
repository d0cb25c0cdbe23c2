//! Fennec: a thread-per-core WAMP v2 router. See ARCHITECTURE.md for the map.

pub use fennec_wamp::{payload, rawsocket, value};
pub mod admin;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod inspect;
pub mod logging;
pub mod metrics;
pub mod mqtt;
pub mod router;
pub mod server;
pub mod store;
pub mod tables;
pub mod tls;
pub mod wamp;
pub mod worker;
pub mod ws;
