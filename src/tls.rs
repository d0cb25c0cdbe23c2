//! TLS on the workers' connections (rustls): the server configuration
//! from PEM files, and the non-blocking read and write steps a worker runs
//! in its loop for a TLS connection, in place of plain socket reads and
//! writes. No thread per connection and no blocking: rustls is a state
//! machine fed with whatever the socket has, and drained into whatever
//! the socket takes.

use crate::conn::{ChunkPool, OutQueue};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConnection;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

/// Plaintext rustls buffers for one connection before the socket takes
/// it (the outbound queue holds the rest).
const PLAINTEXT_BUFFER: usize = 64 * 1024;

/// A server configuration from a certificate chain and a private key,
/// both PEM (TLS 1.2 and 1.3); with `client_ca`, clients may present a
/// certificate that CA signed (verified; clients without one are let in,
/// unauthenticated by TLS).
pub fn server_config(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Arc<rustls::ServerConfig>, String> {
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
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut &read(ca)?[..]) {
                let c = c.map_err(|e| format!("{}: not a PEM certificate: {e}", ca.display()))?;
                roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS: the certificate and key do not go together: {e}"))?;
    Ok(Arc::new(config))
}

/// The common name of the client's verified certificate, if it sent one.
pub fn peer_name(tls: &ServerConnection) -> Option<String> {
    let cert = tls.peer_certificates()?.first()?;
    let (_, x509) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = x509.subject().iter_common_name().next()?.as_str().ok()?.to_owned();
    Some(cn)
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
pub fn write(
    tls: &mut ServerConnection,
    out: &mut OutQueue,
    stream: &mut impl Write,
    pool: &mut ChunkPool,
) -> io::Result<usize> {
    let mut total = 0;
    loop {
        if !out.is_empty() {
            out.write_to(&mut Plain(tls.writer()), pool)?;
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
