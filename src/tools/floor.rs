//! The gRPC floor of `caravan bench`: an `IngestService` that decodes every
//! event and acknowledges it with the next sequence, without validating,
//! storing or fsyncing anything. The same requests over the same loopback
//! connections to it show what the transport itself allows, beside the sled
//! ceiling (what the storage engine allows); caravan's ingest is reported as
//! a fraction of the lower of the two.
//!
//! Depends on the generated service and messages and on tonic; nothing of
//! the real server.

use crate::proto::v1 as pb;
use crate::proto::v1::ingest_service_server::{IngestService, IngestServiceServer};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// Acknowledges everything it can decode.
#[derive(Default)]
struct Floor {
    sequence: Arc<AtomicU64>,
}

fn ack(sequence: &AtomicU64, event_id: String) -> pb::Ack {
    pb::Ack {
        event_id,
        sequence: sequence.fetch_add(1, Ordering::Relaxed) + 1,
        duplicate: false,
    }
}

type AckStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::AppendStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl IngestService for Floor {
    async fn append(
        &self,
        request: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendResponse>, Status> {
        let acks = request
            .get_ref()
            .events()
            .map(|e| {
                e.map(|e| ack(&self.sequence, e.event_id.clone()))
                    .map_err(|e| Status::invalid_argument(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Response::new(pb::AppendResponse { acks }))
    }

    type AppendStreamStream = AckStream;

    async fn append_stream(
        &self,
        request: Request<Streaming<pb::AppendStreamRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let sequence = Arc::clone(&self.sequence);
        let mut index = 0u64;
        let answers = request.into_inner().map(move |r| {
            let event_id = r?.event.map(|e| e.event_id).unwrap_or_default();
            index += 1;
            Ok(pb::AppendStreamResponse {
                index: index - 1,
                event_id: event_id.clone(),
                result: Some(pb::append_stream_response::Result::Ack(ack(
                    &sequence, event_id,
                ))),
            })
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn lookup_events(
        &self,
        _: Request<pb::LookupEventsRequest>,
    ) -> Result<Response<pb::LookupEventsResponse>, Status> {
        Ok(Response::new(pb::LookupEventsResponse {
            last_sequence: self.sequence.load(Ordering::Relaxed),
            ..Default::default()
        }))
    }
}

/// A running floor server; stops when dropped.
pub(crate) struct FloorServer {
    pub addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Starts the floor on a free loopback port.
pub(crate) async fn start() -> Result<FloorServer, Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = IngestServiceServer::new(Floor::default())
        .max_decoding_message_size(crate::grpc::defaults::DEFAULT_MAX_MESSAGE_BYTES);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                // As the real server: no Nagle delay (~40 ms on small answers).
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    Ok(FloorServer { addr, _stop: stop })
}
