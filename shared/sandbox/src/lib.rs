//! Process isolation for work that cannot be cancelled in process (the embedded graph engine):
//! the work runs in a forked child under a memory rlimit and a deadline, and is killed when it
//! overruns either. The only crate of the workspace with `unsafe` (all of it in `sys`).

#![warn(missing_docs)]

pub mod isolate;
mod sys;

pub use isolate::{SandboxError, run, run_with, stop_all};
