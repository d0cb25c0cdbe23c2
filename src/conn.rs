//! One client connection: the socket, the bytes not yet parsed, and the
//! bounded outbound queue. No protocol logic lives here.
//!
//! Memory: an idle connection owns no buffers. Reads go into the worker's
//! scratch buffer; only the tail of a partial frame is copied into the
//! connection's own `input`, which is freed again once it is consumed. The
//! outbound queue holds shared `Bytes`, so one framed EVENT sits once in
//! memory however many local subscribers queue it.

use crate::wamp::session::WampConn;
use bytes::Bytes;
use mio::net::TcpStream;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::time::Instant;

/// A byte buffer with a filled window `[start, end)`.
#[derive(Default)]
pub struct Buf {
    mem: Vec<u8>,
    start: usize,
    end: usize,
}

impl Buf {
    pub fn with_capacity(n: usize) -> Buf {
        Buf { mem: vec![0; n], start: 0, end: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn capacity(&self) -> usize {
        self.mem.len()
    }

    pub fn data(&self) -> &[u8] {
        &self.mem[self.start..self.end]
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.mem[self.start..self.end]
    }

    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.len());
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Makes room for at least `want` more bytes after the data, moving the
    /// data to the front and growing the buffer when needed.
    pub fn reserve(&mut self, want: usize) {
        if self.mem.len() - self.end >= want {
            return;
        }
        if self.start > 0 {
            self.mem.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.mem.len() - self.end < want {
            self.mem.resize(self.end + want, 0);
        }
    }

    pub fn spare_mut(&mut self) -> &mut [u8] {
        &mut self.mem[self.end..]
    }

    pub fn filled(&mut self, n: usize) {
        assert!(self.end + n <= self.mem.len());
        self.end += n;
    }

    pub fn append(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        self.mem[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Frees the memory (for connections that go idle).
    pub fn release(&mut self) {
        *self = Buf::default();
    }
}

/// Frames waiting for the socket. Bounded by the caller (see `Conn::over`).
#[derive(Default)]
pub struct OutQueue {
    frames: VecDeque<Bytes>,
    /// Bytes of `frames[0]` already written.
    head: usize,
    /// Bytes queued and not yet written.
    bytes: usize,
}

/// Most slices handed to one `writev`.
const MAX_IOV: usize = 64;

impl OutQueue {
    pub fn push(&mut self, frame: Bytes) {
        self.bytes += frame.len();
        self.frames.push_back(frame);
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn messages(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Takes the next whole frame off the queue (none partly written).
    pub fn pop(&mut self) -> Option<Bytes> {
        debug_assert_eq!(self.head, 0, "a frame is partly written");
        let f = self.frames.pop_front()?;
        self.bytes -= f.len();
        Some(f)
    }

    /// Writes what the socket takes, in vectored writes. Returns the number of
    /// bytes written; stops at `WouldBlock` or when the queue is empty.
    pub fn write_to(&mut self, w: &mut impl Write) -> io::Result<usize> {
        let mut total = 0;
        while !self.frames.is_empty() {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            for (i, f) in self.frames.iter().take(MAX_IOV).enumerate() {
                iov[i] = IoSlice::new(if i == 0 { &f[self.head..] } else { f });
                n += 1;
            }
            let written = match w.write_vectored(&iov[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            total += written;
            self.bytes -= written;
            let mut left = written;
            while left > 0 {
                let first = self.frames[0].len() - self.head;
                if left >= first {
                    left -= first;
                    self.head = 0;
                    self.frames.pop_front();
                } else {
                    self.head += left;
                    left = 0;
                }
            }
        }
        if self.frames.is_empty() && self.frames.capacity() > 256 {
            // A burst is over: give the memory back.
            self.frames = VecDeque::new();
        }
        Ok(total)
    }
}

/// What the connection speaks.
pub enum Proto {
    /// Waiting for the HTTP upgrade request.
    Http,
    /// Waiting for the 4-octet RawSocket handshake.
    RawHandshake,
    Wamp(Box<WampConn>),
    /// MQTT over TCP, or over WebSocket after the upgrade.
    Mqtt(Box<crate::mqtt::session::MqttConn>),
    /// Ended: flushing what is queued, then lingering until the peer closes.
    Closed,
}

pub struct Conn {
    /// The socket; none for a detached connection (a session driven
    /// without sockets, in tests: what it is sent stays in `out`).
    pub stream: Option<TcpStream>,
    /// The peer's address, read once when the connection is accepted.
    pub peer: Option<std::net::SocketAddr>,
    /// TLS (a wss:// or MQTT-over-TLS listener): bytes to and from the
    /// socket go through it.
    pub tls: Option<Box<rustls::ServerConnection>>,
    pub proto: Proto,
    /// Unparsed input: the tail of a partial frame (empty when idle).
    pub input: Buf,
    /// A fragmented WebSocket message being reassembled.
    pub fragments: Vec<u8>,
    pub fragment_opcode: Option<crate::ws::frame::Opcode>,
    pub out: OutQueue,
    /// When the outbound queue first refused an event, if it still is full.
    pub over_since: Option<Instant>,
    /// Queued for a flush at the end of this loop iteration.
    pub dirty: bool,
    /// Queued in the worker's resume list.
    pub resume: bool,
    /// Input is not read while set (an MQTT CONNECT waits for its session).
    pub paused: bool,
    /// Set when the connection is closed: it is dropped at the peer's EOF or
    /// at this deadline, whichever comes first, even if its peer never reads
    /// what is still queued.
    pub close_deadline: Option<Instant>,
    /// The write side is shut down (everything queued was written).
    pub write_shut: bool,
    /// Distinguishes this connection from a later one in the same slab slot.
    pub serial: u64,
    /// What this connection's current session has sent and been sent
    /// (for the console, and added to its realm's totals when it ends).
    pub stats: ConnStats,
}

/// Messages through one connection since its session began.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnStats {
    /// Messages from the client (WAMP messages, MQTT packets).
    pub msgs_in: u64,
    /// Messages queued to the client.
    pub msgs_out: u64,
    /// Events dropped for this client (queue full, too large).
    pub dropped: u64,
}

impl Conn {
    pub fn new(stream: TcpStream, serial: u64) -> Conn {
        let peer = stream.peer_addr().ok();
        Conn { stream: Some(stream), peer, ..Conn::detached(serial) }
    }

    /// A connection without a socket.
    pub fn detached(serial: u64) -> Conn {
        Conn {
            stream: None,
            peer: None,
            tls: None,
            proto: Proto::Http,
            input: Buf::default(),
            fragments: Vec::new(),
            fragment_opcode: None,
            out: OutQueue::default(),
            over_since: None,
            dirty: false,
            resume: false,
            paused: false,
            close_deadline: None,
            write_shut: false,
            serial,
            stats: ConnStats::default(),
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.proto, Proto::Closed)
    }

    pub fn wamp(&mut self) -> Option<&mut WampConn> {
        match &mut self.proto {
            Proto::Wamp(w) => Some(w),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `cap` bytes per call, then blocks.
    struct Trickle {
        got: Vec<u8>,
        cap: usize,
        calls: usize,
        block_after: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(b)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice]) -> io::Result<usize> {
            if self.calls == self.block_after {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.calls += 1;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.cap - n);
                self.got.extend_from_slice(&b[..take]);
                n += take;
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let mut q = OutQueue::default();
        let mut expect = Vec::new();
        for i in 0..100u8 {
            let f = Bytes::from(vec![i; (i as usize % 7) + 1]);
            expect.extend_from_slice(&f);
            q.push(f);
        }
        let mut w = Trickle { got: Vec::new(), cap: 5, calls: 0, block_after: 3 };
        assert_eq!(q.write_to(&mut w).unwrap(), 15);
        assert_eq!(q.bytes(), expect.len() - 15);
        w.block_after = usize::MAX;
        w.cap = 1000;
        q.write_to(&mut w).unwrap();
        assert!(q.is_empty());
        assert_eq!(w.got, expect);
    }

    #[test]
    fn buf_window() {
        let mut b = Buf::with_capacity(4);
        b.append(b"abcd");
        b.consume(3);
        b.reserve(6);
        assert_eq!(b.data(), b"d");
        assert!(b.capacity() >= 7);
        b.consume(1);
        assert!(b.is_empty());
    }
}
