//! WAMP v2: the message codec and URI rules (pure), and the session layer.
pub mod elements;
pub mod message;
pub mod session;
pub mod uri;
