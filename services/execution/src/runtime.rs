//! Interpreters and tools: how each language is started inside the sandbox, and what is
//! actually installed (probed once at start-up by running `--version` inside the sandbox).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::ExecutionConfig;
use crate::model::{Language, LanguageInfo};
use umcp_sandbox::process::{ExtraBind, RunLimits, RunSpec, Sandbox, SandboxFile, Termination};

/// Where tools appear inside the sandbox.
pub const RUFF_INSIDE: &str = "/opt/tools/ruff";
pub const SHELLCHECK_INSIDE: &str = "/opt/tools/shellcheck";
pub const SITE_PACKAGES_INSIDE: &str = "/opt/site-packages";

/// The fixed environment of every run: nothing from the service's own environment.
pub fn base_env() -> Vec<(String, String)> {
    [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("HOME", "/tmp"),
        ("TMPDIR", "/tmp"),
        ("USER", "sandbox"),
        ("LOGNAME", "sandbox"),
        ("LANG", "C.UTF-8"),
        ("LC_ALL", "C.UTF-8"),
        ("PYTHONDONTWRITEBYTECODE", "1"),
        ("PYTHONUNBUFFERED", "1"),
        // libuv falls back by itself when io_uring is refused, but need not even try.
        ("UV_USE_IO_URING", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A tool found on the host, with its version.
#[derive(Debug, Clone)]
pub struct Tool {
    pub host_path: PathBuf,
    pub version: String,
}

/// What this host can run.
#[derive(Debug, Clone, Default)]
pub struct Runtimes {
    pub languages: Vec<LanguageInfo>,
    pub ruff: Option<Tool>,
    pub shellcheck: Option<Tool>,
    /// Host site-packages directory that holds pytest, and pytest's version.
    pub pytest: Option<Tool>,
}

impl Runtimes {
    pub fn interpreter(&self, language: Language) -> Option<&str> {
        self.languages
            .iter()
            .find(|l| l.language == language)
            .map(|l| l.interpreter.as_str())
    }
}

fn interpreter_path(config: &ExecutionConfig, language: Language) -> &Path {
    match language {
        Language::Python => &config.python,
        Language::JavaScript => &config.node,
        Language::Bash => &config.bash,
    }
}

/// Command line of a program run: interpreter, flags, script, user arguments.
pub fn program_args(language: Language, limits: &RunLimits, args: &[String]) -> Vec<String> {
    let mut argv = match language {
        // -u: unbuffered, so streamed output arrives as produced; -B: no .pyc; -s: no user site.
        Language::Python => vec!["-u".into(), "-B".into(), "-s".into()],
        // Let V8 fail with a JavaScript heap error before the cgroup OOM killer fires.
        Language::JavaScript => {
            let heap_mib = (limits.memory_bytes / (1 << 20)) * 3 / 4;
            vec![format!("--max-old-space-size={}", heap_mib.max(8))]
        }
        Language::Bash => Vec::new(),
    };
    argv.push(format!("/box/{}", language.main_file()));
    argv.extend(args.iter().cloned());
    argv
}

/// A sandbox run of `program` with the fixed environment and the given files.
pub fn spec(
    program: &str,
    args: Vec<String>,
    files: Vec<SandboxFile>,
    limits: RunLimits,
) -> RunSpec {
    RunSpec {
        program: program.into(),
        args,
        env: base_env(),
        files,
        binds: Vec::new(),
        workdir: "/tmp".into(),
        stdin: Vec::new(),
        limits,
        capture_fd3: false,
    }
}

/// Limits for service-internal runs (version probes, linters).
pub fn tool_limits() -> RunLimits {
    RunLimits {
        wall_time: Duration::from_secs(15),
        cpu_time: Duration::from_secs(10),
        memory_bytes: 512 << 20,
        max_processes: 64,
        output_bytes: 4 << 20,
        file_size_bytes: 1 << 20,
        open_files: 256,
        tmp_bytes: 16 << 20,
    }
}

async fn version_of(
    sandbox: &dyn Sandbox,
    program: &str,
    arg: &str,
    binds: Vec<ExtraBind>,
) -> Result<String, String> {
    let mut s = spec(program, vec![arg.into()], Vec::new(), tool_limits());
    s.binds = binds;
    let out = sandbox.run(s, None).await.map_err(|e| e.to_string())?;
    if out.termination != Termination::Ok {
        return Err(format!("{program} {arg} ended with {:?}", out.termination));
    }
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    Ok(String::from_utf8_lossy(&text).trim().to_owned())
}

fn language_version(language: Language, raw: &str) -> String {
    match language {
        Language::Python => raw.lines().next().unwrap_or(raw).to_owned(),
        Language::JavaScript => format!("Node.js {}", raw.lines().next().unwrap_or(raw)),
        Language::Bash => {
            let first = raw.lines().next().unwrap_or(raw);
            let version = first
                .split("version ")
                .nth(1)
                .and_then(|v| v.split(' ').next())
                .unwrap_or(first);
            format!("Bash {version}")
        }
    }
}

/// Finds `<venv>/lib/python3*/site-packages` holding pytest, with pytest's version.
fn find_pytest(venv: &Path) -> Option<Tool> {
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    for entry in lib.flatten() {
        let site = entry.path().join("site-packages");
        if !site.join("pytest").is_dir() {
            continue;
        }
        let version = std::fs::read_dir(&site)
            .ok()?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .find_map(|n| {
                n.strip_prefix("pytest-")?
                    .strip_suffix(".dist-info")
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "unknown".into());
        let site = std::fs::canonicalize(&site).unwrap_or(site);
        return Some(Tool {
            host_path: site,
            version: format!("pytest {version}"),
        });
    }
    None
}

/// Probes interpreters and tools. Fails only when the sandbox itself does not work.
pub async fn probe(sandbox: &dyn Sandbox, config: &ExecutionConfig) -> Result<Runtimes, String> {
    let mut rt = Runtimes::default();
    for language in Language::ALL {
        let path = interpreter_path(config, language);
        if !path.is_file() {
            tracing::warn!(language = language.name(), path = %path.display(), "interpreter not installed");
            continue;
        }
        let program = path.to_string_lossy().into_owned();
        match version_of(sandbox, &program, "--version", Vec::new()).await {
            Ok(raw) => rt.languages.push(LanguageInfo {
                language,
                version: language_version(language, &raw),
                interpreter: program,
            }),
            Err(e) => return Err(format!("sandbox self-test with {program} failed: {e}")),
        }
    }
    let ruff = config.tools_venv.join("bin/ruff");
    if ruff.is_file() {
        let bind = vec![ExtraBind {
            host: ruff.clone(),
            inside: RUFF_INSIDE.into(),
        }];
        match version_of(sandbox, RUFF_INSIDE, "--version", bind).await {
            Ok(v) => {
                rt.ruff = Some(Tool {
                    host_path: ruff,
                    version: v,
                })
            }
            Err(e) => tracing::warn!(error = %e, "ruff found but not usable"),
        }
    }
    if config.shellcheck.is_file() {
        let bind = vec![ExtraBind {
            host: config.shellcheck.clone(),
            inside: SHELLCHECK_INSIDE.into(),
        }];
        match version_of(sandbox, SHELLCHECK_INSIDE, "--version", bind).await {
            Ok(v) => {
                let version = v
                    .lines()
                    .find_map(|l| l.strip_prefix("version: "))
                    .unwrap_or("unknown");
                rt.shellcheck = Some(Tool {
                    host_path: config.shellcheck.clone(),
                    version: format!("shellcheck {version}"),
                });
            }
            Err(e) => tracing::warn!(error = %e, "shellcheck found but not usable"),
        }
    }
    rt.pytest = find_pytest(&config.tools_venv);
    Ok(rt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_normalised() {
        assert_eq!(
            language_version(Language::Python, "Python 3.11.2"),
            "Python 3.11.2"
        );
        assert_eq!(
            language_version(Language::JavaScript, "v20.20.2"),
            "Node.js v20.20.2"
        );
        let bash = "GNU bash, version 5.2.15(1)-release (x86_64-pc-linux-gnu)\nCopyright";
        assert_eq!(
            language_version(Language::Bash, bash),
            "Bash 5.2.15(1)-release"
        );
    }

    #[test]
    fn environment_is_fixed_and_small() {
        let env = base_env();
        assert!(
            env.iter()
                .all(|(k, _)| !k.contains("SECRET") && k != "LD_PRELOAD")
        );
        assert!(env.len() < 16);
    }
}
