//! The worker's side of WAMP over RawSocket: the handshake on a new
//! connection, then frames into WAMP messages (the codec is
//! `crate::rawsocket`; the session layer is the same as for WebSocket).

use super::Worker;
use crate::conn::{Buf, Proto};
use crate::metrics::CloseReason;
use crate::rawsocket::{self, Handshake, Kind};
use crate::wamp::session::{Framing, WampConn};

impl Worker {
    /// The client's 4 handshake octets, once they are all there: accept
    /// (the connection speaks WAMP from now on) or refuse and close.
    /// Returns whether input processing goes on.
    pub(super) fn raw_handshake(&mut self, handle: usize, buf: &mut Buf) -> bool {
        let Some(&req) = buf.data().first_chunk::<4>() else { return false };
        buf.consume(4);
        match rawsocket::handshake(req, self.sh.cfg.limits.max_message_size) {
            Handshake::Accept { ser, max_out, reply } => {
                let framing = Framing::RawSocket { max_out };
                self.sh.conns[handle].proto = Proto::Wamp(Box::new(WampConn::new(ser, framing)));
                self.sh.send_control(handle, &reply);
                true
            }
            Handshake::Refuse { reply, .. } => {
                buf.clear();
                self.sh.send_control(handle, &reply);
                self.sh.end_conn(handle, CloseReason::Handshake);
                false
            }
            Handshake::NotRawSocket => {
                buf.clear();
                self.sh.end_conn(handle, CloseReason::Handshake);
                false
            }
        }
    }

    /// One RawSocket frame, if it is all there: a WAMP message, or a PING
    /// (answered with a PONG echoing it). A bad frame fails the connection
    /// (RawSocket has no close frame). Returns whether processing goes on.
    pub(super) fn raw_frame(&mut self, handle: usize, buf: &mut Buf, max: usize) -> bool {
        let mut need = 0;
        let f = match rawsocket::parse(buf.data(), max.min(rawsocket::MAX_LENGTH), &mut need) {
            Ok(Some(f)) => f,
            Ok(None) => {
                if need > buf.capacity() {
                    buf.reserve(need - buf.len());
                }
                return false;
            }
            Err(_) => {
                buf.clear();
                self.sh.close(handle, CloseReason::ProtocolViolation, None);
                return false;
            }
        };
        let payload = &buf.data()[4..f.end];
        match f.kind {
            Kind::Message => {
                self.sh.metrics.counters.messages_in += 1;
                self.sh.conns[handle].stats.msgs_in += 1;
                crate::wamp::session::on_message(&mut self.sh, handle, payload);
            }
            Kind::Ping => {
                let mut pong = rawsocket::prefix(Kind::Pong, payload.len()).to_vec();
                pong.extend_from_slice(payload);
                self.sh.send_control(handle, &pong);
            }
            Kind::Pong => {}
        }
        buf.consume(f.end);
        true
    }
}
