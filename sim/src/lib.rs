//! tern-sim: the production broker in a `turmoil` simulated network, scripted by YAML
//! scenarios, with faults and run-wide checkers. Same scenario, same seed, same run.
//!
//! - [`scenario`]: the YAML language (documented in `scenarios/README.md`);
//! - [`world`]: builds the simulation, runs the steps, calls the checkers;
//! - [`actor`]: the scripted client on each simulated host;
//! - [`picture`]: a run as an SVG sequence diagram;
//! - [`listener`]: the turmoil adapter for the broker's `Listener` trait;
//! - [`checkers`]: properties every run must have;
//! - [`explore`]: random scenarios, run until one fails, shrunk to a small YAML file;
//! - [`contain`]: the production stack size, and panics turned into run failures;
//! - [`supervisor`]: cases in a child process, so one that aborts is reported, not fatal;
//! - [`trace`]: what happened, for checkers, failure reports and the determinism test.

pub mod actor;
pub mod checkers;
pub mod contain;
pub mod disk;
pub mod explore;
pub mod listener;
pub mod picture;
pub mod scenario;
pub mod supervisor;
pub mod trace;
pub mod world;
