//! The gRPC codec of caravan's own services (server and client side):
//! prost's encoder, and a decoder that first takes the whole message as one
//! contiguous buffer (zero-copy out of tonic's receive buffer) and then
//! decodes it from a plain byte slice. prost reads a slice several times
//! faster than tonic's `DecodeBuf`, whose every read goes through
//! `BytesMut::advance`; on ingest, decoding was the largest single cost
//! (callgrind, BENCHMARKS.md).
//!
//! Messages a client streams (AppendStream's) are checked by `wire` before
//! they are decoded, as each arrives; unary requests were checked earlier, by
//! `admission`, which holds their whole message. An Append is not decoded
//! here at all: it keeps its bytes, and its events are decoded one at a time
//! as the handler parses them (`proto::append_request`).
//!
//! Used through `build.rs` (`codec_path`) by the generated servers and
//! clients; depends on tonic, prost, `wire` and `error` (an undecodable message
//! is answered through `status`, like every other error).

use super::wire;
use crate::error::Error;
use crate::proto::v1 as pb;
use prost::bytes::Bytes;
use prost::Message;
use std::marker::PhantomData;
use tonic::codec::{BufferSettings, DecodeBuf, Decoder};
use tonic::Status;

/// Encodes `T` and decodes `U` with prost.
#[derive(Debug, Clone)]
pub(crate) struct Codec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec(PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Admit + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = SliceDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        SliceDecoder(PhantomData)
    }
}

/// Decodes one message from a contiguous copy-free view of its bytes.
#[derive(Debug, Clone)]
pub(crate) struct SliceDecoder<U>(PhantomData<U>);

/// What is checked on a decoded message's bytes before prost decodes it.
pub(crate) trait Admit: Message + Default {
    /// The shape bounding its repeated fields, for a message a client streams.
    const STREAMED: Option<&'static wire::Shape> = None;

    /// The message of these (checked) bytes.
    fn decode_checked(bytes: Bytes) -> Result<Self, prost::DecodeError> {
        Self::decode(bytes.as_ref())
    }
}

impl Admit for pb::AppendStreamRequest {
    const STREAMED: Option<&'static wire::Shape> = Some(&wire::APPEND_STREAM);
}

/// Kept as received: its events are decoded one at a time as the handler
/// parses them (`proto::append_request`).
impl Admit for pb::AppendRequest {
    fn decode_checked(bytes: Bytes) -> Result<Self, prost::DecodeError> {
        Ok(pb::AppendRequest::received(bytes))
    }
}

/// Unary requests (checked by `admission`) and responses (decoded by our own
/// clients).
macro_rules! admitted_as_is {
    ($($message:ty),+ $(,)?) => {$( impl Admit for $message {} )+};
}

admitted_as_is!(
    pb::AppendResponse,
    pb::AppendStreamResponse,
    pb::LookupEventsRequest,
    pb::LookupEventsResponse,
    pb::StreamTradeRecordsRequest,
    pb::StreamTradeRecordsResponse,
    pb::StreamCountryCooperationRequest,
    pb::StreamCountryCooperationResponse,
    pb::StreamSectorCooperationRequest,
    pb::StreamSectorCooperationResponse,
    pb::StreamAgreementsRequest,
    pb::StreamAgreementsResponse,
    pb::AggregateRequest,
    pb::AggregateResponse,
    pb::SubscribeRequest,
    pb::SubscribeResponse,
    pb::BackupRequest,
    pb::BackupResponse,
    pb::VerifyRequest,
    pb::VerifyResponse,
);

impl<U: Message + Default + Admit> Decoder for SliceDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        use prost::bytes::Buf;
        // `BytesMut::copy_to_bytes` splits the buffer off: no copy.
        let bytes = buf.copy_to_bytes(buf.remaining());
        if let Some(shape) = U::STREAMED {
            // A streamed message's shape has only the contract's fixed caps.
            wire::check(&bytes, shape, &wire::Limits::FIXED_ONLY)?;
            // (An AppendStream message holds one event: nothing to charge.)
        }
        U::decode_checked(bytes)
            .map(Some)
            .map_err(|e| Error::Undecodable(e.to_string()).into())
    }
}
