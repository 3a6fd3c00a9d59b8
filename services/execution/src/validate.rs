//! Request checks and limit resolution. Every refusal says what is allowed.

use std::time::Duration;

use crate::config::LimitBounds;
use crate::error::ExecError;
use crate::model::{ExecuteInput, LimitRequest, SourceFile, TestsInput};
use umcp_sandbox::process::RunLimits;

pub const MAX_CODE_BYTES: usize = 256 * 1024;
pub const MAX_STDIN_BYTES: usize = 1024 * 1024;
pub const MAX_ARGS: usize = 64;
pub const MAX_ARG_BYTES: usize = 4096;
pub const MAX_TEST_FILES: usize = 32;
pub const MAX_TEST_TOTAL_BYTES: usize = 1024 * 1024;
const MIN_MEMORY_BYTES: u64 = 16 << 20;

pub fn code(code: &str) -> Result<(), ExecError> {
    if code.is_empty() {
        return Err(ExecError::invalid(
            "code is empty; send 1 byte to 256 KiB of source",
        ));
    }
    if code.len() > MAX_CODE_BYTES {
        return Err(ExecError::invalid(format!(
            "code is {} bytes; at most {MAX_CODE_BYTES} bytes (256 KiB) are allowed",
            code.len()
        )));
    }
    if code.contains('\0') {
        return Err(ExecError::invalid("code must not contain NUL characters"));
    }
    Ok(())
}

pub fn execute(input: &ExecuteInput) -> Result<(), ExecError> {
    code(&input.code)?;
    if input.stdin.len() > MAX_STDIN_BYTES {
        return Err(ExecError::invalid(format!(
            "stdin is {} bytes; at most {MAX_STDIN_BYTES} bytes (1 MiB) are allowed",
            input.stdin.len()
        )));
    }
    if input.args.len() > MAX_ARGS {
        return Err(ExecError::invalid(format!(
            "{} args; at most {MAX_ARGS} are allowed",
            input.args.len()
        )));
    }
    for (i, a) in input.args.iter().enumerate() {
        if a.len() > MAX_ARG_BYTES || a.contains('\0') {
            return Err(ExecError::invalid(format!(
                "args[{i}] must be at most {MAX_ARG_BYTES} bytes without NUL characters"
            )));
        }
    }
    if let Some(key) = &input.idempotency_key {
        crate::idempotency::validate_key(key)?;
    }
    Ok(())
}

/// Applies defaults and refuses anything above the maxima.
pub fn limits(
    req: &LimitRequest,
    defaults: &LimitBounds,
    max: &LimitBounds,
) -> Result<RunLimits, ExecError> {
    fn pick(
        name: &str,
        unit: &str,
        asked: Option<u64>,
        default: u64,
        max: u64,
    ) -> Result<u64, ExecError> {
        match asked {
            None | Some(0) => Ok(default),
            Some(v) if v > max => Err(ExecError::invalid(format!(
                "limits.{name} = {v}{unit} exceeds the maximum of {max}{unit}"
            ))),
            Some(v) => Ok(v),
        }
    }
    let ms = |d: Option<Duration>| d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let l = RunLimits {
        wall_time: Duration::from_millis(pick(
            "wall_time",
            " ms",
            ms(req.wall_time),
            defaults.wall_time_ms,
            max.wall_time_ms,
        )?),
        cpu_time: Duration::from_millis(pick(
            "cpu_time",
            " ms",
            ms(req.cpu_time),
            defaults.cpu_time_ms,
            max.cpu_time_ms,
        )?),
        memory_bytes: pick(
            "memory_bytes",
            " bytes",
            req.memory_bytes,
            defaults.memory_bytes,
            max.memory_bytes,
        )?,
        max_processes: pick(
            "max_processes",
            "",
            req.max_processes.map(u64::from),
            defaults.max_processes.into(),
            max.max_processes.into(),
        )? as u32,
        output_bytes: pick(
            "output_bytes",
            " bytes",
            req.output_bytes,
            defaults.output_bytes,
            max.output_bytes,
        )?,
        file_size_bytes: pick(
            "file_size_bytes",
            " bytes",
            req.file_size_bytes,
            defaults.file_size_bytes,
            max.file_size_bytes,
        )?,
        open_files: pick(
            "open_files",
            "",
            req.open_files.map(u64::from),
            defaults.open_files.into(),
            max.open_files.into(),
        )? as u32,
        tmp_bytes: pick(
            "tmp_bytes",
            " bytes",
            req.tmp_bytes,
            defaults.tmp_bytes,
            max.tmp_bytes,
        )?,
    };
    if l.memory_bytes < MIN_MEMORY_BYTES {
        return Err(ExecError::invalid(format!(
            "limits.memory_bytes = {} is below the minimum of {MIN_MEMORY_BYTES} bytes (16 MiB)",
            l.memory_bytes
        )));
    }
    if l.open_files < 8 {
        return Err(ExecError::invalid("limits.open_files must be at least 8"));
    }
    Ok(l)
}

/// Checks a RunTests file path: 1–128 characters [A-Za-z0-9_./-], relative, no `..`, `.py`.
fn test_path(f: &SourceFile) -> Result<(), ExecError> {
    let p = &f.path;
    let ok = (1..=128).contains(&p.len())
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./-".contains(&b))
        && !p.starts_with('/')
        && p.split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && p.ends_with(".py");
    if !ok {
        return Err(ExecError::invalid(format!(
            "file path {p:?} must be a relative path of 1-128 characters [A-Za-z0-9_./-] ending in .py, without '..'"
        )));
    }
    if f.content.len() > MAX_CODE_BYTES || f.content.contains('\0') {
        return Err(ExecError::invalid(format!(
            "file {p:?} must be at most 256 KiB without NUL characters"
        )));
    }
    Ok(())
}

/// Top-level names that would shadow pytest or its dependencies (the working directory comes
/// first on `sys.path`).
const RESERVED_MODULES: &[&str] = &[
    "pytest",
    "_pytest",
    "pluggy",
    "py",
    "iniconfig",
    "packaging",
];

/// Python module name of a path, normalised the way a case-insensitive import would see it.
fn module_name(path: &str) -> String {
    path.trim_end_matches(".py")
        .trim_end_matches("/__init__")
        .replace('/', ".")
        .to_ascii_lowercase()
}

/// Two files that import as the same module, or a file shadowing a reserved module, are
/// refused naming both.
fn module_names(all: &[&SourceFile]) -> Result<(), ExecError> {
    let mut seen: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    for f in all {
        let name = module_name(&f.path);
        let top = name.split('.').next().unwrap_or_default();
        if RESERVED_MODULES.contains(&top) {
            return Err(ExecError::invalid(format!(
                "file path {:?} collides with the reserved module {top:?} (reserved: {})",
                f.path,
                RESERVED_MODULES.join(", ")
            )));
        }
        if let Some(other) = seen.insert(name.clone(), &f.path) {
            return Err(ExecError::invalid(format!(
                "file paths {other:?} and {:?} both import as module {name:?}; module names must be \
                 unique (compared case-insensitively)",
                f.path
            )));
        }
    }
    Ok(())
}

pub fn tests(input: &TestsInput) -> Result<(), ExecError> {
    if input.tests.is_empty() {
        return Err(ExecError::invalid(
            "tests must contain at least one test_*.py file",
        ));
    }
    let all: Vec<&SourceFile> = input.modules.iter().chain(&input.tests).collect();
    if all.len() > MAX_TEST_FILES {
        return Err(ExecError::invalid(format!(
            "{} files; at most {MAX_TEST_FILES} are allowed",
            all.len()
        )));
    }
    let total: usize = all.iter().map(|f| f.content.len()).sum();
    if total > MAX_TEST_TOTAL_BYTES {
        return Err(ExecError::invalid(format!(
            "files total {total} bytes; at most 1 MiB is allowed"
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for f in &all {
        test_path(f)?;
        if !seen.insert(f.path.as_str()) {
            return Err(ExecError::invalid(format!(
                "file path {:?} appears twice",
                f.path
            )));
        }
    }
    module_names(&all)?;
    for t in &input.tests {
        let base = t.path.rsplit('/').next().unwrap_or_default();
        if !base.starts_with("test_") {
            return Err(ExecError::invalid(format!(
                "test file {:?} must be named test_*.py",
                t.path
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_cap_and_name_the_maximum() {
        let d = LimitBounds::defaults();
        let m = LimitBounds::maxima();
        let l = limits(&LimitRequest::default(), &d, &m).unwrap();
        assert_eq!(l.memory_bytes, d.memory_bytes);
        let req = LimitRequest {
            memory_bytes: Some(m.memory_bytes + 1),
            ..Default::default()
        };
        let err = limits(&req, &d, &m).unwrap_err().to_string();
        assert!(
            err.contains("memory_bytes") && err.contains(&m.memory_bytes.to_string()),
            "{err}"
        );
        let req = LimitRequest {
            wall_time: Some(Duration::from_secs(61)),
            ..Default::default()
        };
        assert!(
            limits(&req, &d, &m)
                .unwrap_err()
                .to_string()
                .contains("60000 ms")
        );
    }

    #[test]
    fn test_paths_are_confined() {
        let f = |p: &str| SourceFile {
            path: p.into(),
            content: String::new(),
        };
        assert!(test_path(&f("pkg/test_a.py")).is_ok());
        for bad in [
            "../x.py", "/abs.py", "a/./b.py", "x.txt", "a b.py", "a//b.py",
        ] {
            assert!(test_path(&f(bad)).is_err(), "{bad}");
        }
        let (a, b) = (f("pkg/Util.py"), f("pkg/util.py"));
        let err = module_names(&[&a, &b]).unwrap_err().to_string();
        assert!(
            err.contains("pkg/Util.py") && err.contains("pkg/util.py"),
            "{err}"
        );
        let (a, b) = (f("pkg/__init__.py"), f("PKG.py"));
        assert!(module_names(&[&a, &b]).is_err());
        let p = f("pytest.py");
        assert!(
            module_names(&[&p])
                .unwrap_err()
                .to_string()
                .contains("reserved")
        );
        let (a, b) = (f("pkg/a.py"), f("test_a.py"));
        assert!(module_names(&[&a, &b]).is_ok());
    }
}
