//! GenerateCode through the sandbox: the template is rendered by the renderer mode of this
//! binary ([`crate::render`]) in a sandbox run with its own memory, CPU, wall and output limits,
//! so no template can grow the service's memory or hold its threads.

use std::path::{Path, PathBuf};
use std::time::Duration;

use umcp_sandbox::process::{ExtraBind, RunError, RunLimits, Termination};

use crate::config::ExecutionConfig;
use crate::error::ExecError;
use crate::model::{GenerateInput, Generated};
use crate::render;
use crate::service::{ExecutionService, new_id, sha256_hex};
use crate::sink::Activity;
use crate::template::{self, FailureKind, RenderFailure};

/// Where the renderer binary appears inside the sandbox.
pub const RENDERER_INSIDE: &str = "/opt/renderer/umcp-execution";

/// The renderer binary: `renderer` (`UMCP_RENDERER`) when set, else this executable; when this
/// executable is not `umcp-execution` (a test harness serving in-process), the
/// `umcp-execution` next to it or one directory up (cargo's `target/<profile>/deps` layout).
pub fn resolve_renderer(config: &ExecutionConfig) -> Result<PathBuf, String> {
    if !config.renderer.as_os_str().is_empty() {
        return if config.renderer.is_file() {
            Ok(config.renderer.clone())
        } else {
            Err(format!(
                "renderer (UMCP_RENDERER) = {} is not a file; it must name the umcp-execution binary",
                config.renderer.display()
            ))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    if exe
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("umcp-execution"))
    {
        return Ok(exe);
    }
    let dir = exe.parent().unwrap_or(Path::new("/"));
    [dir, dir.parent().unwrap_or(dir)]
        .iter()
        .map(|d| d.join("umcp-execution"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "no renderer: set renderer (UMCP_RENDERER) to the umcp-execution binary".to_string()
        })
}

/// Sandbox limits of one render, from the `render_*` configuration.
fn render_limits(config: &ExecutionConfig) -> RunLimits {
    RunLimits {
        wall_time: Duration::from_millis(config.render_wall_time_ms),
        cpu_time: Duration::from_millis(config.render_cpu_time_ms),
        memory_bytes: config.render_memory_bytes,
        max_processes: 8,
        // Above the renderer's own cap, so the renderer reports the cap precisely first.
        output_bytes: config.render_output_bytes + (64 << 10),
        file_size_bytes: 1,
        open_files: 16,
        tmp_bytes: 1 << 20,
    }
}

fn from_failure(f: RenderFailure) -> ExecError {
    match f.kind {
        FailureKind::Context | FailureKind::Template => ExecError::InvalidArgument(f.to_string()),
        FailureKind::Fuel | FailureKind::Output => ExecError::ResourceExhausted(f.to_string()),
    }
}

impl ExecutionService {
    /// GenerateCode: renders the template in the sandbox and records the generation (by the
    /// hashes of template, context and output, not their text).
    pub async fn generate_code(
        &self,
        user: &str,
        input: GenerateInput,
    ) -> Result<Generated, ExecError> {
        let template_sha256 = sha256_hex(input.template.as_bytes());
        let context_sha256 = sha256_hex(input.context_json.as_bytes());
        let output = self
            .generate(user, &input.template, &input.context_json)
            .await?;
        let id = new_id();
        self.report(
            user,
            Activity::Generation {
                id: id.clone(),
                language: input.language,
                template_sha256,
                context_sha256,
                output_sha256: sha256_hex(output.as_bytes()),
                output_bytes: output.len() as u64,
            },
        );
        Ok(Generated { id, output })
    }

    /// Renders `template` with `context_json` in the sandbox.
    pub async fn generate(
        &self,
        user: &str,
        template: &str,
        context_json: &str,
    ) -> Result<String, ExecError> {
        if template.len() > template::MAX_TEMPLATE_BYTES {
            return Err(ExecError::invalid("template is larger than 256 KiB"));
        }
        if context_json.len() > template::MAX_CONTEXT_BYTES {
            return Err(ExecError::invalid("context_json is larger than 1 MiB"));
        }
        let c = &self.config;
        let mut spec = crate::runtime::spec(
            RENDERER_INSIDE,
            vec![render::FLAG.into(), c.render_output_bytes.to_string()],
            Vec::new(),
            render_limits(c),
        );
        spec.binds = vec![ExtraBind {
            host: self.renderer.clone(),
            inside: RENDERER_INSIDE.into(),
        }];
        spec.stdin = render::encode_request(template, context_json);
        let out = match self.run_admitted(user, spec, None).await? {
            Ok(out) => out,
            Err(e @ (RunError::Setup { .. } | RunError::Resource(_))) => {
                tracing::error!(error = %e, "renderer sandbox failed");
                return Err(ExecError::Unavailable(
                    "the sandbox could not be set up; the template was not rendered".into(),
                ));
            }
            Err(e) => return Err(ExecError::Unavailable(e.to_string())),
        };
        let exhausted = |what: String| Err(ExecError::ResourceExhausted(what));
        match out.termination {
            Termination::Ok => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
            Termination::MemoryLimit => exhausted(format!(
                "the template needed more than render_memory_bytes = {} bytes",
                c.render_memory_bytes
            )),
            Termination::CpuLimit => exhausted(format!(
                "the template used more than render_cpu_time_ms = {} ms of CPU",
                c.render_cpu_time_ms
            )),
            Termination::OutputLimit => exhausted(format!(
                "the output exceeds the output cap of {} bytes",
                c.render_output_bytes
            )),
            Termination::Timeout => Err(ExecError::DeadlineExceeded(format!(
                "the template took longer than render_wall_time_ms = {} ms",
                c.render_wall_time_ms
            ))),
            Termination::RuntimeError => {
                match serde_json::from_slice::<RenderFailure>(&out.stderr) {
                    Ok(f) if out.exit_code == Some(i32::from(render::EXIT_RENDER_ERROR)) => {
                        Err(from_failure(f))
                    }
                    // An allocation the kernel refuses outright (larger than memory can
                    // ever be) aborts the renderer before the cgroup limit is reached.
                    _ if out.signal == Some(libc::SIGABRT)
                        || String::from_utf8_lossy(&out.stderr).contains("memory allocation") =>
                    {
                        exhausted(format!(
                            "the template needed more than render_memory_bytes = {} bytes",
                            c.render_memory_bytes
                        ))
                    }
                    _ => {
                        tracing::error!(
                            exit_code = ?out.exit_code,
                            signal = ?out.signal,
                            stderr = %String::from_utf8_lossy(&out.stderr),
                            "renderer ended without a result"
                        );
                        Err(ExecError::Internal(
                            "the renderer ended without a result".into(),
                        ))
                    }
                }
            }
        }
    }

    /// Renders a known template at start-up, so a renderer that cannot run in the sandbox is
    /// reported at boot, not at the first call.
    pub(crate) async fn self_test_renderer(&self) -> Result<(), String> {
        let out = self
            .generate(
                "self-test",
                "{{ a }}-{{ b | length }}",
                r#"{"a":"ok","b":[1,2]}"#,
            )
            .await
            .map_err(|e| {
                format!(
                    "renderer self-test with {} failed: {e}",
                    self.renderer.display()
                )
            })?;
        if out != "ok-2" {
            return Err(format!("renderer self-test rendered {out:?}, not \"ok-2\""));
        }
        Ok(())
    }
}
