//! The gRPC codec of caravan's own services (server and client side):
//! prost's encoder, and a decoder that first takes the whole message as one
//! contiguous buffer (zero-copy out of tonic's receive buffer) and then
//! decodes it from a plain byte slice. prost reads a slice several times
//! faster than tonic's `DecodeBuf`, whose every read goes through
//! `BytesMut::advance`; on ingest, decoding was the largest single cost
//! (callgrind, BENCHMARKS.md).
//!
//! Used through `build.rs` (`codec_path`) by the generated servers and
//! clients; depends on tonic, prost and `error` (an undecodable message is
//! answered through `status`, like every other error).

use crate::error::Error;
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
    U: Message + Default + Send + 'static,
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

impl<U: Message + Default> Decoder for SliceDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        use prost::bytes::Buf;
        // `BytesMut::copy_to_bytes` splits the buffer off: no copy.
        let bytes = buf.copy_to_bytes(buf.remaining());
        U::decode(bytes.as_ref())
            .map(Some)
            .map_err(|e| Error::Undecodable(e.to_string()).into())
    }
}
