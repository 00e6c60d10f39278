//! What the tests and benches of the workspace share, so each helper exists once.
//!
//! [`checkpoint`] writes tiny random GLM checkpoints, [`gguf`] the same as GGUF files, and
//! [`scripted`] is a chat model that follows a script; these need only the engine. [`host`]
//! (feature `host`) builds hosts over the plugins `just plugins test-plugins` built, test
//! servers in this process, and real `autoglm serve` processes.

#![deny(missing_docs)]

pub mod checkpoint;
pub mod gguf;
#[cfg(feature = "host")]
pub mod host;
pub mod scripted;
