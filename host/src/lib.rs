//! Open-AutoGLM host: loads agent tools compiled to WebAssembly components and runs
//! every call in a fresh, limited sandbox under the operator's policy.
//!
//! Modules import only the layers below their own (checked by `tests/layers.rs`):
//! [`server`] -> [`app`] -> [`agent`] -> [`tasks`] -> [`invoke`] and [`model`] -> [`router`] and
//! [`distribution`] -> [`registry`] -> [`runtime`] (the sandbox) -> [`policy`] and
//! [`signing`] -> [`config`] -> [`error`]. The
//! language model is the `autoglm-engine` crate, a dependency below all of them.

#![deny(missing_docs)]

pub mod agent;
pub mod app;
pub mod config;
pub mod contract;
pub mod describe;
pub mod distribution;
pub mod error;
pub mod eval;
pub mod invoke;
pub mod metered;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod registry;
pub mod router;
pub mod runtime;
pub mod scaffold;
pub mod server;
pub mod signing;
pub mod tasks;
pub mod telemetry;
pub mod trace;
