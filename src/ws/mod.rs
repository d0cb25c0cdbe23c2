//! WebSocket: the opening handshake and framing, both pure.
pub mod frame;
pub mod handshake;
