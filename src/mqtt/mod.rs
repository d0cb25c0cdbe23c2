//! MQTT 3.1.1 and 5 on the shared routing core.
//!
//! - `codec.rs`: packets, pure (mqttbytes underneath for decoding).
//! - `check.rs`: the strict pre-check of every client packet (strings, v5
//!   properties, reserved bits), pure.
//! - `topic.rs`: MQTT topics and filters <-> core topics and keys.
//! - `payload.rs`: MQTT bytes <-> WAMP args/kwargs.
//! - `registry.rs`: which worker holds each client ID's session (takeover).
//! - `session.rs`: packets -> core operations, deliveries -> packets.
//! - `sys.rs`: the `$SYS` topics, gathered from every worker by worker 0.

pub mod check;
pub mod codec;
pub mod payload;
pub mod registry;
pub mod session;
pub mod sys;
pub mod topic;
