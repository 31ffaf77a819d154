//! Mutual TLS: the server requires a client certificate from its client CA,
//! and a certificate's subject can stand for an identity.

use super::*;
use tonic::Code;

/// A call's code, whether the connection or the call failed.
async fn append_code(ch: Result<Channel, tonic::transport::Error>, id: &str) -> Option<Code> {
    let ch = ch.ok()?;
    let r = IngestServiceClient::new(ch)
        .append(authed(
            pb::AppendRequest::new(vec![trade_of("feed-a", id, "CN", "KZ", 1)]),
            None,
        ))
        .await;
    Some(match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    })
}

#[tokio::test]
async fn client_certificates_are_required_verified_and_name_identities() {
    let clients = Ca::new("clients CA");
    let stranger_ca = Ca::new("another CA");
    let loader = Who {
        name: "loader-a",
        token: None,
        cert_subject: Some("CN=loader-a,O=Test Ministry"),
        scopes: &["ingest"],
        feeds: &["feed-a"],
        more: "",
    };
    let observer = Who::token("observer", &["ingest", "read"], &["*"]);
    let secure = secure_app(&auth_file(&[&loader, &observer]), Some(&clients), |_| {}).await;
    let observer_pem = clients.client("observer-machine");
    let watch = secure.channel(Some(&observer_pem)).await.unwrap();
    let observer_token = observer.token.as_deref().unwrap();
    let last = last_as(&watch, observer_token).await;

    // No client certificate: the handshake (or the first call) fails.
    let none = append_code(secure.channel(None).await, "n1").await;
    assert!(
        none.is_none_or(|c| c != Code::Ok),
        "served without a client certificate: {none:?}"
    );
    // A certificate from a CA the server does not trust, whatever its subject.
    let foreign = stranger_ca.client("loader-a");
    let refused = append_code(secure.channel(Some(&foreign)).await, "n2").await;
    assert!(
        refused.is_none_or(|c| c != Code::Ok),
        "served a certificate of another CA: {refused:?}"
    );
    assert_eq!(
        last_as(&watch, observer_token).await,
        last,
        "nothing stored"
    );

    // A valid certificate whose subject names no identity: verified, but
    // not anyone.
    let unknown = clients.client("stranger");
    let code = append_code(secure.channel(Some(&unknown)).await, "n3").await;
    assert_eq!(code, Some(Code::Unauthenticated));

    // The loader's certificate is its identity: it may write feed A, and
    // the stored event says who wrote it.
    let mine = clients.client("loader-a");
    let ch = secure.channel(Some(&mine)).await.unwrap();
    assert_eq!(append_code(Ok(ch.clone()), "by-cert").await, Some(Code::Ok));
    let found = IngestServiceClient::new(ch.clone())
        .lookup_events(authed(
            pb::LookupEventsRequest {
                event_ids: vec!["by-cert".into()],
                ..Default::default()
            },
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        found.events.len(),
        1,
        "its one feed is the lookup's default"
    );
    assert_eq!(found.events[0].written_by, "loader-a");
    // Its scope is ingest only.
    let denied = caravan::proto::v1::query_service_client::QueryServiceClient::new(ch)
        .stream_agreements(authed(pb::StreamAgreementsRequest::default(), None))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(last_as(&watch, observer_token).await, last + 1);
    secure.app.stop().await;
}
