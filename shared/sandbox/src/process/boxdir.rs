//! The host directory behind a pre-started sandbox's `/box`, for programs that must read their
//! files from disk as a cold run does (Node's main module, Bash's script): the directory is
//! bound read-only at `/box` when the sandbox starts, and the parent writes the request's files
//! into it at hand-over, before the program is told to go on. Only root writes the directory
//! (mode 0755, files 0644, created with `O_EXCL | O_NOFOLLOW`); the sandbox sees a read-only
//! bind. It is removed after the run, and leftovers of a crashed service at the next start.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::RunError;
use super::mounts::{self, SandboxFile};

/// Name prefix in the temp directory: `<prefix><pid>.<random>`.
const PREFIX: &str = "umcp-sandbox-box.";

/// One sandbox's box directory; removed on drop.
#[derive(Debug)]
pub(super) struct BoxDir {
    dir: tempfile::TempDir,
    /// Relative paths written at start (e.g. a loader), removed at hand-over.
    start_files: Vec<String>,
}

fn resource(e: std::io::Error) -> RunError {
    RunError::Resource(e)
}

impl BoxDir {
    /// Creates the directory with `files` in it.
    pub(super) fn create(files: &[SandboxFile]) -> Result<Self, RunError> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{}.", std::process::id()))
            .tempdir()
            .map_err(resource)?;
        // tempfile creates 0700; the sandbox's uid must be able to enter it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(resource)?;
        let mut this = Self {
            dir,
            start_files: Vec::with_capacity(files.len()),
        };
        this.write(files)?;
        this.start_files = files.iter().map(|f| f.path.clone()).collect();
        Ok(this)
    }

    /// The host path to bind at `/box`.
    pub(super) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Replaces the start files with the request's `files`.
    pub(super) fn hand_over(&mut self, files: &[SandboxFile]) -> Result<(), RunError> {
        for rel in self.start_files.drain(..) {
            std::fs::remove_file(self.dir.path().join(rel)).map_err(resource)?;
        }
        self.write(files)
    }

    fn write(&self, files: &[SandboxFile]) -> Result<(), RunError> {
        for file in files {
            let rel = mounts::checked_relative(&file.path).map_err(|e| RunError::Invalid(e.0))?;
            let path = self.dir.path().join(rel);
            if let Some(parent) = path.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)
                    .map_err(resource)?;
            }
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .map_err(resource)?;
            out.write_all(&file.contents).map_err(resource)?;
        }
        Ok(())
    }
}

/// Removes the box directories of processes that are gone (a crashed service).
pub(super) fn remove_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|r| r.split('.').next()) else {
            continue;
        };
        let alive = pid
            .parse::<u32>()
            .is_ok_and(|p| Path::new(&format!("/proc/{p}")).exists());
        let owned_by_root = entry
            .metadata()
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0 && m.is_dir());
        if !alive && owned_by_root {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
