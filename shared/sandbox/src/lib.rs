//! Process isolation, the only crate of the workspace with `unsafe` (all of it in `sys` and
//! `process::child`):
//!
//! * [`isolate`]: work that cannot be cancelled in process (the embedded graph engine) runs in a
//!   forked child under a memory rlimit and a deadline, and is killed when it overruns either.
//! * [`process`]: the execution service's sandbox for untrusted programs (Linux namespaces, a
//!   read-only root, per-slot uids and cgroups, rlimits, seccomp), behind the [`process::Sandbox`]
//!   trait.

#![warn(missing_docs)]

pub mod isolate;
pub mod process;
mod sys;

pub use isolate::{SandboxError, run, run_with, stop_all};
