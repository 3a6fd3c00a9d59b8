//! A real tonic server implementing the execution API for the gateway tests: it records the
//! metadata each call arrived with and obeys tiny commands in `code` (`sleep:<ms>`,
//! `chunks:<n>:<ms>`), so tests can observe forwarding, deadlines and streaming timing.

use std::pin::Pin;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use umcp_proto::execution::v1::execution_service_server::{
    ExecutionService, ExecutionServiceServer,
};
use umcp_proto::execution::v1::{
    ExecuteRequest, ExecuteResponse, ExecuteStreamRequest, ExecuteStreamResponse,
    GenerateCodeRequest, GenerateCodeResponse, LintRequest, LintResponse, ListLanguagesRequest,
    ListLanguagesResponse, OutputChunk, RunTestsRequest, RunTestsResponse, Stream as OutStream,
    execute_stream_response,
};
use umcp_testkit::Spawned;

/// What one call arrived with.
#[derive(Debug, Clone, Default)]
pub(crate) struct Seen {
    pub(crate) correlation_id: Option<String>,
    pub(crate) timeout: Option<Duration>,
}

#[derive(Debug, Clone, Default)]
struct Backend {
    seen: Arc<Mutex<Vec<Seen>>>,
}

pub(crate) struct Recorder {
    server: Spawned,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    pub(crate) async fn start() -> Self {
        let backend = Backend::default();
        let seen = Arc::clone(&backend.seen);
        let server = Spawned::start(|listener, shutdown| async move {
            umcp_rpc::Server::new("recording")
                .add_service(ExecutionServiceServer::new(backend))
                .serve(listener, shutdown.wait())
                .await
        })
        .await;
        Self { server, seen }
    }

    pub(crate) fn url(&self) -> String {
        self.server.url()
    }

    pub(crate) fn seen_count(&self) -> usize {
        self.seen.lock().len()
    }

    pub(crate) fn last(&self) -> Seen {
        self.seen
            .lock()
            .last()
            .cloned()
            .expect("the backend saw a call")
    }
}

impl Backend {
    fn record<T>(&self, request: &Request<T>) {
        let metadata = request.metadata();
        let text = |key: &str| {
            metadata
                .get(key)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let seen = Seen {
            correlation_id: text("x-correlation-id"),
            timeout: text("grpc-timeout").and_then(|t| umcp_rpc::deadline::parse(&t)),
        };
        self.seen.lock().push(seen);
    }
}

fn command(code: &str) -> Vec<u64> {
    code.split(':')
        .skip(1)
        .filter_map(|n| n.parse().ok())
        .collect()
}

type OutputStream = Pin<Box<dyn Stream<Item = Result<ExecuteStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExecutionService for Backend {
    async fn execute(
        &self,
        request: Request<ExecuteRequest>,
    ) -> Result<Response<ExecuteResponse>, Status> {
        self.record(&request);
        let code = request.into_inner().code;
        if code.starts_with("sleep:") {
            let ms = command(&code).first().copied().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        Ok(Response::new(ExecuteResponse::default()))
    }

    type ExecuteStreamStream = OutputStream;

    async fn execute_stream(
        &self,
        request: Request<ExecuteStreamRequest>,
    ) -> Result<Response<Self::ExecuteStreamStream>, Status> {
        self.record(&request);
        let code = request.into_inner().request.unwrap_or_default().code;
        let args = command(&code);
        let count = args.first().copied().unwrap_or(1);
        let pause = Duration::from_millis(args.get(1).copied().unwrap_or(0));
        Ok(Response::new(Box::pin(chunks(count, pause))))
    }

    async fn lint(&self, _: Request<LintRequest>) -> Result<Response<LintResponse>, Status> {
        Err(Status::unimplemented("not part of the recording backend"))
    }

    async fn run_tests(
        &self,
        _: Request<RunTestsRequest>,
    ) -> Result<Response<RunTestsResponse>, Status> {
        Err(Status::unimplemented("not part of the recording backend"))
    }

    async fn generate_code(
        &self,
        _: Request<GenerateCodeRequest>,
    ) -> Result<Response<GenerateCodeResponse>, Status> {
        Err(Status::unimplemented("not part of the recording backend"))
    }

    async fn list_languages(
        &self,
        _: Request<ListLanguagesRequest>,
    ) -> Result<Response<ListLanguagesResponse>, Status> {
        Err(Status::unimplemented("not part of the recording backend"))
    }
}

/// `count` stdout chunks `"0"`, `"1"`, … `pause` apart, then a result.
fn chunks(
    count: u64,
    pause: Duration,
) -> impl Stream<Item = Result<ExecuteStreamResponse, Status>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        for i in 0..count {
            if i > 0 {
                tokio::time::sleep(pause).await;
            }
            let chunk = execute_stream_response::Event::Output(OutputChunk {
                stream: OutStream::Stdout as i32,
                data: i.to_string().into_bytes(),
            });
            let message = ExecuteStreamResponse { event: Some(chunk) };
            if tx.send(Ok(message)).await.is_err() {
                return;
            }
        }
        let result = execute_stream_response::Event::Result(ExecuteResponse::default());
        let _ = tx
            .send(Ok(ExecuteStreamResponse {
                event: Some(result),
            }))
            .await;
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
