//! MQTT 3.1.1 and 5 on the shared routing core.
//!
//! - `codec.rs`: packets, pure (mqttbytes underneath for decoding).
//! - `topic.rs`: MQTT topics and filters <-> core topics and keys.
//! - `payload.rs`: MQTT bytes <-> WAMP args/kwargs.
//! - `registry.rs`: which worker holds each client ID's session (takeover).
//! - `session.rs`: packets -> core operations, deliveries -> packets.

pub mod codec;
pub mod payload;
pub mod registry;
pub mod session;
pub mod topic;
