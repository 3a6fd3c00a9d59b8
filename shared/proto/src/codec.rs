//! The codec every generated umcp service uses (`codec_path` in `build.rs`).
//!
//! Encoding is prost's. Decoding differs in one way that matters to callers: a request that is
//! not a valid protobuf encoding of the method's message (truncated, a wrong wire type, invalid
//! UTF-8 in a string) is the caller's mistake, so it answers `INVALID_ARGUMENT` naming the
//! message type, where tonic-prost answers `INTERNAL` (which also looks like a server fault in
//! every dashboard and audit log).

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// [`tonic_prost::ProstCodec`] with caller-facing decode errors.
#[derive(Debug, Clone)]
pub struct StrictCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for StrictCodec<T, U> {
    fn default() -> Self {
        Self {
            _types: PhantomData,
        }
    }
}

impl<T, U> Codec for StrictCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder { _type: PhantomData }
    }
}

/// Decodes one message; see the module docs.
#[derive(Debug, Clone)]
pub struct StrictDecoder<U> {
    _type: PhantomData<U>,
}

impl<U: Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|error| {
            Status::invalid_argument(format!(
                "the message is not a valid protobuf encoding of {}: {error}",
                message_name::<U>()
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// `umcp_proto::graph::v1::QueryRequest` → `graph.v1.QueryRequest`.
fn message_name<U>() -> String {
    let full = std::any::type_name::<U>();
    let path = full.strip_prefix("umcp_proto::").unwrap_or(full);
    format!("umcp.{}", path.replace("::", "."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_proto_names() {
        assert_eq!(
            message_name::<crate::graph::v1::QueryRequest>(),
            "umcp.graph.v1.QueryRequest"
        );
    }
}
