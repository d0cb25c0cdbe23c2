//! One client connection: the socket, the bytes not yet parsed, and the
//! bounded outbound queue. No protocol logic lives here.
//!
//! Memory: an idle connection owns no buffers. Reads go into the worker's
//! scratch buffer; only the tail of a partial frame is copied into the
//! connection's own `input`, which is freed again once it is consumed. The
//! outbound queue copies small frames back to back into chunks lent by the
//! worker's `ChunkPool` (returned once written: no allocation per frame,
//! one iovec for many frames) and holds large ones as shared `Bytes`, so a
//! large fan-out EVENT sits once in memory however many subscribers queue
//! it.

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

/// A frame to queue: bytes to copy (the queue's chunks take small ones
/// without an allocation), or shared bytes (one fan-out EVENT, kept once
/// however many queues hold it).
#[derive(Clone, Copy)]
pub enum Frame<'a> {
    Slice(&'a [u8]),
    Shared(&'a Bytes),
}

impl Frame<'_> {
    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> &[u8] {
        match self {
            Frame::Slice(b) => b,
            Frame::Shared(b) => b,
        }
    }

    /// The frame as owned shared bytes (a copy for a slice).
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Frame::Slice(b) => Bytes::copy_from_slice(b),
            Frame::Shared(b) => Bytes::clone(b),
        }
    }
}

/// Frames up to this size are copied into a chunk; larger ones are queued
/// as shared `Bytes` (a fan-out to many queues copies no large payload).
pub const COPY_MAX: usize = 512;

/// Most bytes in one chunk: many small frames, written with one iovec. A
/// chunk starts at `FIRST_CHUNK` and doubles as it fills, so a connection
/// sent one reply holds half a KiB, not 16, until it is written (a fan-out
/// to thousands of connections queues a chunk on each).
pub const CHUNK: usize = 16 * 1024;
const FIRST_CHUNK: usize = COPY_MAX;

/// Spare chunks a worker keeps for its connections' queues (at most 64
/// times `CHUNK`, 1 MiB): a chunk written out goes back here, so the steady
/// state allocates none, and an idle connection holds no chunk.
const POOL_MAX: usize = 64;

/// Spare queue rings (a queue's `segs` and `lens`) a worker keeps: an
/// emptied queue gives its rings back (at most `RELEASES` times an
/// epoch, then at the sweep: `OutQueue::write_to`, `sweep`), so an idle connection holds none, and the next
/// connection to queue a frame takes them without allocating.
const RINGS_MAX: usize = 256;
/// Largest rings kept as spares (segments, frames): the pool holds at
/// most 256 × (0.5 + 1) KiB. A queue emptied after a deeper burst frees
/// its rings.
const RING_SEGS_MAX: usize = 16;
const RING_LENS_MAX: usize = 256;

/// A worker's spare chunks and queue rings.
pub struct ChunkPool {
    free: Vec<Vec<u8>>,
    rings: Vec<(VecDeque<Seg>, VecDeque<u32>)>,
    /// Advanced by `next_epoch` (once a second); never 0.
    epoch: u8,
}

impl Default for ChunkPool {
    fn default() -> ChunkPool {
        ChunkPool { free: Vec::new(), rings: Vec::new(), epoch: 1 }
    }
}

impl ChunkPool {
    fn get(&mut self) -> Vec<u8> {
        self.free.pop().unwrap_or_else(|| Vec::with_capacity(FIRST_CHUNK))
    }

    fn put(&mut self, mut chunk: Vec<u8>) {
        debug_assert!(chunk.capacity() <= CHUNK, "a chunk grows by doubling up to CHUNK");
        if self.free.len() < POOL_MAX {
            chunk.clear();
            self.free.push(chunk);
        }
    }

    pub fn spare(&self) -> usize {
        self.free.len()
    }

    /// A new epoch (`Shard::tick`, once a second): each queue that empties
    /// may give its rings back `RELEASES` times again (`OutQueue::write_to`).
    pub fn next_epoch(&mut self) {
        self.epoch = self.epoch.wrapping_add(1).max(1);
    }

    /// Spare rings for an empty queue about to take a frame (new ones,
    /// which allocate on the first push, when the pool has none).
    fn get_rings(&mut self) -> (VecDeque<Seg>, VecDeque<u32>) {
        self.rings.pop().unwrap_or_default()
    }

    fn put_rings(&mut self, segs: VecDeque<Seg>, lens: VecDeque<u32>) {
        debug_assert!(segs.is_empty() && lens.is_empty(), "only an empty queue's rings are spare");
        let kept = segs.capacity() <= RING_SEGS_MAX && lens.capacity() <= RING_LENS_MAX;
        if kept && self.rings.len() < RINGS_MAX {
            self.rings.push((segs, lens));
        }
    }
}

/// A stretch of the queue: copied small frames back to back, or one large
/// shared frame.
enum Seg {
    Chunk(Vec<u8>),
    Shared(Bytes),
}

impl Seg {
    fn bytes(&self) -> &[u8] {
        match self {
            Seg::Chunk(c) => c,
            Seg::Shared(b) => b,
        }
    }
}

/// Frames waiting for the socket, in order. Bounded by the caller (see
/// `Shard::send_event`): `bytes` and `messages` are exact.
#[derive(Default)]
pub struct OutQueue {
    segs: VecDeque<Seg>,
    /// Each queued frame's length, oldest first (`messages`, and `pop`).
    lens: VecDeque<u32>,
    /// Bytes of `segs[0]` already written (a segment is a chunk, or one
    /// frame: under 4 GiB).
    head: u32,
    /// Bytes of the frame `lens[0]` already written.
    frame_head: u32,
    /// Bytes queued and not yet written.
    bytes: usize,
    /// The pool's epoch in which this queue last gave its rings back
    /// (0: never), and how often it did then: an emptied queue does so at
    /// most `RELEASES` times an epoch, and the sweep (`sweep`) takes
    /// those a queue kept and then left idle.
    epoch: u8,
    released: u8,
}

/// How often an emptied queue gives its rings back in one epoch (a
/// second): enough for a connection's opening replies (the WebSocket
/// upgrade, WELCOME, a SUBSCRIBED), few enough that a busy connection,
/// emptied by every flush, does not allocate them each time.
const RELEASES: u8 = 3;

/// Most slices handed to one `writev`.
const MAX_IOV: usize = 64;

impl OutQueue {
    /// Queues a frame: copied into the last chunk if small, else shared.
    pub fn push(&mut self, frame: Frame, pool: &mut ChunkPool) {
        let n = frame.len();
        assert!(n <= u32::MAX as usize, "a frame over 4 GiB");
        if self.lens.capacity() == 0 && self.segs.capacity() == 0 {
            debug_assert!(self.is_empty());
            (self.segs, self.lens) = pool.get_rings();
        }
        if n <= COPY_MAX {
            let room = matches!(self.segs.back(), Some(Seg::Chunk(c)) if c.len() + n <= CHUNK);
            if !room {
                self.segs.push_back(Seg::Chunk(pool.get()));
            }
            let Some(Seg::Chunk(c)) = self.segs.back_mut() else { unreachable!("a chunk was pushed") };
            c.extend_from_slice(frame.bytes());
        } else {
            self.segs.push_back(Seg::Shared(frame.to_bytes()));
        }
        self.lens.push_back(n as u32);
        self.bytes += n;
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn messages(&self) -> usize {
        self.lens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Takes the next whole frame off the queue (none partly written; for
    /// a connection without a socket, whose queue the tests read).
    pub fn pop(&mut self, pool: &mut ChunkPool) -> Option<Bytes> {
        assert_eq!(self.frame_head, 0, "a frame is partly written");
        let n = self.lens.pop_front()? as usize;
        self.bytes -= n;
        let first = self.segs.front().expect("a frame is in a segment").bytes();
        let head = self.head as usize;
        let frame = Bytes::copy_from_slice(&first[head..head + n]);
        self.head += n as u32;
        if self.head as usize == first.len() {
            self.pop_seg(pool);
        }
        Some(frame)
    }

    /// The queue is empty: its rings go back to the pool (or are freed),
    /// so an idle connection holds no queue memory.
    fn release_rings(&mut self, pool: &mut ChunkPool) {
        debug_assert!(self.segs.is_empty() && self.lens.is_empty() && self.bytes == 0);
        if self.lens.capacity() > 0 || self.segs.capacity() > 0 {
            pool.put_rings(std::mem::take(&mut self.segs), std::mem::take(&mut self.lens));
        }
    }

    /// The periodic sweep: an empty queue that kept its rings (it emptied
    /// more than `RELEASES` times in the last epoch, then went quiet)
    /// gives them back.
    pub fn sweep(&mut self, pool: &mut ChunkPool) {
        if self.is_empty() {
            self.release_rings(pool);
        }
    }

    fn pop_seg(&mut self, pool: &mut ChunkPool) {
        self.head = 0;
        if let Some(Seg::Chunk(c)) = self.segs.pop_front() {
            pool.put(c);
        }
    }

    /// Writes what the socket takes, in vectored writes. Returns the number of
    /// bytes written; stops at `WouldBlock` or when the queue is empty.
    pub fn write_to(&mut self, w: &mut impl Write, pool: &mut ChunkPool) -> io::Result<usize> {
        let mut total = 0;
        while !self.segs.is_empty() {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            for (i, s) in self.segs.iter().take(MAX_IOV).enumerate() {
                iov[i] = IoSlice::new(if i == 0 { &s.bytes()[self.head as usize..] } else { s.bytes() });
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
            self.consumed(written, pool);
        }
        if self.segs.is_empty() && self.lens.capacity() + self.segs.capacity() > 0 {
            // Emptied: the rings go back now (an idle connection, after
            // its last reply, holds none), or, if this queue already gave
            // them back often this epoch (a busy one, emptied by every
            // flush), at the next sweep should it still be empty then.
            if self.epoch != pool.epoch {
                (self.epoch, self.released) = (pool.epoch, 0);
            }
            if self.released < RELEASES {
                self.released += 1;
                self.release_rings(pool);
            }
        }
        Ok(total)
    }

    /// `written` more bytes went out: whole segments and frames are done.
    fn consumed(&mut self, written: usize, pool: &mut ChunkPool) {
        self.bytes -= written;
        let mut left = written;
        while left > 0 {
            let first = self.segs[0].bytes().len() - self.head as usize;
            if left >= first {
                left -= first;
                self.pop_seg(pool);
            } else {
                self.head += left as u32;
                left = 0;
            }
        }
        let mut done = self.frame_head as usize + written;
        while let Some(&n) = self.lens.front() {
            if done < n as usize {
                break;
            }
            done -= n as usize;
            self.lens.pop_front();
        }
        self.frame_head = done as u32;
        debug_assert_eq!(self.lens.is_empty(), self.bytes == 0);
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
    /// A fragmented WebSocket message being reassembled (rare: boxed).
    pub fragmented: Option<Box<Fragmented>>,
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

/// A WebSocket message whose first frames have come, and not its last
/// (boxed in `Conn`: 8 bytes for every connection, not a `Vec`'s 24).
pub struct Fragmented {
    pub data: Vec<u8>,
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

// One per connection, in the worker's slab (perf/RESULTS.md, idle sessions).
const _: () = assert!(std::mem::size_of::<Conn>() <= 280, "box what only some connections use");

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
            fragmented: None,
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

    /// Frames of `sizes`, each filled with its index.
    fn frames(sizes: impl Iterator<Item = usize>) -> Vec<Bytes> {
        sizes.enumerate().map(|(i, n)| Bytes::from(vec![i as u8; n])).collect()
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let mut pool = ChunkPool::default();
        let mut q = OutQueue::default();
        let mut expect = Vec::new();
        // Small frames (copied), large ones (shared) and chunk boundaries.
        let all = frames((0..300).map(|i| if i % 50 == 7 { COPY_MAX + 1 + i } else { (i % 7) * 60 + 1 }));
        for (i, f) in all.iter().enumerate() {
            expect.extend_from_slice(f);
            if i % 2 == 0 {
                q.push(Frame::Shared(f), &mut pool);
            } else {
                q.push(Frame::Slice(f), &mut pool);
            }
        }
        assert_eq!(q.messages(), all.len());
        assert_eq!(q.bytes(), expect.len());
        let mut w = Trickle { got: Vec::new(), cap: 5, calls: 0, block_after: 3 };
        assert_eq!(q.write_to(&mut w, &mut pool).unwrap(), 15);
        assert_eq!(q.bytes(), expect.len() - 15);
        // 15 bytes: the first frame (1 byte) and part of the second (61).
        assert_eq!(q.messages(), all.len() - 1);
        w.block_after = usize::MAX;
        w.cap = 1000;
        q.write_to(&mut w, &mut pool).unwrap();
        assert!(q.is_empty());
        assert_eq!((q.messages(), q.bytes()), (0, 0));
        assert_eq!(w.got, expect);
        assert!(pool.spare() > 0, "written chunks go back to the pool");
    }

    #[test]
    fn small_frames_share_a_chunk_and_pop_one_by_one() {
        let mut pool = ChunkPool::default();
        let mut q = OutQueue::default();
        let all = frames([3, 700, 10, 10, COPY_MAX, 1].into_iter());
        for f in &all {
            q.push(Frame::Slice(f), &mut pool);
        }
        // Chunk [3], shared [700], chunk [10, 10, 512, 1].
        assert_eq!(q.segs.len(), 3);
        let got: Vec<Bytes> = std::iter::from_fn(|| q.pop(&mut pool)).collect();
        assert_eq!(got, all);
        assert_eq!(pool.spare(), 2);
        // A chunk full to the byte starts the next one.
        for _ in 0..CHUNK / COPY_MAX + 1 {
            q.push(Frame::Slice(&[7; COPY_MAX]), &mut pool);
        }
        assert_eq!(q.segs.len(), 2);
        assert_eq!(pool.spare(), 0);
    }

    #[test]
    fn an_emptied_queue_gives_its_rings_back() {
        let mut pool = ChunkPool::default();
        let mut q = OutQueue::default();
        let mut w = Trickle { got: Vec::new(), cap: usize::MAX, calls: 0, block_after: usize::MAX };
        let held = |q: &OutQueue| q.segs.capacity() + q.lens.capacity() > 0;
        q.push(Frame::Slice(b"welcome"), &mut pool);
        q.write_to(&mut w, &mut pool).unwrap();
        // Idle after its first reply: no rings held, one spare pair.
        assert!(!held(&q));
        assert_eq!(pool.rings.len(), 1);
        // The next frame takes them again; emptied `RELEASES` times in
        // one epoch (a busy queue), it keeps them.
        for _ in 1..RELEASES {
            q.push(Frame::Slice(b"event"), &mut pool);
            assert!(pool.rings.is_empty() && held(&q));
            q.write_to(&mut w, &mut pool).unwrap();
            assert!(!held(&q) && pool.rings.len() == 1);
        }
        q.push(Frame::Slice(b"event"), &mut pool);
        q.write_to(&mut w, &mut pool).unwrap();
        assert!(held(&q) && pool.rings.is_empty());
        // The sweep takes them from a queue that went quiet.
        pool.next_epoch();
        q.sweep(&mut pool);
        assert!(!held(&q));
        assert_eq!(pool.rings.len(), 1);
        // A partly written queue keeps them, at the sweep too.
        q.push(Frame::Slice(b"event"), &mut pool);
        w.cap = 2;
        w.calls = 0;
        w.block_after = 1;
        q.write_to(&mut w, &mut pool).unwrap();
        q.sweep(&mut pool);
        assert!(held(&q) && pool.rings.is_empty());
        // In a new epoch, rings grown past the spare bound are freed, not kept.
        w.cap = usize::MAX;
        w.block_after = usize::MAX;
        for _ in 0..RING_LENS_MAX + 1 {
            q.push(Frame::Slice(b"x"), &mut pool);
        }
        pool.next_epoch();
        q.write_to(&mut w, &mut pool).unwrap();
        assert!(!held(&q) && pool.rings.is_empty());
        let events = b"event".repeat(RELEASES as usize + 1);
        assert_eq!(w.got, [&b"welcome"[..], &events, &[b'x'; RING_LENS_MAX + 1]].concat());
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
