//! Who is calling, and may they: a tower layer around every service (it
//! sees the method path, which interceptors cannot). It authenticates the
//! call — its `authorization: Bearer <token>`, else the subject of the
//! client certificate its TLS handshake verified — and checks the scope its
//! method needs:
//!
//! | method | needs |
//! |---|---|
//! | `grpc.health.v1.Health/*` | nothing: health stays open |
//! | `grpc.reflection.*` | nothing with `--reflection open`, `admin` with `--reflection admin` (off: not served) |
//! | `caravan.v1.IngestService/*` | `ingest` |
//! | `caravan.v1.QueryService/*`, `caravan.v1.SubscriptionService/*` | `read` |
//! | anything else | an identity (then UNIMPLEMENTED) |
//!
//! No or bad credentials: UNAUTHENTICATED; an identity without the scope:
//! PERMISSION_DENIED; either before a byte of the request is read. An
//! admitted call carries its [`Caller`] in its extensions, for what the
//! services check themselves (feeds, quotas), and its identity is recorded
//! in the call's span. On a server without an auth file every caller is the
//! anonymous identity, which has every scope.
//!
//! Depends on `auth`, `connections` (the peer's certificate), `status`
//! (through `Error`), tower and http.

use super::connections::PeerInfo;
use crate::auth::{Access, Bearer, Identity, Scope};
use crate::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::body::Body;

/// Who may use server reflection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reflection {
    /// Anyone, without credentials.
    Open,
    /// Identities with the `admin` scope.
    Admin,
    /// Nobody: reflection is not served.
    Off,
}

/// The identity a call was made by, in the extensions of every call the
/// layer let through (none for health and open reflection).
#[derive(Clone, Debug)]
pub(crate) struct Caller(pub Arc<Identity>);

impl Caller {
    /// The caller of a request; a request without one did not pass the
    /// layer (a wiring mistake), and is refused rather than served.
    pub(crate) fn of<T>(request: &tonic::Request<T>) -> Result<Arc<Identity>, Error> {
        request
            .extensions()
            .get::<Caller>()
            .map(|c| Arc::clone(&c.0))
            .ok_or_else(|| Error::Internal("a call reached a service without its caller".into()))
    }
}

/// What a method needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    Nothing,
    Identity,
    Scope(Scope),
}

fn need(path: &str, reflection: Reflection) -> Need {
    if path.starts_with("/grpc.health.v1.Health/") {
        Need::Nothing
    } else if path.starts_with("/grpc.reflection.") {
        match reflection {
            Reflection::Open => Need::Nothing,
            Reflection::Admin => Need::Scope(Scope::Admin),
            Reflection::Off => Need::Identity,
        }
    } else if path.starts_with("/caravan.v1.IngestService/") {
        Need::Scope(Scope::Ingest)
    } else if path.starts_with("/caravan.v1.OperationsService/") {
        Need::Scope(Scope::Admin)
    } else if path.starts_with("/caravan.v1.QueryService/")
        || path.starts_with("/caravan.v1.SubscriptionService/")
    {
        Need::Scope(Scope::Read)
    } else {
        Need::Identity
    }
}

/// The bearer token of a request's `authorization` header.
fn bearer(headers: &http::HeaderMap) -> Bearer<'_> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Bearer::None;
    };
    let Ok(text) = value.to_str() else {
        return Bearer::Malformed;
    };
    match text.trim().split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            let token = token.trim();
            if token.is_empty() {
                Bearer::Malformed
            } else {
                Bearer::Token(token)
            }
        }
        _ => Bearer::Malformed,
    }
}

#[derive(Clone)]
pub(crate) struct AccessLayer {
    access: Arc<Access>,
    reflection: Reflection,
}

impl AccessLayer {
    pub(crate) fn new(access: Arc<Access>, reflection: Reflection) -> Self {
        AccessLayer { access, reflection }
    }

    /// The caller of a request, if it may make it.
    fn admit(&self, request: &http::Request<Body>) -> Result<Option<Arc<Identity>>, Error> {
        let path = request.uri().path();
        let need = need(path, self.reflection);
        if need == Need::Nothing {
            return Ok(None);
        }
        let subject = request
            .extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.client.as_deref());
        let identity = self
            .access
            .authenticate(bearer(request.headers()), subject)?;
        if let Need::Scope(scope) = need {
            if !identity.has(scope) {
                return Err(Error::PermissionDenied(format!(
                    "identity {:?} may not call {path}: that needs the {} scope",
                    identity.label(),
                    scope.name()
                )));
            }
        }
        Ok(Some(identity))
    }
}

impl<S> tower::Layer<S> for AccessLayer {
    type Service = Checked<S>;

    fn layer(&self, inner: S) -> Checked<S> {
        Checked {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Checked<S> {
    inner: S,
    layer: AccessLayer,
}

type Response = http::Response<Body>;

impl<S> tower::Service<http::Request<Body>> for Checked<S>
where
    S: tower::Service<http::Request<Body>, Response = Response> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        match self.layer.admit(&request) {
            Ok(caller) => {
                if let Some(identity) = caller {
                    tracing::Span::current().record("identity", identity.label());
                    request.extensions_mut().insert(Caller(identity));
                }
                Box::pin(self.inner.call(request))
            }
            Err(e) => {
                tracing::debug!(error = %e, "refused by the access layer");
                let response = tonic::Status::from(e).into_http::<Body>();
                Box::pin(std::future::ready(Ok(response)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_method_needs_its_scope_and_health_is_open() {
        use Reflection::*;
        let r = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
        assert_eq!(need("/grpc.health.v1.Health/Check", Admin), Need::Nothing);
        assert_eq!(need(r, Open), Need::Nothing);
        assert_eq!(need(r, Admin), Need::Scope(Scope::Admin));
        assert_eq!(need(r, Off), Need::Identity);
        assert_eq!(
            need("/caravan.v1.IngestService/LookupEvents", Open),
            Need::Scope(Scope::Ingest)
        );
        assert_eq!(
            need("/caravan.v1.QueryService/Aggregate", Open),
            Need::Scope(Scope::Read)
        );
        assert_eq!(
            need("/caravan.v1.SubscriptionService/Subscribe", Open),
            Need::Scope(Scope::Read)
        );
        assert_eq!(need("/other.Service/Call", Open), Need::Identity);
    }

    #[test]
    fn only_bearer_tokens_are_read_from_the_authorization_header() {
        let with = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
            h
        };
        assert!(matches!(bearer(&http::HeaderMap::new()), Bearer::None));
        assert!(matches!(bearer(&with("Bearer abc")), Bearer::Token("abc")));
        assert!(matches!(
            bearer(&with("bearer  abc ")),
            Bearer::Token("abc")
        ));
        assert!(matches!(bearer(&with("Basic abc")), Bearer::Malformed));
        assert!(matches!(bearer(&with("Bearer")), Bearer::Malformed));
        assert!(matches!(bearer(&with("Bearer ")), Bearer::Malformed));
    }
}
