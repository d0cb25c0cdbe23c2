//! Every way an operation can fail.

use fennec_wamp::value::{Dict, Value};
use std::fmt;

/// The result of a client operation.
pub type Result<T> = std::result::Result<T, Error>;

/// A failure: the router's answer (an ERROR or ABORT, by its URI), the
/// connection's, or the client's own.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The socket failed (connect, read or write).
    Io(std::io::Error),
    /// The WebSocket upgrade or framing failed.
    WebSocket(String),
    /// TLS failed: the configuration (a CA or certificate file), or the
    /// handshake (the router's certificate is not trusted, ...).
    Tls(String),
    /// The router broke the protocol (a message that does not decode, or
    /// comes when it must not), or the URL is not one the client speaks.
    Protocol(String),
    /// The router refused the session (ABORT): its reason URI and message.
    Aborted {
        /// The ABORT's reason URI (`wamp.error.no_such_realm`, ...).
        reason: String,
        /// Its details' `message`, if any.
        message: Option<String>,
    },
    /// The session is over (GOODBYE, ABORT, the connection lost); the
    /// operation was not done, or its outcome is unknown.
    Closed,
    /// The connection is lost and being made again (`Options::reconnect`):
    /// the request was not sent; try again later.
    Disconnected,
    /// `wamp.error.no_such_procedure`.
    NoSuchProcedure(Option<String>),
    /// `wamp.error.no_such_subscription`.
    NoSuchSubscription(Option<String>),
    /// `wamp.error.no_such_registration`.
    NoSuchRegistration(Option<String>),
    /// `wamp.error.procedure_already_exists`.
    ProcedureAlreadyExists(Option<String>),
    /// `wamp.error.not_authorized`.
    NotAuthorized(Option<String>),
    /// `wamp.error.invalid_uri`.
    InvalidUri(Option<String>),
    /// `wamp.error.invalid_argument`.
    InvalidArgument(Option<String>),
    /// `wamp.error.canceled`.
    Canceled(Option<String>),
    /// `wamp.error.timeout`.
    Timeout(Option<String>),
    /// Any other error URI: an application's error, or one of the router's
    /// this list does not name, with its arguments.
    Application {
        /// The error URI.
        uri: String,
        /// Its positional arguments.
        args: Vec<Value>,
        /// Its keyword arguments.
        kwargs: Dict,
    },
    /// Arguments that do not convert to or from the Rust types asked for.
    Serde(String),
}

impl Error {
    /// The error of an ERROR message with `uri` and its arguments.
    pub(crate) fn from_uri(uri: String, args: Vec<Value>, kwargs: Dict) -> Error {
        let message = args.first().and_then(|v| v.as_str()).map(str::to_owned);
        match uri.as_str() {
            "wamp.error.no_such_procedure" => Error::NoSuchProcedure(message),
            "wamp.error.no_such_subscription" => Error::NoSuchSubscription(message),
            "wamp.error.no_such_registration" => Error::NoSuchRegistration(message),
            "wamp.error.procedure_already_exists" => Error::ProcedureAlreadyExists(message),
            "wamp.error.not_authorized" => Error::NotAuthorized(message),
            "wamp.error.invalid_uri" => Error::InvalidUri(message),
            "wamp.error.invalid_argument" => Error::InvalidArgument(message),
            "wamp.error.canceled" => Error::Canceled(message),
            "wamp.error.timeout" => Error::Timeout(message),
            _ => Error::Application { uri, args, kwargs },
        }
    }

    /// The message of an error the router named by URI, if it gave one.
    pub(crate) fn message(&self) -> Option<&str> {
        match self {
            Error::NoSuchProcedure(m)
            | Error::NoSuchSubscription(m)
            | Error::NoSuchRegistration(m)
            | Error::ProcedureAlreadyExists(m)
            | Error::NotAuthorized(m)
            | Error::InvalidUri(m)
            | Error::InvalidArgument(m)
            | Error::Canceled(m)
            | Error::Timeout(m) => m.as_deref(),
            _ => None,
        }
    }

    /// The WAMP error URI this error stands for, if it is one.
    pub fn uri(&self) -> Option<&str> {
        Some(match self {
            Error::NoSuchProcedure(_) => "wamp.error.no_such_procedure",
            Error::NoSuchSubscription(_) => "wamp.error.no_such_subscription",
            Error::NoSuchRegistration(_) => "wamp.error.no_such_registration",
            Error::ProcedureAlreadyExists(_) => "wamp.error.procedure_already_exists",
            Error::NotAuthorized(_) => "wamp.error.not_authorized",
            Error::InvalidUri(_) => "wamp.error.invalid_uri",
            Error::InvalidArgument(_) => "wamp.error.invalid_argument",
            Error::Canceled(_) => "wamp.error.canceled",
            Error::Timeout(_) => "wamp.error.timeout",
            Error::Application { uri, .. } => uri,
            Error::Aborted { reason, .. } => reason,
            _ => return None,
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O: {e}"),
            Error::WebSocket(e) => write!(f, "WebSocket: {e}"),
            Error::Tls(e) => write!(f, "TLS: {e}"),
            Error::Protocol(e) => write!(f, "protocol: {e}"),
            Error::Aborted { reason, message } => {
                write!(f, "session refused: {reason}")?;
                message.iter().try_for_each(|m| write!(f, ": {m}"))
            }
            Error::Closed => f.write_str("the session is closed"),
            Error::Disconnected => f.write_str("the connection is lost; reconnecting"),
            Error::Application { uri, args, .. } => match args.first().and_then(|v| v.as_str()) {
                Some(m) => write!(f, "{uri}: {m}"),
                None => f.write_str(uri),
            },
            Error::Serde(e) => write!(f, "arguments: {e}"),
            other => {
                let uri = other.uri().unwrap_or("error");
                match other.message() {
                    Some(m) => write!(f, "{uri}: {m}"),
                    None => f.write_str(uri),
                }
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::Io(e)
    }
}
