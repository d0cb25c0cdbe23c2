//! WAMP v2: the message codec (the `fennec-wamp` crate, shared with the
//! client library), URI rules (pure), and the session layer.
pub use fennec_wamp::{elements, message};
pub mod session;
pub mod uri;
