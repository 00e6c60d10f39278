//! A chat model the agent talks to: the local engine behind its batching scheduler, or a
//! remote OpenAI-compatible server ([`crate::remote`]). One call is one assistant turn.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use crate::scheduler::{BatchSettings, Job, JobEvent, Scheduler, SchedulerStats};
use crate::turn::TurnRequest;
use crate::{Engine, EngineError, FinishReason, Reply, SamplingParams, StreamParser, ToolCall};

/// What the assistant did in one turn.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnReply {
    /// It answered.
    Text(String),
    /// It called one or more tools (GLM-4 writes one per turn; remote engines may send several).
    Calls(Vec<ToolCall>),
    /// It wrote a call that cannot run; `error` says why, for the model's next turn.
    Invalid {
        /// What it wrote.
        raw: String,
        /// What is wrong with it.
        error: String,
    },
}

/// One assistant turn with its token counts (serialized when a durable request journals it).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Turn {
    /// The reply.
    pub reply: TurnReply,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Whether generation hit the token limit.
    pub truncated: bool,
}

/// A model that takes turns in a conversation.
#[async_trait]
pub trait ChatModel: Send + Sync {
    /// The name clients see (`/v1/models`, responses).
    fn name(&self) -> &str;

    /// Sampling settings for requests that set none (the checkpoint's own, for a local model).
    fn defaults(&self) -> SamplingParams {
        SamplingParams::default()
    }

    /// Generate the assistant's next turn; answer text (never call text) is also sent to
    /// `text` as it is generated.
    async fn turn(
        &self,
        request: TurnRequest,
        text: Option<UnboundedSender<String>>,
    ) -> Result<Turn, EngineError>;

    /// The prompt text `request` becomes, special tokens included, for people debugging
    /// templates and tool descriptions; None where the template lives elsewhere (a remote
    /// server).
    fn render(&self, request: &TurnRequest) -> Option<Result<String, EngineError>> {
        let _ = request;
        None
    }
}

/// A chat model ready to serve, with the local engine's counters when it is local.
pub struct OpenedModel {
    /// The model.
    pub model: Arc<dyn ChatModel>,
    /// Batching counters (local engine only).
    pub stats: Option<Arc<SchedulerStats>>,
}

/// The local engine, batched by a [`Scheduler`].
pub struct LocalModel {
    name: String,
    defaults: SamplingParams,
    engine: Arc<Engine>,
    scheduler: Scheduler,
}

impl LocalModel {
    /// Serve `engine` with `settings`.
    pub fn new(engine: Engine, settings: BatchSettings) -> Self {
        let name = engine.info().name.clone();
        let defaults = engine.defaults().clone();
        let engine = Arc::new(engine);
        let scheduler = Scheduler::start(engine.clone(), settings);
        Self { name, defaults, engine, scheduler }
    }

    /// The scheduler's live counters.
    pub fn stats(&self) -> &Arc<SchedulerStats> {
        self.scheduler.stats()
    }

    /// The scheduler's settings.
    pub fn settings(&self) -> &BatchSettings {
        self.scheduler.settings()
    }
}

#[async_trait]
impl ChatModel for LocalModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn defaults(&self) -> SamplingParams {
        self.defaults.clone()
    }

    fn render(&self, request: &TurnRequest) -> Option<Result<String, EngineError>> {
        Some(self.engine.render(&request.messages, &request.tools))
    }

    async fn turn(
        &self,
        request: TurnRequest,
        text: Option<UnboundedSender<String>>,
    ) -> Result<Turn, EngineError> {
        let names: Vec<String> = request.tools.iter().map(|t| t.name.clone()).collect();
        let (events, mut received) = unbounded_channel();
        let job = Job { request, events };
        self.scheduler.submit(job)?;
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut parser = StreamParser::new(&names);
        let mut pushed = String::new();
        let show = |shown: String| {
            if let (Some(text), false) = (&text, shown.is_empty()) {
                let _ = text.send(shown);
            }
        };
        while let Some(event) = received.recv().await {
            match event {
                JobEvent::Text(piece) => {
                    show(parser.push(&piece));
                    pushed.push_str(&piece);
                }
                JobEvent::Done(done) => {
                    let finished = done?;
                    // The stream holds back a cut character; the final text has it.
                    if let Some(rest) = finished.text.strip_prefix(pushed.as_str()) {
                        show(parser.push(rest));
                    }
                    let (reply, rest) = parser.finish();
                    show(rest);
                    let reply = match reply {
                        Reply::Text(answer) => TurnReply::Text(answer),
                        Reply::Call(call) => TurnReply::Calls(vec![call]),
                        Reply::InvalidCall { raw, error } => TurnReply::Invalid { raw, error },
                    };
                    return Ok(Turn {
                        reply,
                        prompt_tokens: finished.prompt_tokens,
                        completion_tokens: finished.completion_tokens,
                        truncated: finished.finish == FinishReason::Length,
                    });
                }
            }
        }
        Err(EngineError::Stopped)
    }
}
