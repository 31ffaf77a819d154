//! The connections the server takes: at most `--max-connections` at once (a
//! connection beyond is closed as soon as it is accepted), and each must
//! begin HTTP/2 — its 24-byte preface and a first frame header — within
//! `--handshake-timeout-secs`, or it is closed. A connection that stalls
//! later is HTTP/2 keepalive's business: a peer that does not answer a ping
//! within `--keepalive-secs` is dropped.
//!
//! Depends on tokio and tonic's transport types.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{Connected, TcpIncoming};

/// The HTTP/2 client preface and the header of its first frame (SETTINGS).
const HANDSHAKE_BYTES: usize = 24 + 9;

/// Settings of the connection guard.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
}

/// The accepted connections, each holding a slot until it closes.
pub(crate) fn guard(
    incoming: TcpIncoming,
    limits: Limits,
) -> impl Stream<Item = io::Result<Guarded>> {
    // One permit per open connection; a connection that finds none is
    // closed at once, so the count never exceeds the setting and nothing
    // waits.
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    incoming.filter_map(move |accepted| match accepted {
        Err(e) => Some(Err(e)),
        Ok(stream) => match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => Some(Ok(Guarded {
                stream,
                _slot: slot,
                handshake: Some((0, Box::pin(tokio::time::sleep(limits.handshake_timeout)))),
            })),
            Err(_) => {
                tracing::debug!(
                    peer = ?stream.peer_addr().ok(),
                    max = limits.max_connections,
                    "refused a connection: --max-connections are open"
                );
                None
            }
        },
    })
}

/// A connection that holds its slot and must begin HTTP/2 in time.
pub(crate) struct Guarded {
    stream: TcpStream,
    /// Given back when the connection closes.
    _slot: OwnedSemaphorePermit,
    /// Until the handshake's bytes have arrived: how many have, and the
    /// timer that closes the connection if the rest do not come in time.
    handshake: Option<(usize, Pin<Box<tokio::time::Sleep>>)>,
}

impl AsyncRead for Guarded {
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
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some((seen, _))) = (&polled, self.handshake.as_mut()) {
            *seen += buf.filled().len() - before;
            if *seen >= HANDSHAKE_BYTES {
                self.handshake = None;
            }
        }
        polled
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl Connected for Guarded {
    type ConnectInfo = <TcpStream as Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}
