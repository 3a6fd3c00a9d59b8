//! The execution service's domain logic: validation, admission, idempotency and sandbox runs.
//! Lint, tests and templates live in their own modules as further `impl` blocks.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::admission::{Admission, AdmissionLimits};
use crate::config::ExecutionConfig;
use crate::error::ExecError;
use crate::idempotency::IdempotencyStore;
use crate::model::{ExecuteInput, ExecutionResult, Language, RunStatus, StreamEvent};
use crate::pool::{self, WarmPool};
use crate::runtime::{self, Runtimes};
use crate::sink::{Activity, ResultSink};
use umcp_sandbox::process::{
    Chunk, NamespaceSandbox, RunError, RunOutput, RunSpec, Sandbox, SandboxFile, StreamKind,
    Termination,
};

/// Largest output chunk sent to a streaming client.
pub const MAX_CHUNK: usize = 64 * 1024;

#[derive(Debug)]
pub struct ExecutionService {
    pub(crate) config: ExecutionConfig,
    pub(crate) sandbox: Arc<dyn Sandbox>,
    pub(crate) admission: Arc<Admission>,
    /// Sandbox runs by how they ended (see [`crate::metrics`]).
    runs: Arc<crate::metrics::RunCounters>,
    idempotency: IdempotencyStore<ExecutionResult>,
    pub(crate) runtimes: Runtimes,
    sink: Option<Arc<dyn ResultSink>>,
    /// Host path of the GenerateCode renderer binary.
    pub(crate) renderer: std::path::PathBuf,
    /// Pre-started sandboxes (see [`WarmPool`]); `None` until [`Self::with_warm_pool`].
    pool: Option<WarmPool>,
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

impl ExecutionService {
    /// Probes the runtimes through `sandbox` (a failing self-test refuses to start).
    pub async fn new(
        config: ExecutionConfig,
        sandbox: Arc<dyn Sandbox>,
        sink: Option<Arc<dyn ResultSink>>,
    ) -> Result<Self, String> {
        config.check()?;
        let renderer = crate::generate::resolve_renderer(&config)?;
        let runtimes = runtime::probe(sandbox.as_ref(), &config).await?;
        if runtimes.languages.is_empty() {
            return Err(
                "no interpreter (python, node, bash) is installed at the configured paths".into(),
            );
        }
        let service = Self {
            runs: Arc::default(),
            admission: Arc::new(Admission::new(AdmissionLimits {
                max_concurrent: config.max_concurrent,
                max_queue: config.max_queue,
                queue_timeout: Duration::from_millis(config.queue_timeout_ms),
                max_per_user: config.max_per_user,
            })),
            idempotency: IdempotencyStore::new(
                Duration::from_secs(config.idempotency_ttl_secs),
                config.idempotency_max_entries,
                usize::try_from(config.idempotency_max_bytes).unwrap_or(usize::MAX),
            ),
            config,
            sandbox,
            runtimes,
            sink,
            renderer,
            pool: None,
        };
        service.self_test_renderer().await?;
        crate::metrics::register_service(&service.runs, &service.admission);
        Ok(service)
    }

    /// Starts the warm pool (see [`crate::pool`]; sizes from `warm_pool_size` and the
    /// per-language keys) in `sandbox`; rootless sandboxes cannot change limits after start and
    /// get none.
    pub fn with_warm_pool(mut self, sandbox: &NamespaceSandbox) -> Self {
        if sandbox.info().backend.contains("rootless") {
            return self;
        }
        let plans: Vec<pool::ShelfPlan> = Language::ALL
            .into_iter()
            .filter_map(|language| {
                Some(pool::ShelfPlan {
                    language,
                    interpreter: self.runtimes.interpreter(language)?.to_owned(),
                    size: self.config.warm_pool_size_of(language),
                    max_limits: self.config.max_limits.to_run_limits(),
                    default_limits: self.config.default_limits.to_run_limits(),
                })
            })
            .filter(|p| p.size > 0)
            .collect();
        if !plans.is_empty() {
            let pool = WarmPool::start(sandbox, &plans);
            crate::metrics::register_pool(&pool.stats());
            self.pool = Some(pool);
        }
        self
    }

    /// Pooled sandboxes waiting for `language` now.
    pub fn warm_ready(&self, language: Language) -> usize {
        self.pool.as_ref().map_or(0, |p| p.ready(language))
    }

    /// Requests of `language` that ran in a pre-started sandbox so far.
    pub fn warm_hits(&self, language: Language) -> u64 {
        self.warm_stat(language, |s| &s.hits)
    }

    /// Requests of a pooled `language` that ran cold so far.
    pub fn warm_misses(&self, language: Language) -> u64 {
        self.warm_stat(language, |s| &s.misses)
    }

    fn warm_stat(
        &self,
        language: Language,
        counter: impl Fn(&pool::PoolStats) -> &std::sync::atomic::AtomicU64,
    ) -> u64 {
        let Some(pool) = &self.pool else { return 0 };
        pool.stats()
            .iter()
            .find(|(l, _)| *l == language)
            .map_or(0, |(_, s)| {
                counter(s).load(std::sync::atomic::Ordering::Relaxed)
            })
    }

    /// Sandbox runs that ended with `status` (a label value of `umcp_execution_runs_total`).
    pub fn runs_with_status(&self, status: &str) -> u64 {
        self.runs.get(status)
    }

    /// The warm pool's counters per pooled language (for metrics).
    pub fn warm_stats(&self) -> Vec<(Language, Arc<pool::PoolStats>)> {
        self.pool.as_ref().map(|p| p.stats()).unwrap_or_default()
    }

    pub fn runtimes(&self) -> &Runtimes {
        &self.runtimes
    }

    pub(crate) fn interpreter(&self, language: Language) -> Result<&str, ExecError> {
        self.runtimes.interpreter(language).ok_or_else(|| {
            let installed: Vec<&str> = self
                .runtimes
                .languages
                .iter()
                .map(|l| l.language.name())
                .collect();
            ExecError::FailedPrecondition(format!(
                "{} is not installed on this server; installed: {}",
                language.name(),
                installed.join(", ")
            ))
        })
    }

    pub(crate) fn report(&self, user: &str, activity: Activity) {
        if let Activity::Execution {
            language, result, ..
        } = &activity
        {
            tracing::info!(
                user,
                language = language.name(),
                id = %result.id,
                status = ?result.status,
                exit_code = result.exit_code,
                wall_ms = result.wall_time.as_millis() as u64,
                cpu_ms = result.cpu_time.as_millis() as u64,
                peak_memory_bytes = result.peak_memory_bytes,
                "execution finished"
            );
        }
        if let Some(sink) = &self.sink {
            let sink = Arc::clone(sink);
            let user = user.to_owned();
            // After the response: persistence is never on the caller's path.
            let span = tracing::debug_span!(parent: None, "exec.persist");
            tokio::spawn(
                async move {
                    if let Err(e) = sink.record(&user, activity).await {
                        tracing::warn!(error = %e, "result sink failed");
                    }
                }
                .instrument(span),
            );
        }
    }

    /// Validates the request and builds the sandbox run, plus the request's fingerprint.
    fn prepare(&self, input: &ExecuteInput) -> Result<(RunSpec, [u8; 32]), ExecError> {
        crate::validate::execute(input)?;
        let interpreter = self.interpreter(input.language)?.to_owned();
        let limits = crate::validate::limits(
            &input.limits,
            &self.config.default_limits,
            &self.config.max_limits,
        )?;
        let files = vec![SandboxFile {
            path: input.language.main_file().into(),
            contents: input.code.clone().into_bytes(),
        }];
        let mut spec = runtime::spec(
            &interpreter,
            runtime::program_args(input.language, &limits, &input.args),
            files,
            limits,
        );
        spec.stdin = input.stdin.clone();
        let mut h = Sha256::new();
        h.update(input.language.name());
        for part in [input.code.as_bytes(), &input.stdin] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        for a in &input.args {
            h.update((a.len() as u64).to_le_bytes());
            h.update(a.as_bytes());
        }
        h.update(format!("{limits:?}"));
        Ok((spec, h.finalize().into()))
    }

    /// Admits `user` and runs `spec`, mapping sandbox failures to results or errors.
    pub(crate) async fn run_admitted(
        &self,
        user: &str,
        spec: RunSpec,
        chunks: Option<mpsc::Sender<Chunk>>,
    ) -> Result<Result<RunOutput, RunError>, ExecError> {
        let _ticket = self
            .admission
            .admit(user)
            .instrument(tracing::debug_span!("exec.admission"))
            .await?;
        let run = self
            .sandbox
            .run(spec, chunks)
            .instrument(tracing::debug_span!("exec.sandbox"));
        self.run_error(run.await)
    }

    /// [`Self::run_admitted`] for user code: in a pre-started sandbox of the warm pool when
    /// one is waiting for the language, else cold.
    async fn run_code(
        &self,
        user: &str,
        input: &ExecuteInput,
        spec: RunSpec,
        chunks: Option<mpsc::Sender<Chunk>>,
    ) -> Result<Result<RunOutput, RunError>, ExecError> {
        let Some(pool) = &self.pool else {
            return self.run_admitted(user, spec, chunks).await;
        };
        let handover = pool::handover(
            input.language,
            &input.code,
            &input.args,
            spec.stdin.clone(),
            spec.limits,
        );
        let Some(handover) = handover else {
            pool.missed(input.language);
            return self.run_admitted(user, spec, chunks).await;
        };
        let _ticket = self
            .admission
            .admit(user)
            .instrument(tracing::debug_span!("exec.admission"))
            .await?;
        let Some(taken) = pool.take(input.language, &handover.limits) else {
            let run = self
                .sandbox
                .run(spec, chunks)
                .instrument(tracing::debug_span!("exec.sandbox"));
            return self.run_error(run.await);
        };
        let run = pool
            .run(taken, handover, chunks)
            .instrument(tracing::debug_span!("exec.sandbox", pooled = true));
        self.run_error(run.await)
    }

    /// Counts the outcome, and turns a request the sandbox refused into an error.
    fn run_error(
        &self,
        outcome: Result<RunOutput, RunError>,
    ) -> Result<Result<RunOutput, RunError>, ExecError> {
        self.runs.count(&outcome);
        match outcome {
            Err(RunError::Invalid(m)) => Err(ExecError::InvalidArgument(m)),
            Err(RunError::Cancelled) => Err(ExecError::Cancelled),
            other => Ok(other),
        }
    }

    /// Runs code and returns the whole result.
    pub async fn execute(
        &self,
        user: &str,
        input: ExecuteInput,
    ) -> Result<ExecutionResult, ExecError> {
        let (spec, fingerprint) = {
            let _span = tracing::debug_span!("exec.validate").entered();
            self.prepare(&input)?
        };
        let run = || async {
            let outcome = self.run_code(user, &input, spec, None).await?;
            let _span = tracing::debug_span!("exec.result").entered();
            let result = to_result(outcome);
            self.report(
                user,
                Activity::Execution {
                    language: input.language,
                    code_sha256: sha256_hex(input.code.as_bytes()),
                    result: result.clone(),
                },
            );
            Ok(result)
        };
        match &input.idempotency_key {
            None => run().await,
            Some(key) => {
                let (mut result, replayed) = self
                    .idempotency
                    .run_once(user, key, fingerprint, run)
                    .await?;
                result.replayed = replayed;
                Ok(result)
            }
        }
    }

    /// Starts a streaming run: chunks as produced, then one result (or one error).
    pub fn execute_stream(
        self: &Arc<Self>,
        user: String,
        input: ExecuteInput,
    ) -> Result<mpsc::Receiver<Result<StreamEvent, ExecError>>, ExecError> {
        let (spec, fingerprint) = self.prepare(&input)?;
        let (tx, rx) = mpsc::channel(32);
        let this = Arc::clone(self);
        // The run outlives the handler's task: carry the caller's deadline into it.
        let deadline = crate::admission::call_deadline();
        tokio::spawn(crate::admission::with_deadline(deadline, async move {
            let outcome = this.stream_run(&user, &input, spec, fingerprint, &tx).await;
            let event = outcome.map(|mut r| {
                r.stdout.clear();
                r.stderr.clear();
                StreamEvent::Result(Box::new(r))
            });
            let _ = tx.send(event).await;
        }));
        Ok(rx)
    }

    async fn stream_run(
        &self,
        user: &str,
        input: &ExecuteInput,
        spec: RunSpec,
        fingerprint: [u8; 32],
        tx: &mpsc::Sender<Result<StreamEvent, ExecError>>,
    ) -> Result<ExecutionResult, ExecError> {
        // With an idempotency key the output is also kept, so a replay can stream it again.
        let keep = input.idempotency_key.is_some();
        let run = || async {
            let (chunk_tx, mut chunk_rx) = mpsc::channel::<Chunk>(16);
            let forward = async {
                let (mut out, mut err) = (Vec::new(), Vec::new());
                while let Some(chunk) = chunk_rx.recv().await {
                    if keep {
                        match chunk.stream {
                            StreamKind::Stdout => out.extend_from_slice(&chunk.data),
                            StreamKind::Stderr => err.extend_from_slice(&chunk.data),
                        }
                    }
                    let event = StreamEvent::Output {
                        stream: chunk.stream,
                        data: chunk.data,
                    };
                    if tx.send(Ok(event)).await.is_err() {
                        // The client is gone: dropping the receiver stops the run.
                        break;
                    }
                }
                (out, err)
            };
            let (outcome, (out, err)) =
                tokio::join!(self.run_code(user, input, spec, Some(chunk_tx)), forward);
            let mut result = to_result(outcome?);
            result.stdout = out;
            result.stderr = err;
            self.report(
                user,
                Activity::Execution {
                    language: input.language,
                    code_sha256: sha256_hex(input.code.as_bytes()),
                    result: result.clone(),
                },
            );
            Ok(result)
        };
        let Some(key) = &input.idempotency_key else {
            return run().await;
        };
        let (mut result, replayed) = self
            .idempotency
            .run_once(user, key, fingerprint, run)
            .await?;
        result.replayed = replayed;
        if replayed {
            for (stream, data) in [
                (StreamKind::Stdout, &result.stdout),
                (StreamKind::Stderr, &result.stderr),
            ] {
                for piece in data.chunks(MAX_CHUNK) {
                    let event = StreamEvent::Output {
                        stream,
                        data: piece.to_vec(),
                    };
                    if tx.send(Ok(event)).await.is_err() {
                        return Err(ExecError::Cancelled);
                    }
                }
            }
        }
        Ok(result)
    }
}

impl crate::idempotency::Weigh for ExecutionResult {
    fn weight(&self) -> usize {
        self.stdout.len() + self.stderr.len() + self.id.len() + 128
    }
}

pub(crate) fn status_of(t: Termination) -> RunStatus {
    match t {
        Termination::Ok => RunStatus::Ok,
        Termination::RuntimeError => RunStatus::RuntimeError,
        Termination::Timeout => RunStatus::Timeout,
        Termination::CpuLimit => RunStatus::CpuLimit,
        Termination::MemoryLimit => RunStatus::MemoryLimit,
        Termination::OutputLimit => RunStatus::OutputLimit,
    }
}

/// Maps a sandbox outcome to a result; setup failures become SANDBOX_ERROR results (details
/// are logged, not sent: they describe the host).
pub(crate) fn to_result(outcome: Result<RunOutput, RunError>) -> ExecutionResult {
    match outcome {
        Ok(o) => ExecutionResult {
            id: new_id(),
            status: status_of(o.termination),
            exit_code: o.exit_code.unwrap_or(-1),
            signal: o.signal.unwrap_or(0),
            stdout: o.stdout,
            stderr: o.stderr,
            stdout_truncated: o.stdout_truncated,
            stderr_truncated: o.stderr_truncated,
            wall_time: o.wall_time,
            cpu_time: o.cpu_time,
            peak_memory_bytes: o.peak_memory_bytes,
            replayed: false,
        },
        Err(e) => {
            tracing::error!(error = %e, "sandbox failed");
            ExecutionResult {
                id: new_id(),
                status: RunStatus::SandboxError,
                exit_code: -1,
                signal: 0,
                stdout: Vec::new(),
                stderr: b"the sandbox could not be set up; the code did not run".to_vec(),
                stdout_truncated: false,
                stderr_truncated: false,
                wall_time: Duration::ZERO,
                cpu_time: Duration::ZERO,
                peak_memory_bytes: 0,
                replayed: false,
            }
        }
    }
}
