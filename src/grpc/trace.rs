//! One tracing span per RPC, as a tower layer around every service (so it
//! sees the method path, which interceptors cannot): `rpc{id, method, peer,
//! identity}`.
//! The handler, and every task it spawns, run inside it, and so does what the
//! writer and the publisher log about the request's events; when the response
//! ends, one event records the outcome (the gRPC code, from the headers of an
//! immediate error or from the trailers), the request's size in bytes and the
//! duration. With `RUST_LOG=caravan=debug` a reader follows one request from
//! the edge to fsync and back.
//!
//! Depends on tower, http, http-body and tracing; knows nothing of the
//! services.

use super::connections::PeerInfo;
use crate::ops::metrics::Metrics;
use prost::bytes::Buf;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tonic::body::Body;
use tracing::Instrument;

/// Numbers the RPCs since the process started (the span's `id`).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Wraps a service so that each call gets its span, and is counted and
/// timed in the metrics.
#[derive(Clone)]
pub(crate) struct TraceLayer(pub(crate) Arc<Metrics>);

impl<S> tower::Layer<S> for TraceLayer {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Traced<S> {
        Traced {
            inner,
            metrics: Arc::clone(&self.0),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Traced<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// The metrics' `method` label of a request path: the path of a method this
/// server serves, else "unknown" (a client's path never becomes a label).
fn method_label(path: &str) -> &'static str {
    crate::proto::METHODS
        .iter()
        .find(|m| **m == path)
        .copied()
        .unwrap_or("unknown")
}

impl<S, B> tower::Service<http::Request<Body>> for Traced<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<B>>,
    S::Future: Send + 'static,
    B: http_body::Body + Unpin,
{
    type Response = http::Response<Finished<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let started = Instant::now();
        let peer = request
            .extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.remote);
        let span = tracing::info_span!(
            "rpc",
            id = NEXT_ID.fetch_add(1, Ordering::Relaxed),
            method = request.uri().path(),
            peer = peer.map(tracing::field::display),
            // Recorded by the access layer once the caller is known.
            identity = tracing::field::Empty,
        );
        let method = method_label(request.uri().path());
        self.metrics.rpc_started(method);
        let metrics = Arc::clone(&self.metrics);
        let received = Arc::new(AtomicU64::new(0));
        let request = request.map(|body| {
            Body::new(Counted {
                inner: body,
                bytes: Arc::clone(&received),
            })
        });
        // The layers inside (the access layer records the caller) run in
        // the span too.
        let response = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let finish = Finish {
                    span: tracing::Span::current(),
                    started,
                    received,
                    code: None,
                    method,
                    metrics,
                };
                // Dropped (and counted) with the error, if the call fails here.
                let mut finish = finish;
                let response = response.await?;
                finish.code = response.headers().get("grpc-status").map(code_of);
                Ok(response.map(|inner| Finished {
                    inner,
                    finish: Some(finish),
                }))
            }
            .instrument(span),
        )
    }
}

fn code_of(value: &http::HeaderValue) -> tonic::Code {
    tonic::Code::from_bytes(value.as_bytes())
}

/// A request body that counts the bytes read from it.
struct Counted {
    inner: Body,
    bytes: Arc<AtomicU64>,
}

impl http_body::Body for Counted {
    type Data = <Body as http_body::Body>::Data;
    type Error = <Body as http_body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.bytes
                    .fetch_add(data.remaining() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// What is logged when a response ends.
struct Finish {
    span: tracing::Span,
    started: Instant,
    received: Arc<AtomicU64>,
    /// The code, once known.
    code: Option<tonic::Code>,
    method: &'static str,
    metrics: Arc<Metrics>,
}

impl Finish {
    fn log(mut self, ended: &str) {
        let request_bytes = self.received.load(Ordering::Relaxed);
        let took = self.started.elapsed();
        let duration_us = took.as_micros() as u64;
        let code: &dyn std::fmt::Debug = match &self.code {
            Some(code) => code,
            None => &"none",
        };
        tracing::debug!(parent: &self.span, ?code, request_bytes, duration_us, ended, "rpc finished");
        let label = match self.code {
            Some(code) => code_name(code),
            None => "Cancelled",
        };
        self.metrics.rpc_finished(self.method, label, took);
        self.method = "";
    }
}

impl Drop for Finish {
    /// A call whose service failed before it answered: still counted.
    fn drop(&mut self) {
        if !self.method.is_empty() {
            self.metrics
                .rpc_finished(self.method, "Unknown", self.started.elapsed());
        }
    }
}

/// The code's name as the gRPC spec writes it (`Ok`, `InvalidArgument`...).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "Ok",
        Cancelled => "Cancelled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// A response body that logs the call's outcome when it ends (or is dropped
/// before its end: the client went away).
pub(crate) struct Finished<B> {
    inner: B,
    finish: Option<Finish>,
}

impl<B: http_body::Body + Unpin> http_body::Body for Finished<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(|t| t.get("grpc-status")) {
                    let code = code_of(code);
                    if let Some(f) = self.finish.as_mut() {
                        f.code = Some(code);
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(f) = self.finish.take() {
                    f.log("transport error");
                }
            }
            Poll::Ready(None) => {
                if let Some(f) = self.finish.take() {
                    f.log("complete");
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Finished<B> {
    fn drop(&mut self) {
        if let Some(f) = self.finish.take() {
            let ended = if f.code.is_some() {
                "complete"
            } else {
                "cancelled"
            };
            f.log(ended);
        }
    }
}
