//! A chat model that follows a script instead of a network: it asks for the same tool calls
//! on the first turn of every conversation and answers once the calls' results are in, so a
//! test or bench controls exactly what the model names, offered or not.

use std::sync::Mutex;

use async_trait::async_trait;
use autoglm_engine::chat::{ChatModel, Turn, TurnReply};
use autoglm_engine::{EngineError, Role, ToolCall, TurnRequest};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

/// The scripted model; it keeps every request it was sent.
pub struct ScriptedModel {
    calls: Vec<ToolCall>,
    answer: String,
    requests: Mutex<Vec<TurnRequest>>,
}

impl ScriptedModel {
    /// Call `calls` (none: answer at once) on a conversation's first turn, then say `answer`.
    pub fn new(calls: Vec<ToolCall>, answer: &str) -> Self {
        Self { calls, answer: answer.into(), requests: Mutex::default() }
    }

    /// The requests it was sent, in order.
    pub fn requests(&self) -> Vec<TurnRequest> {
        self.requests.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A call of `name` with `arguments` (a JSON object).
pub fn call(name: &str, arguments: Value) -> ToolCall {
    ToolCall { name: name.into(), arguments: arguments.as_object().cloned().unwrap_or_default() }
}

#[async_trait]
impl ChatModel for ScriptedModel {
    fn name(&self) -> &str {
        "scripted"
    }

    async fn turn(
        &self,
        request: TurnRequest,
        _: Option<UnboundedSender<String>>,
    ) -> Result<Turn, EngineError> {
        let answered = request.messages.iter().any(|m| m.role == Role::Observation);
        self.requests.lock().unwrap_or_else(|e| e.into_inner()).push(request);
        let reply = match answered || self.calls.is_empty() {
            true => TurnReply::Text(self.answer.clone()),
            false => TurnReply::Calls(self.calls.clone()),
        };
        Ok(Turn { reply, prompt_tokens: 0, completion_tokens: 0, truncated: false })
    }
}
