//! One module per group of subcommands; each function is one subcommand.

pub mod accounts;
pub mod audit;
pub mod auth;
pub mod exec;
pub mod graph;
pub mod input;
pub mod tools;
