//! The resilience layers against scripted inner services, with paused time: one test binary.

mod breaker;
mod retry;
