//! `/metrics` scraped with a real HTTP client while the server ingests and
//! answers: the counters move as the calls do.

use super::*;
use caravan::proto::v1::query_service_client::QueryServiceClient;
use caravan::proto::v1::subscription_service_client::SubscriptionServiceClient;

async fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, body) = http_get(addr, "/metrics", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    samples(&body)
}

fn at(s: &HashMap<String, f64>, name: &str) -> f64 {
    s.get(name).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn counters_move_as_the_calls_do() {
    let app = spawn_app_in(tempfile::tempdir().unwrap(), |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let metrics = app.metrics_addr().expect("metrics served");
    let before = scrape(metrics).await;
    assert_eq!(at(&before, "caravan_durable_sequence"), 0.0);
    assert!(at(&before, "caravan_process_start_time_seconds") > 1.7e9);
    assert!(at(&before, "caravan_process_resident_memory_bytes") > 1e6);
    assert!(at(&before, "caravan_store_size_bytes") > 0.0);
    assert_eq!(at(&before, "caravan_store_writable"), 1.0);
    assert!(before.contains_key("caravan_build_info{version=\"0.1.0\"}"));

    let mut ingest = app.ingest().await;
    append(&mut ingest, feed_events("feed-a", 0, 30))
        .await
        .unwrap();
    append(&mut ingest, feed_events("feed-b", 0, 12))
        .await
        .unwrap();
    // Re-sent: duplicates.
    append(&mut ingest, feed_events("feed-a", 0, 5))
        .await
        .unwrap();
    // Refused: an id of feed-a with other content (the batch of 2 refused).
    let mut conflict = feed_events("feed-a", 0, 2);
    record_mut(&mut conflict[1]).value = Some(money(1));
    let refused = append(&mut ingest, conflict).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::AlreadyExists);
    // Refused before storage: a bad reporter.
    let mut bad = feed_events("feed-b", 100, 1);
    record_mut(&mut bad[0]).reporter = "XX".into();
    append(&mut ingest, bad).await.unwrap_err();

    let mut query = QueryServiceClient::new(app.channel().await);
    let records = query
        .stream_trade_records(hs2_records(0))
        .await
        .unwrap()
        .into_inner();
    drain(records).await.unwrap();
    let mut subscribe = SubscriptionServiceClient::new(app.channel().await);
    let mut live = subscribe
        .subscribe(pb::SubscribeRequest {
            start: Some(pb::subscribe_request::Start::FromBeginning(
                pb::FromBeginning {},
            )),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    live.message().await.unwrap().expect("a first message");

    let after = eventually(std::time::Duration::from_secs(5), || async {
        let s = scrape(metrics).await;
        (at(&s, "caravan_subscriptions") == 1.0)
            .then_some(s)
            .ok_or(())
    })
    .await
    .expect("the subscription is counted");
    assert_eq!(
        at(&after, "caravan_events_appended_total{feed=\"feed-a\"}"),
        30.0
    );
    assert_eq!(
        at(&after, "caravan_events_appended_total{feed=\"feed-b\"}"),
        12.0
    );
    assert_eq!(
        at(&after, "caravan_events_duplicate_total{feed=\"feed-a\"}"),
        5.0
    );
    assert_eq!(
        at(
            &after,
            "caravan_events_rejected_total{feed=\"feed-a\",reason=\"id_conflict\"}"
        ),
        2.0
    );
    assert_eq!(
        at(
            &after,
            "caravan_events_rejected_total{feed=\"feed-b\",reason=\"invalid\"}"
        ),
        1.0
    );
    let append_ok =
        "caravan_rpc_requests_total{method=\"/caravan.v1.IngestService/Append\",code=\"Ok\"}";
    assert_eq!(at(&after, append_ok), 3.0);
    assert_eq!(
        at(&after, "caravan_rpc_requests_total{method=\"/caravan.v1.IngestService/Append\",code=\"AlreadyExists\"}"),
        1.0
    );
    assert_eq!(
        at(&after, "caravan_rpc_requests_total{method=\"/caravan.v1.QueryService/StreamTradeRecords\",code=\"Ok\"}"),
        1.0
    );
    assert_eq!(
        at(
            &after,
            "caravan_rpc_in_flight{method=\"/caravan.v1.SubscriptionService/Subscribe\"}"
        ),
        1.0
    );
    assert_eq!(
        at(&after, "caravan_rpc_duration_seconds_count{method=\"/caravan.v1.IngestService/Append\",code=\"Ok\"}"),
        3.0
    );
    assert_eq!(at(&after, "caravan_durable_sequence"), 42.0);
    assert_eq!(at(&after, "caravan_append_duration_seconds_count"), 3.0);
    assert!(at(&after, "caravan_fsync_duration_seconds_count") >= 1.0);
    assert_eq!(at(&after, "caravan_group_commit_events_sum"), 42.0);
    assert!(at(&after, "caravan_writer_queue_capacity") > 0.0);
    assert_eq!(at(&after, "caravan_views_applied_sequence"), 42.0);
    assert_eq!(at(&after, "caravan_views_lag_events"), 0.0);
    assert_eq!(at(&after, "caravan_subscriber_lag_max_events"), 0.0);

    // A method the server does not serve is counted as "unknown", never by
    // the client's path.
    let unknown = tonic::transport::Endpoint::from_shared(app.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(unknown);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<pb::VerifyRequest, pb::VerifyResponse>::default();
    let path = http::uri::PathAndQuery::from_static("/caravan.v1.Nope/Nothing");
    let e = grpc
        .unary(tonic::Request::new(pb::VerifyRequest {}), path, codec)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented);
    let s = scrape(metrics).await;
    assert!(s.keys().all(|k| !k.contains("Nope")));
    assert_eq!(
        at(
            &s,
            "caravan_rpc_requests_total{method=\"unknown\",code=\"Unimplemented\"}"
        ),
        1.0
    );

    // Only /metrics is served.
    let (status, _) = http_get(metrics, "/other", None).await;
    assert_eq!(status, 404);
    drop(live);
    app.stop().await;
}

/// With identities, a scrape needs the token of an identity with the
/// `metrics` scope (an admin's is not enough: least privilege for Prometheus).
#[tokio::test]
async fn with_identities_a_scrape_needs_the_metrics_scope() {
    use crate::identities::{auth_file, write, Who};
    let scraper = Who::token("prometheus", &["metrics"], &[]);
    let admin = Who::token("ops", &["admin", "read"], &[]);
    let files = tempfile::tempdir().unwrap();
    let auth = write(files.path(), "auth.toml", &auth_file(&[&scraper, &admin]));
    let app = spawn_app_in(tempfile::tempdir().unwrap(), |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        c.auth_file = Some(auth);
    })
    .await;
    let at = app.metrics_addr().unwrap();
    let (status, body) = http_get(at, "/metrics", None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = http_get(at, "/metrics", Some("not-a-token")).await;
    assert_eq!(status, 401);
    let (status, body) = http_get(at, "/metrics", admin.token.as_deref()).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = http_get(at, "/metrics", scraper.token.as_deref()).await;
    assert_eq!(status, 200);
    assert!(body.contains("caravan_durable_sequence 0"), "{body}");
    app.stop().await;
}

/// Beyond loopback, the metrics port is refused without TLS and an auth
/// file, like the gRPC port, unless --insecure.
#[tokio::test]
async fn metrics_beyond_loopback_need_tls_and_credentials() {
    let mut config = caravan::grpc::server::ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        tempfile::tempdir().unwrap().path().join("store"),
    );
    config.metrics_listen = Some("0.0.0.0:0".parse().unwrap());
    let e = caravan::grpc::server::check_config(&config)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--metrics-listen") && e.contains("--insecure"),
        "{e}"
    );
    config.insecure = true;
    caravan::grpc::server::check_config(&config).unwrap();
}

/// With TLS, /metrics is served over TLS with the server's certificate (a
/// plain-text request gets nothing), and with identities it needs a token.
#[tokio::test]
async fn with_tls_metrics_are_served_over_tls() {
    use crate::identities::{auth_file, secure_app, Who};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::sync::Arc;
    let scraper = Who::token("prometheus", &["metrics"], &[]);
    let secure = secure_app(&auth_file(&[&scraper]), None, |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let at = secure.app.metrics_addr().unwrap();

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(secure.ca.pem.cert.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    // ring, as the server (src/grpc/tls.rs says why the deprecation is moot).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // As Go's HTTP client (Prometheus) offers: HTTP/2 first. The metrics
    // port speaks HTTP/1.1, and must say so.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(at).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("a TLS handshake with the server's certificate");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    use http_body_util::BodyExt;
    let request = http::Request::builder()
        .uri("/metrics")
        .header("host", "localhost")
        .header(
            "authorization",
            format!("Bearer {}", scraper.token.as_deref().unwrap()),
        )
        .body(http_body_util::Empty::<prost::bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("caravan_durable_sequence"));

    // Plain HTTP on the TLS port gets no metrics.
    let plain = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(at).await.unwrap();
            let io = hyper_util::rt::TokioIo::new(stream);
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.ok()?;
            tokio::spawn(connection);
            let request = http::Request::builder()
                .uri("/metrics")
                .header("host", "localhost")
                .body(http_body_util::Empty::<prost::bytes::Bytes>::new())
                .unwrap();
            sender.send_request(request).await.ok().map(|r| r.status())
        }),
    )
    .await
    .expect("the server closes a plain connection")
    .unwrap();
    assert!(plain.is_none(), "plain HTTP answered: {plain:?}");
    secure.app.stop().await;
}
