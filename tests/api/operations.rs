//! Health, reflection and graceful shutdown, in process.

use crate::helpers::*;
use caravan::proto::v1 as pb;
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[tokio::test]
async fn every_service_is_serving_and_turns_not_serving_on_shutdown() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel().await);
    // Every caravan service the server lists, and the server as a whole ("").
    let mut services: Vec<String> = listed_services_v1(&app)
        .await
        .into_iter()
        .filter(|s| s.starts_with("caravan.v1."))
        .collect();
    assert_eq!(services.len(), 4, "{services:?}");
    services.push(String::new());
    let mut watches = Vec::new();
    for service in &services {
        let status = health
            .check(HealthCheckRequest {
                service: service.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("health check of {service:?}: {e}"))
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
        let mut watch = health
            .watch(HealthCheckRequest {
                service: service.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            watch.next().await.unwrap().unwrap().status,
            ServingStatus::Serving as i32
        );
        watches.push(watch);
    }
    let stopping = tokio::spawn(app.stop());
    for (service, watch) in services.iter().zip(&mut watches) {
        let next = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("a health update");
        assert_eq!(
            next.unwrap().unwrap().status,
            ServingStatus::NotServing as i32,
            "{service:?}"
        );
    }
    drop(watches);
    stopping.await.unwrap();
}

async fn listed_services_v1(app: &TestApp) -> Vec<String> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut client = ServerReflectionClient::new(app.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    match answers.next().await.unwrap().unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("{other:?}"),
    }
}

async fn listed_services_v1alpha(app: &TestApp) -> Vec<String> {
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    let mut client = ServerReflectionClient::new(app.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "caravan.v1.IngestService".into(),
        )),
    };
    let list = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter(vec![request, list]))
        .await
        .unwrap()
        .into_inner();
    match answers.next().await.unwrap().unwrap().message_response {
        Some(MessageResponse::FileDescriptorResponse(f)) => {
            assert!(!f.file_descriptor_proto.is_empty())
        }
        other => panic!("{other:?}"),
    }
    match answers.next().await.unwrap().unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_the_caravan_services() {
    let app = spawn_app().await;
    for services in [
        listed_services_v1(&app).await,
        listed_services_v1alpha(&app).await,
    ] {
        for expected in ["caravan.v1.IngestService", "grpc.health.v1.Health"] {
            assert!(
                services.iter().any(|s| s == expected),
                "{expected} missing from {services:?}"
            );
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn shutdown_answers_what_a_stream_sent_then_ends_it_with_unavailable() {
    let app = spawn_app().await;
    let mut client = app.ingest().await;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut answers = client
        .append_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for i in 0..3 {
        tx.send(pb::AppendStreamRequest {
            event: Some(trade(&format!("g{i}"), "CN", "KZ", 2000 + i, 1)),
        })
        .await
        .unwrap();
    }
    let mut acked = 0;
    while acked < 3 {
        answers.next().await.unwrap().unwrap();
        acked += 1;
    }
    // The client keeps its stream open; shutdown must still finish.
    let stopping = tokio::spawn(app.stop());
    let end = tokio::time::timeout(Duration::from_secs(10), answers.next())
        .await
        .expect("the stream ends");
    match end {
        Some(Err(status)) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}"),
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    drop(tx);
    let dir = tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("shutdown finishes")
        .unwrap();
    // The three acknowledged events are in the store.
    let app = spawn_app_in(dir, |_| {}).await;
    assert_eq!(last_sequence(&mut app.ingest().await).await, 3);
    app.stop().await;
}
