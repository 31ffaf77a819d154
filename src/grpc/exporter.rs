//! The metrics listener (`--metrics-listen`): HTTP/1.1 `GET /metrics` in the
//! Prometheus text format, on its own port so that scraping never competes
//! with gRPC's connection limits. Anything else is 404; a request must
//! arrive whole within [`HEADER_TIMEOUT`], and at most [`MAX_CONNECTIONS`]
//! scrapers are served at once (one beyond is closed when accepted).
//!
//! Like the gRPC port, an address beyond loopback needs TLS (the server's
//! certificate, re-read on SIGHUP like it) and credentials (a bearer token
//! of an identity with the `metrics` scope) unless `--insecure`.
//!
//! Depends on hyper, `ops::metrics`, the server's TLS and the identities.

use crate::auth::{Access, Bearer, Scope};
use crate::error::Error;
use crate::grpc::shutdown::Shutdown;
use crate::grpc::tls::Tls;
use crate::ops::metrics::Metrics;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prost::bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Scrapers served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Time for a scrape's request head (and a TLS handshake) to arrive.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound metrics listener, not yet serving.
pub(crate) struct Exporter {
    listener: TcpListener,
    metrics: Arc<Metrics>,
    tls: Option<Arc<Tls>>,
    access: Arc<Access>,
}

impl Exporter {
    /// Binds `addr`; refused beyond loopback without TLS and credentials,
    /// unless `insecure`.
    pub(crate) async fn bind(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        tls: Option<Arc<Tls>>,
        access: Arc<Access>,
        insecure: bool,
    ) -> Result<Exporter, Error> {
        crate::grpc::server::check_exposure(
            addr,
            tls.is_some(),
            access.requires_credentials(),
            insecure,
        )
        .map_err(|e| Error::Unavailable(format!("--metrics-listen: {e}")))?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Unavailable(format!("cannot listen on {addr} for metrics: {e}")))?;
        Ok(Exporter {
            listener,
            metrics,
            tls,
            access,
        })
    }

    pub(crate) fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener
            .local_addr()
            .map_err(|e| Error::Internal(format!("metrics address: {e}")))
    }

    /// Serves until `shutdown` fires.
    pub(crate) async fn serve(self, mut shutdown: Shutdown) {
        // One permit per open scrape connection, held by its task: the
        // listener never holds more than MAX_CONNECTIONS sockets.
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                _ = shutdown.wait() => return,
            };
            let Ok((stream, peer)) = accepted else {
                // Out of file descriptors, say: not a reason to spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                tracing::warn!(%peer, "metrics: too many scrapers at once; connection closed");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let metrics = Arc::clone(&self.metrics);
            let access = Arc::clone(&self.access);
            let tls = self.tls.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tls {
                    Some(tls) => {
                        let handshake = tokio::time::timeout(
                            HEADER_TIMEOUT,
                            tls.http1_acceptor().accept(stream),
                        );
                        match handshake.await {
                            Ok(Ok(stream)) => {
                                serve_one(TokioIo::new(stream), metrics, access).await
                            }
                            _ => tracing::debug!(%peer, "metrics: TLS handshake failed"),
                        }
                    }
                    None => serve_one(TokioIo::new(stream), metrics, access).await,
                }
            });
        }
    }
}

async fn serve_one<I>(io: I, metrics: Arc<Metrics>, access: Arc<Access>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let response = answer(&request, &metrics, &access);
        async move { Ok::<_, std::convert::Infallible>(response) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true)
        .serve_connection(io, service);
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "metrics: connection ended with an error");
    }
}

fn reply(status: u16, content_type: &str, body: String) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    response
}

fn answer<B>(
    request: &hyper::Request<B>,
    metrics: &Metrics,
    access: &Access,
) -> hyper::Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return reply(404, "text/plain", "only /metrics is served here\n".into());
    }
    if request.method() != http::Method::GET && request.method() != http::Method::HEAD {
        return reply(405, "text/plain", "GET /metrics\n".into());
    }
    if access.requires_credentials() {
        let bearer = match request.headers().get(http::header::AUTHORIZATION) {
            None => Bearer::None,
            Some(v) => match v.to_str().ok().and_then(|t| t.trim().split_once(' ')) {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                    Bearer::Token(token.trim())
                }
                _ => Bearer::Malformed,
            },
        };
        match access.authenticate(bearer, None) {
            Ok(identity) if identity.has(Scope::Metrics) => {}
            Ok(_) => {
                return reply(
                    403,
                    "text/plain",
                    "this identity lacks the metrics scope\n".into(),
                )
            }
            Err(e) => return reply(401, "text/plain", format!("{e}\n")),
        }
    }
    reply(
        200,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        metrics.render(),
    )
}
