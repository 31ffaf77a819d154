//! How fresh an answer is, on every caravan call, as a tower layer: the
//! response's headers say which sequence this node has applied
//! (`caravan-applied-sequence`) and, in cluster mode, the newest stream
//! sequence it has heard of (`caravan-stream-sequence`) and how long ago it
//! last heard from the stream (`caravan-stream-silence-ms`). A request may
//! ask for at least a sequence (`caravan-min-sequence`): it waits until this
//! node has applied it, at most until its deadline (`grpc-timeout`, capped at
//! [`MAX_MIN_SEQUENCE_WAIT`]), then fails with FAILED_PRECONDITION. So a
//! service reads its own writes on any node: it sends the sequence its
//! append was acknowledged at.
//!
//! Depends on tower, http, tokio's watch and the cluster state; knows
//! nothing of the services.

use crate::cluster::ClusterState;
use http::HeaderValue;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::watch;
use tonic::body::Body;

/// The request header that asks for a minimum applied sequence.
pub const MIN_SEQUENCE: &str = "caravan-min-sequence";
/// The response header with the sequence this node has applied.
pub const APPLIED_SEQUENCE: &str = "caravan-applied-sequence";
/// The longest a request waits for its minimum sequence without a deadline
/// (and with a longer one).
pub const MAX_MIN_SEQUENCE_WAIT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub(crate) struct FreshnessLayer {
    pub(crate) applied: watch::Receiver<u64>,
    pub(crate) cluster: Option<Arc<ClusterState>>,
}

impl<S> tower::Layer<S> for FreshnessLayer {
    type Service = Fresh<S>;

    fn layer(&self, inner: S) -> Fresh<S> {
        Fresh {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Fresh<S> {
    inner: S,
    layer: FreshnessLayer,
}

/// A `grpc-timeout` header's value ("100m", "5S", …): digits and a unit
/// (H, M, S, m, u, n).
pub(crate) fn grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn refuse(code: tonic::Code, message: String) -> http::Response<Body> {
    tonic::Status::new(code, message).into_http()
}

impl<S> tower::Service<http::Request<Body>> for Fresh<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let ours = request.uri().path().starts_with("/caravan.");
        let wanted = request
            .headers()
            .get(MIN_SEQUENCE)
            .map(|v| v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()));
        let deadline = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(grpc_timeout)
            .map_or(MAX_MIN_SEQUENCE_WAIT, |d| d.min(MAX_MIN_SEQUENCE_WAIT));
        let mut applied = self.layer.applied.clone();
        let cluster = self.layer.cluster.clone();
        // The inner service is ready now; a clone takes its place (tower's
        // rule for services called from a future).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            if ours {
                match wanted {
                    Some(None) => {
                        return Ok(refuse(
                            tonic::Code::InvalidArgument,
                            format!("{MIN_SEQUENCE} must be a sequence number"),
                        ))
                    }
                    Some(Some(min)) if *applied.borrow() < min => {
                        // Answered a little before the caller's deadline,
                        // so that it gets the reason rather than its own
                        // timeout.
                        let patience = deadline.mul_f64(0.9);
                        let reached =
                            tokio::time::timeout(patience, applied.wait_for(|a| *a >= min))
                                .await
                                .is_ok_and(|r| r.is_ok());
                        if !reached {
                            let now = *applied.borrow();
                            return Ok(refuse(
                                tonic::Code::FailedPrecondition,
                                format!(
                                    "this node has applied up to sequence {now}, not {min}, \
                                     within {deadline:?}: ask again or ask another node"
                                ),
                            ));
                        }
                    }
                    _ => {}
                }
            }
            let at = *applied.borrow();
            let mut response = inner.call(request).await?;
            if ours {
                let headers = response.headers_mut();
                headers.insert(APPLIED_SEQUENCE, HeaderValue::from(at));
                if let Some(c) = cluster {
                    headers.insert("caravan-stream-sequence", HeaderValue::from(c.head()));
                    headers.insert(
                        "caravan-stream-silence-ms",
                        HeaderValue::from(c.silence().as_millis() as u64),
                    );
                }
            }
            Ok(response)
        })
    }
}
