//! What the agent asks of a model for one assistant turn, shared by the chat models and
//! the batching scheduler that queues them.

use serde::Deserialize;

use crate::{ChatMessage, SamplingParams, ToolDef};

/// What one assistant turn needs.
#[derive(Debug, Clone)]
pub struct TurnRequest {
    /// The conversation so far.
    pub messages: Vec<ChatMessage>,
    /// The tools offered (names as the model sees them).
    pub tools: Vec<ToolDef>,
    /// Sampling and grammar settings.
    pub params: SamplingParams,
    /// Scheduling class.
    pub priority: Priority,
    /// The W3C `traceparent` to pass to a remote engine.
    pub traceparent: Option<String>,
}

/// Who goes first when both wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// A person is waiting (chat): admitted first.
    #[default]
    Interactive,
    /// Offline work (evaluation, batch jobs).
    Batch,
}
