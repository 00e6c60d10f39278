//! What the tests and benches of the workspace share, so each helper exists once.
//!
//! [`checkpoint`] writes tiny random GLM checkpoints, [`gguf`] the same as GGUF files, and
//! [`scripted`] is a chat model that follows a script; these need only the engine. [`host`]
//! (feature `host`) builds hosts over the plugins `just plugins test-plugins` built, test
//! servers in this process, and real `autoglm serve` processes. [`postgres`] starts a
//! Postgres server of a test's own.

#![deny(missing_docs)]

pub mod checkpoint;
pub mod gguf;
#[cfg(feature = "host")]
pub mod host;
pub mod postgres;
pub mod scripted;

use std::path::{Path, PathBuf};

/// The workspace's root directory.
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The workspace's `target/` directory.
pub fn target_dir() -> PathBuf {
    workspace_dir().join("target")
}
