//! The workspace's root package: it exists to own the workspace-level `tests/` and `benches/`,
//! which exercise the crates together. It has no code of its own.
