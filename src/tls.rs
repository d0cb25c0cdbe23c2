//! TLS on the workers' connections (rustls): the server configuration
//! from PEM files, and the non-blocking read and write steps a worker runs
//! in its loop for a TLS connection, in place of plain socket reads and
//! writes. No thread per connection and no blocking: rustls is a state
//! machine fed with whatever the socket has, and drained into whatever
//! the socket takes.

use crate::conn::OutQueue;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConnection;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

/// Plaintext rustls buffers for one connection before the socket takes
/// it (the outbound queue holds the rest).
const PLAINTEXT_BUFFER: usize = 64 * 1024;

/// A server configuration from a certificate chain and a private key,
/// both PEM (TLS 1.2 and 1.3).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &read(cert)?[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate chain: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", cert.display()));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &read(key)?[..])
        .map_err(|e| format!("{}: not a PEM private key: {e}", key.display()))?
        .ok_or_else(|| format!("{}: no private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS: the certificate and key do not go together: {e}"))?;
    Ok(Arc::new(config))
}

/// A new server side of a TLS connection.
pub fn accept(config: &Arc<rustls::ServerConfig>) -> Result<Box<ServerConnection>, String> {
    let mut c = ServerConnection::new(config.clone()).map_err(|e| format!("TLS: {e}"))?;
    c.set_buffer_limit(Some(PLAINTEXT_BUFFER));
    Ok(Box::new(c))
}

/// Reads plaintext into `out`: what rustls has decrypted, else what the
/// socket has (decrypted on the way). `Ok(0)`: the peer closed;
/// `WouldBlock`: nothing more now. A TLS error (a bad handshake, a
/// plaintext client) sends rustls's alert and is `InvalidData`.
pub fn read(tls: &mut ServerConnection, stream: &mut (impl Read + Write), out: &mut [u8]) -> io::Result<usize> {
    loop {
        match tls.reader().read(out) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        match tls.read_tls(stream) {
            Ok(0) => return Ok(0),
            Ok(_) => {
                if let Err(e) = tls.process_new_packets() {
                    let _ = tls.write_tls(stream);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// rustls's plaintext writer, where a full buffer is `WouldBlock` (for
/// `OutQueue::write_to`), not a zero-length write.
struct Plain<'a>(rustls::Writer<'a>);

impl Write for Plain<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self.0.write(b)? {
            0 if !b.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self.0.write_vectored(bufs)? {
            0 if bufs.iter().any(|b| !b.is_empty()) => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Moves the queue's frames through rustls to the socket, as far as the
/// socket takes them. Returns the TLS bytes written; what is left waits
/// for a writable event (`wants_write`, or frames still queued).
pub fn write(tls: &mut ServerConnection, out: &mut OutQueue, stream: &mut impl Write) -> io::Result<usize> {
    let mut total = 0;
    loop {
        if !out.is_empty() {
            out.write_to(&mut Plain(tls.writer()))?;
        }
        if !tls.wants_write() {
            return Ok(total);
        }
        match tls.write_tls(stream) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
