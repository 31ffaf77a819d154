//! The connections the server takes: at most `--max-connections` at once (a
//! connection beyond is closed as soon as it is accepted), and each must
//! finish its TLS handshake (when the server has TLS) and begin HTTP/2 — its
//! 24-byte preface and a first frame header — within
//! `--handshake-timeout-secs` of being accepted, or it is closed. A
//! connection that stalls later is HTTP/2 keepalive's business: a peer that
//! does not answer a ping within `--keepalive-secs` is dropped.
//!
//! TLS handshakes run each in a task of its own, so that a slow one holds
//! only its own connection slot, never the accepting of others. A verified
//! client certificate's subject travels with the connection ([`PeerInfo`])
//! to the access layer, where it may name an identity.
//!
//! Depends on tokio, tokio-rustls, `tls`, `auth::Subject` and tonic's
//! transport types.

use super::tls::Tls;
use crate::auth::Subject;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{Connected, TcpIncoming};

/// The HTTP/2 client preface and the header of its first frame (SETTINGS).
const HANDSHAKE_BYTES: usize = 24 + 9;

/// Connections whose TLS handshake is done, waiting for the server to take
/// them: it takes them as fast as they come, so a few suffice.
const HANDSHAKEN_QUEUE: usize = 64;

/// Settings of the connection guard.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
}

/// Who is at the other end of a connection: what every request of it
/// carries in its extensions.
#[derive(Clone, Debug)]
pub(crate) struct PeerInfo {
    pub remote: Option<SocketAddr>,
    /// The subject of the client certificate the TLS handshake verified.
    pub client: Option<Arc<Subject>>,
}

/// A stream of accepted connections, as tonic takes it.
pub(crate) type Accepted = Pin<Box<dyn Stream<Item = io::Result<Conn>> + Send>>;

/// The accepted connections, each holding a slot until it closes; over TLS
/// when `tls` is given.
pub(crate) fn accept(incoming: TcpIncoming, limits: Limits, tls: Option<Arc<Tls>>) -> Accepted {
    // One permit per open connection (or handshake); a connection that
    // finds none is closed at once, so the count never exceeds the setting
    // and nothing waits.
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let take_slot = move |stream: &TcpStream| match Arc::clone(&slots).try_acquire_owned() {
        Ok(slot) => Some(slot),
        Err(_) => {
            tracing::debug!(
                peer = ?stream.peer_addr().ok(),
                max = limits.max_connections,
                "refused a connection: --max-connections are open"
            );
            None
        }
    };
    let Some(tls) = tls else {
        return Box::pin(incoming.filter_map(move |accepted| match accepted {
            Err(e) => Some(Err(e)),
            Ok(stream) => {
                let slot = take_slot(&stream)?;
                let deadline = Instant::now() + limits.handshake_timeout;
                let peer = PeerInfo {
                    remote: stream.peer_addr().ok(),
                    client: None,
                };
                Some(Ok(Conn::new(Io::Plain(stream), slot, deadline, peer)))
            }
        }));
    };
    // Handshaken connections, in the order their handshakes finish.
    let (tx, rx) = mpsc::channel(HANDSHAKEN_QUEUE);
    tokio::spawn(async move {
        let mut incoming = incoming;
        loop {
            let next = tokio::select! {
                // The server stopped taking connections: stop accepting.
                _ = tx.closed() => return,
                next = incoming.next() => next,
            };
            let stream = match next {
                None => return,
                Some(Err(e)) => {
                    if tx.send(Err(e)).await.is_err() {
                        return;
                    }
                    continue;
                }
                Some(Ok(stream)) => stream,
            };
            let Some(slot) = take_slot(&stream) else {
                continue;
            };
            let deadline = Instant::now() + limits.handshake_timeout;
            let acceptor = tls.acceptor();
            let tx = tx.clone();
            tokio::spawn(async move {
                let remote = stream.peer_addr().ok();
                let tls_stream = match tokio::time::timeout_at(deadline, acceptor.accept(stream))
                    .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(peer = ?remote, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(peer = ?remote, "no TLS handshake within --handshake-timeout-secs");
                        return;
                    }
                };
                let client = tls_stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .and_then(|leaf| match Subject::of_certificate(leaf) {
                        Ok(s) => Some(Arc::new(s)),
                        Err(e) => {
                            tracing::debug!(peer = ?remote, error = %e, "client certificate without a readable subject");
                            None
                        }
                    });
                let peer = PeerInfo { remote, client };
                let conn = Conn::new(Io::Tls(Box::new(tls_stream)), slot, deadline, peer);
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// A connection that holds its slot and must begin HTTP/2 in time.
pub(crate) struct Conn {
    io: Io,
    /// Given back when the connection closes.
    _slot: OwnedSemaphorePermit,
    /// Until the handshake's bytes have arrived: how many have, and the
    /// timer that closes the connection if the rest do not come in time.
    handshake: Option<(usize, Pin<Box<tokio::time::Sleep>>)>,
    peer: PeerInfo,
}

impl Conn {
    fn new(io: Io, slot: OwnedSemaphorePermit, deadline: Instant, peer: PeerInfo) -> Conn {
        Conn {
            io,
            _slot: slot,
            handshake: Some((0, Box::pin(tokio::time::sleep_until(deadline)))),
            peer,
        }
    }
}

macro_rules! io {
    ($self:ident, $s:ident => $e:expr) => {
        match &mut $self.io {
            Io::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Io::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some((_, timer)) = self.handshake.as_mut() {
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no HTTP/2 handshake within --handshake-timeout-secs",
                )));
            }
        }
        let before = buf.filled().len();
        let polled = io!(self, s => s.poll_read(cx, buf));
        if let (Poll::Ready(Ok(())), Some((seen, _))) = (&polled, self.handshake.as_mut()) {
            *seen += buf.filled().len() - before;
            if *seen >= HANDSHAKE_BYTES {
                self.handshake = None;
            }
        }
        polled
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        io!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        io!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        io!(self, s => s.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        io!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}
