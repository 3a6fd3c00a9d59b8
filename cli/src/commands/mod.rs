//! One module per group of subcommands; each function is one subcommand.

pub mod auth;
