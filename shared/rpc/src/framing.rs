//! Request framing checks in front of every umcp method, so malformed calls get a precise
//! status instead of tonic's `INTERNAL` (which also reads as a server fault in dashboards and
//! raises a `system_error` audit event).
//!
//! * `content-type` must be `application/grpc` (optionally `+proto`): anything else is
//!   answered with HTTP 415 and `grpc-status: INVALID_ARGUMENT` (gRPC over HTTP/2 spec).
//! * Every umcp method takes exactly one request message (none is client-streaming; a test
//!   walks the descriptor set), so the body must hold exactly one complete, uncompressed
//!   message of at most [`MAX_MESSAGE_BYTES`]: no message, a second message, a body that ends
//!   inside a message, a compressed or unknown flag byte are `INVALID_ARGUMENT`; an oversized
//!   message is `RESOURCE_EXHAUSTED` naming the limit.
//!
//! Health and reflection (not umcp methods; reflection is a bidirectional stream) keep tonic's
//! own handling. The body is checked as it streams, without copying or buffering it.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame};
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::serve::MAX_MESSAGE_BYTES;

/// Length of the gRPC message prefix: one flag byte and a big-endian u32 length.
const PREFIX: usize = 5;

/// Whether `headers` announce a gRPC request.
#[must_use]
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.trim();
            ct == "application/grpc"
                || ct.starts_with("application/grpc+")
                || ct.starts_with("application/grpc;")
        })
}

/// The answer to a request that is not gRPC: HTTP 415 carrying an `INVALID_ARGUMENT` status.
#[must_use]
pub fn not_grpc(headers: &HeaderMap) -> Response<Body> {
    let got = headers
        .get(http::header::CONTENT_TYPE)
        .map_or("no content-type".to_owned(), |v| {
            format!("content-type `{}`", String::from_utf8_lossy(v.as_bytes()))
        });
    let status = Status::invalid_argument(format!(
        "this is a gRPC endpoint: requests must have content-type `application/grpc`, got {got}"
    ));
    let mut response = status.into_http::<Body>();
    *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

/// Layer adding [`Framing`].
#[derive(Debug, Clone, Copy, Default)]
pub struct FramingLayer;

impl<S> Layer<S> for FramingLayer {
    type Service = Framing<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Framing { inner }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Framing<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for Framing<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = futures::future::Either<
        S::Future,
        futures::future::Ready<Result<Response<Body>, Infallible>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if !request.uri().path().starts_with("/umcp.") {
            return futures::future::Either::Left(self.inner.call(request.map(Body::new)));
        }
        if !is_grpc(request.headers()) {
            let response = not_grpc(request.headers());
            return futures::future::Either::Right(futures::future::ready(Ok(response)));
        }
        let request = request.map(|body| Body::new(OneMessage::new(body)));
        futures::future::Either::Left(self.inner.call(request))
    }
}

/// Where the checker is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `have` bytes of the prefix seen (its bytes kept in `prefix`).
    Prefix { have: usize },
    /// `left` payload bytes still to come.
    Payload { left: usize },
    /// One whole message seen; only trailers or the end may follow.
    Done,
}

pin_project_lite::pin_project! {
    /// A request body that must carry exactly one well-formed gRPC message.
    struct OneMessage<B> {
        #[pin]
        inner: B,
        state: State,
        prefix: [u8; PREFIX],
        failed: bool,
    }
}

impl<B> OneMessage<B> {
    fn new(inner: B) -> Self {
        Self {
            inner,
            state: State::Prefix { have: 0 },
            prefix: [0; PREFIX],
            failed: false,
        }
    }
}

/// Advances `state` over `data`; the first framing error found.
fn scan(state: &mut State, prefix: &mut [u8; PREFIX], mut data: &[u8]) -> Result<(), Status> {
    while !data.is_empty() {
        match *state {
            State::Done => {
                return Err(Status::invalid_argument(
                    "a umcp call carries exactly one request message; the body holds more",
                ));
            }
            State::Prefix { have } => {
                let take = (PREFIX - have).min(data.len());
                prefix[have..have + take].copy_from_slice(&data[..take]);
                data = &data[take..];
                if have + take < PREFIX {
                    *state = State::Prefix { have: have + take };
                    continue;
                }
                let mut header = &prefix[..];
                let flag = header.get_u8();
                let len = header.get_u32() as usize;
                check_prefix(flag, len)?;
                *state = if len == 0 {
                    State::Done
                } else {
                    State::Payload { left: len }
                };
            }
            State::Payload { left } => {
                let take = left.min(data.len());
                data = &data[take..];
                *state = if take == left {
                    State::Done
                } else {
                    State::Payload { left: left - take }
                };
            }
        }
    }
    Ok(())
}

fn check_prefix(flag: u8, len: usize) -> Result<(), Status> {
    match flag {
        0 => {}
        1 => {
            return Err(Status::invalid_argument(
                "the request message is marked compressed; umcp accepts uncompressed messages only",
            ));
        }
        other => {
            return Err(Status::invalid_argument(format!(
                "the message prefix has flag byte {other}; gRPC allows 0 (uncompressed) or 1"
            )));
        }
    }
    if len > MAX_MESSAGE_BYTES {
        return Err(Status::resource_exhausted(format!(
            "the request message is {len} bytes; the limit is {MAX_MESSAGE_BYTES} bytes (4 MiB)"
        )));
    }
    Ok(())
}

/// The check at the end of the body.
fn at_end(state: State) -> Result<(), Status> {
    match state {
        State::Done => Ok(()),
        State::Prefix { have: 0 } => Err(Status::invalid_argument(
            "the request carries no message; a umcp call needs exactly one",
        )),
        State::Prefix { have } => Err(Status::invalid_argument(format!(
            "the request body ends inside a message prefix ({have} of {PREFIX} bytes)"
        ))),
        State::Payload { left } => Err(Status::invalid_argument(format!(
            "the request body ends {left} bytes before the end of its message"
        ))),
    }
}

impl<B> HttpBody for OneMessage<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        let result = match ready!(this.inner.poll_frame(cx)) {
            None => at_end(*this.state).err().map(Err),
            Some(Err(error)) => Some(Err(Status::from_error(error.into()))),
            Some(Ok(frame)) => match frame.data_ref() {
                Some(data) => match scan(this.state, this.prefix, data) {
                    Ok(()) => Some(Ok(frame)),
                    Err(status) => Some(Err(status)),
                },
                // Trailers end the body: the message must be complete by then.
                None => match at_end(*this.state) {
                    Ok(()) => Some(Ok(frame)),
                    Err(status) => Some(Err(status)),
                },
            },
        };
        if matches!(result, Some(Err(_))) {
            *this.failed = true;
        }
        Poll::Ready(result)
    }

    fn is_end_stream(&self) -> bool {
        // The end must be polled, so the "no message" and "ends inside a message" checks run.
        self.failed
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn run(chunks: &[&[u8]]) -> Result<(), Status> {
        let (mut state, mut prefix) = (State::Prefix { have: 0 }, [0; PREFIX]);
        for chunk in chunks {
            scan(&mut state, &mut prefix, chunk)?;
        }
        at_end(state)
    }

    #[test]
    fn one_message_in_any_split_passes() {
        let body = frame(0, b"hello");
        assert!(run(&[&body]).is_ok());
        for cut in 0..body.len() {
            assert!(run(&[&body[..cut], &body[cut..]]).is_ok(), "cut at {cut}");
        }
        assert!(
            run(&[&frame(0, b"")]).is_ok(),
            "an empty message is one message"
        );
    }

    #[test]
    fn every_malformed_body_has_a_precise_code() {
        let one = frame(0, b"abc");
        let two = [one.clone(), one.clone()].concat();
        let cases: [(&[u8], tonic::Code, &str); 6] = [
            (b"", tonic::Code::InvalidArgument, "no message"),
            (&one[..3], tonic::Code::InvalidArgument, "prefix"),
            (&one[..6], tonic::Code::InvalidArgument, "before the end"),
            (&two, tonic::Code::InvalidArgument, "exactly one"),
            (
                &frame(1, b"abc"),
                tonic::Code::InvalidArgument,
                "compressed",
            ),
            (
                &frame(7, b"abc"),
                tonic::Code::InvalidArgument,
                "flag byte 7",
            ),
        ];
        for (body, code, text) in cases {
            let err = run(&[body]).expect_err(text);
            assert_eq!(err.code(), code, "{text}: {err:?}");
            assert!(err.message().contains(text), "{text}: {}", err.message());
        }
        let mut huge = vec![0u8];
        huge.extend_from_slice(&(u32::MAX).to_be_bytes());
        let err = run(&[&huge]).expect_err("oversized");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("4 MiB"), "{}", err.message());
    }

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        assert!(!is_grpc(&h));
        for (ct, ok) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("application/json", false),
            ("text/plain", false),
            ("application/grpcx", false),
        ] {
            h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_grpc(&h), ok, "{ct}");
        }
        let response = not_grpc(&h);
        assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(response.headers()["grpc-status"], "3");
    }

    /// The framing rule assumes no umcp method streams its requests.
    #[test]
    fn no_umcp_method_is_client_streaming() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(umcp_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        for file in set.file.iter().filter(|f| f.package().starts_with("umcp.")) {
            for service in &file.service {
                for method in &service.method {
                    assert!(
                        !method.client_streaming(),
                        "{}.{} streams requests: teach rpc::framing about it",
                        service.name(),
                        method.name()
                    );
                }
            }
        }
    }
}
