//! Sandboxed code execution, lint, tests and template rendering.
