//! Buffering a request body so it can be sent again, up to a limit.
//!
//! // why: an `http::Request<tonic::body::Body>` is a stream that can be read once (tonic's
//! body is not `Clone`; grpc-rust #733). A unary request is one small, immediately available
//! message, so reading it into memory costs nothing and makes it replayable. A body larger
//! than the limit is sent once, unbuffered beyond what was already read (gRPC A6: a call whose
//! message overflowed the replay buffer is committed).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tonic::body::Body as GrpcBody;

use crate::BoxError;

/// A body read into memory, or what to send when it could not be.
#[derive(Debug)]
pub(crate) enum Buffered {
    /// The whole body: replay it as often as needed.
    Whole(Bytes),
    /// Too large (or carrying trailers): send once.
    Once(GrpcBody),
}

/// Reads `body` into memory while it stays within `limit` bytes.
pub(crate) async fn buffer(mut body: GrpcBody, limit: usize) -> Result<Buffered, BoxError> {
    let mut read = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Into::<BoxError>::into)?;
        match frame.into_data() {
            Ok(data) if read.len() + data.len() <= limit => read.extend_from_slice(&data),
            Ok(data) => {
                read.extend_from_slice(&data);
                return Ok(Buffered::Once(GrpcBody::new(Prefixed {
                    prefix: Some(read.freeze()),
                    trailers: None,
                    rest: body,
                })));
            }
            Err(frame) => {
                // Request trailers are not part of gRPC; keep them, but do not replay.
                return Ok(Buffered::Once(GrpcBody::new(Prefixed {
                    prefix: Some(read.freeze()),
                    trailers: frame.into_trailers().ok(),
                    rest: body,
                })));
            }
        }
    }
    Ok(Buffered::Whole(read.freeze()))
}

/// A fresh body over the buffered bytes.
pub(crate) fn replay(bytes: &Bytes) -> GrpcBody {
    GrpcBody::new(http_body_util::Full::new(bytes.clone()))
}

pin_project! {
    /// The bytes already read, then any trailers already read, then the rest of the body.
    struct Prefixed {
        prefix: Option<Bytes>,
        trailers: Option<http::HeaderMap>,
        #[pin]
        rest: GrpcBody,
    }
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if let Some(prefix) = this.prefix.take()
            && !prefix.is_empty()
        {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        if let Some(trailers) = this.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        this.rest.poll_frame(cx)
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.rest.size_hint();
        let extra = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        // Upper first: `set_lower` panics while the new lower bound exceeds the old upper one.
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + extra);
        }
        hint.set_lower(hint.lower() + extra);
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_oversized_body_is_sent_once_whole_with_a_consistent_size_hint() {
        let body = GrpcBody::new(http_body_util::Full::new(Bytes::from(vec![7u8; 100])));
        let Buffered::Once(once) = buffer(body, 10).await.unwrap() else {
            panic!("a body over the limit must not be buffered");
        };
        // The rest is an exact (empty) hint; the prefix must raise both bounds.
        let hint = once.size_hint();
        assert_eq!((hint.lower(), hint.upper()), (100, Some(100)));
        let bytes = once.collect().await.unwrap().to_bytes();
        assert_eq!(bytes.len(), 100);
    }
}
