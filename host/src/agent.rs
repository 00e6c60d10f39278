//! The agent loop (the seed's chapter 1): offer the loaded tools to the model; when it calls
//! one, run the call in its sandbox under policy, feed the result back as an observation,
//! and go on until the model answers or `max_steps` turns have passed. A tool's failure is an
//! observation the model can recover from, not a failed request. Every request keeps a trace.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tracing::Instrument;

use autoglm_engine::chat::{ChatModel, Turn, TurnReply};
use autoglm_engine::template::python_json;
use autoglm_engine::{ChatMessage, Priority, Role, SamplingParams, ToolCall, ToolDef, TurnRequest};

use crate::error::{CallError, ErrorKind};
use crate::invoke::{Allowlist, Invoker};
use crate::metered::Metered;
use crate::model::engine_error;
use crate::router::{Router, Target};
use crate::runtime::sandbox::CallOptions;
use crate::tasks::DurableChat;
use crate::trace::TraceContext;

/// Runs conversations between a model and the loaded tools.
pub struct Agent {
    model: Arc<dyn ChatModel>,
    invoker: Arc<Invoker>,
    max_steps: usize,
}

/// One entry of a request's trace.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TraceStep {
    /// A model turn.
    Model {
        /// What it produced: `answer`, `tool_calls` or `invalid_call`.
        produced: &'static str,
        /// Time for the turn, queueing included.
        latency_ms: f64,
        /// Tokens in the prompt.
        prompt_tokens: usize,
        /// Tokens generated.
        completion_tokens: usize,
        /// The prompt as the model saw it (its template rendered), when the request asked
        /// for it and the model renders locally.
        #[serde(skip_serializing_if = "Option::is_none")]
        prompt: Option<String>,
    },
    /// A tool call the model asked for.
    Tool {
        /// The canonical id (`plugin.tool`), or the name the model wrote if none matched.
        tool: String,
        /// The arguments.
        arguments: Value,
        /// The result, when the call succeeded.
        #[serde(skip_serializing_if = "Option::is_none")]
        result: Option<Value>,
        /// The error kind and message, when it failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<Box<CallError>>,
        /// Fuel the sandbox consumed.
        fuel: u64,
        /// Time for the call.
        latency_ms: f64,
    },
}

/// What the loop reports as it runs.
#[derive(Debug, Clone)]
pub enum AgentEvent {
    /// A step finished.
    Step(TraceStep),
    /// More of the answer.
    Text(String),
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// The model answered.
    Stop,
    /// The answer hit the token limit.
    Length,
    /// `max_steps` turns passed without an answer.
    MaxSteps,
}

/// A finished conversation turn with its trace.
#[derive(Debug, Clone, Serialize)]
pub struct Transcript {
    /// The model's answer.
    pub answer: String,
    /// Why the loop ended.
    pub finish: Finish,
    /// Every model turn and tool call, in order.
    pub steps: Vec<TraceStep>,
    /// Prompt tokens over all turns.
    pub prompt_tokens: usize,
    /// Generated tokens over all turns.
    pub completion_tokens: usize,
}

/// One request to the agent.
#[derive(Clone)]
pub struct AgentRequest {
    /// The conversation; the last message is usually the user's.
    pub messages: Vec<ChatMessage>,
    /// Sampling settings for every turn.
    pub params: SamplingParams,
    /// Scheduling class.
    pub priority: Priority,
    /// The tools the caller may use: only these are offered, and a call the model makes
    /// to any other is refused with `permission_denied`.
    pub allowlist: Allowlist,
    /// The request's trace, continued to a remote engine.
    pub trace: Option<TraceContext>,
    /// Where the steps are journaled, for a durable request: steps an earlier attempt took
    /// are replayed from there instead of being taken again.
    pub durable: Option<Arc<DurableChat>>,
    /// Put the rendered prompt of each model turn in its trace step.
    pub show_prompt: bool,
}

impl Agent {
    /// An agent between `model` and the tools `invoker` runs.
    pub fn new(model: Arc<dyn ChatModel>, invoker: Arc<Invoker>, max_steps: usize) -> Self {
        Self { model, invoker, max_steps: max_steps.max(1) }
    }

    /// The model.
    pub fn model(&self) -> &Arc<dyn ChatModel> {
        &self.model
    }

    /// Run the loop; steps and answer text are also sent to `events` as they happen.
    pub async fn run(
        &self,
        mut request: AgentRequest,
        events: Option<UnboundedSender<AgentEvent>>,
    ) -> Result<Transcript, CallError> {
        let router = self.invoker.router();
        let mut offered = router.tool_defs();
        offered.retain(|(target, _)| request.allowlist.permits(&target.id()));
        let defs: Vec<_> = offered.iter().map(|(_, d)| d.clone()).collect();
        let emit = |event: AgentEvent| {
            if let Some(events) = &events {
                let _ = events.send(event);
            }
        };
        let mut messages = std::mem::take(&mut request.messages);
        let mut outcome = Transcript {
            answer: String::new(),
            finish: Finish::MaxSteps,
            steps: Vec::new(),
            prompt_tokens: 0,
            completion_tokens: 0,
        };
        let durable = request.durable.as_deref();
        for index in 0..self.max_steps {
            let started = Instant::now();
            let journaled = format!("turn-{index}");
            let replayed = match durable {
                Some(durable) => durable.replayed(&journaled).await,
                None => None,
            };
            let prompt = request.show_prompt.then(|| self.prompt(&request, &messages, &defs));
            let turn = match replayed.and_then(|value| serde_json::from_value::<Turn>(value).ok()) {
                Some(turn) => {
                    if let TurnReply::Text(answer) = &turn.reply {
                        emit(AgentEvent::Text(answer.clone()));
                    }
                    turn
                }
                None => {
                    let turn = self.turn(&request, &messages, &defs, events.as_ref()).await?;
                    if let Some(durable) = durable {
                        let value = serde_json::to_value(&turn).unwrap_or_default();
                        durable.record(&journaled, "model_turn", value).await?;
                    }
                    turn
                }
            };
            outcome.prompt_tokens += turn.prompt_tokens;
            outcome.completion_tokens += turn.completion_tokens;
            let produced = match &turn.reply {
                TurnReply::Text(_) => "answer",
                TurnReply::Calls(_) => "tool_calls",
                TurnReply::Invalid { .. } => "invalid_call",
            };
            let step = TraceStep::Model {
                produced,
                latency_ms: started.elapsed().as_secs_f64() * 1e3,
                prompt_tokens: turn.prompt_tokens,
                completion_tokens: turn.completion_tokens,
                prompt: prompt.flatten(),
            };
            emit(AgentEvent::Step(step.clone()));
            outcome.steps.push(step);
            match turn.reply {
                TurnReply::Text(answer) => {
                    outcome.answer = answer;
                    outcome.finish = if turn.truncated { Finish::Length } else { Finish::Stop };
                    if let Some(durable) = durable {
                        durable.finish().await?;
                    }
                    log(&outcome);
                    return Ok(outcome);
                }
                TurnReply::Invalid { raw, error } => {
                    messages.push(ChatMessage::new(Role::Assistant, raw));
                    let observation = json!({"error": {"kind": "invalid_call", "message": error}});
                    messages
                        .push(ChatMessage::new(Role::Observation, python_json(&observation, None)));
                }
                TurnReply::Calls(calls) => {
                    let steps = self
                        .run_calls(&router, &offered, &request.allowlist, &calls, durable, index)
                        .await?;
                    for (call, step) in calls.iter().zip(steps) {
                        let observation = match &step {
                            TraceStep::Tool { result: Some(result), .. } => {
                                python_json(result, None)
                            }
                            TraceStep::Tool { error: Some(e), .. } => {
                                python_json(&e.observation(), None)
                            }
                            _ => String::new(),
                        };
                        messages.push(ChatMessage::tool_call(call.clone()));
                        messages.push(ChatMessage::new(Role::Observation, observation));
                        emit(AgentEvent::Step(step.clone()));
                        outcome.steps.push(step);
                    }
                }
            }
        }
        outcome.answer = format!("I could not finish within {} steps.", self.max_steps);
        if let Some(durable) = durable {
            durable.finish().await?;
        }
        log(&outcome);
        Ok(outcome)
    }

    /// The prompt of the next turn as the model renders it; None for a remote model. A
    /// template that cannot render is shown as its error: the turn itself reports it too.
    fn prompt(
        &self,
        request: &AgentRequest,
        messages: &[ChatMessage],
        defs: &[ToolDef],
    ) -> Option<String> {
        let rendered = self.model.render(&turn_request(request, messages, defs))?;
        Some(rendered.unwrap_or_else(|error| format!("(the template did not render: {error})")))
    }

    /// One model turn, its text streamed to `events` as it is generated.
    async fn turn(
        &self,
        request: &AgentRequest,
        messages: &[ChatMessage],
        defs: &[ToolDef],
        events: Option<&UnboundedSender<AgentEvent>>,
    ) -> Result<Turn, CallError> {
        let text = events.map(|events| {
            let (tx, mut rx) = unbounded_channel::<String>();
            let events = events.clone();
            tokio::spawn(async move {
                while let Some(piece) = rx.recv().await {
                    let _ = events.send(AgentEvent::Text(piece));
                }
            });
            tx
        });
        let turn_request = turn_request(request, messages, defs);
        let span =
            tracing::info_span!(target: "autoglm::engine", "model_turn", model = self.model.name());
        self.model.turn(turn_request, text).instrument(span).await.map_err(engine_error)
    }

    /// Run the calls of one turn concurrently, each in its own sandbox. A name is looked up
    /// among the offered tools first (the short names the model saw), then as any name the
    /// router knows; either way the allowlist decides whether it runs. For a durable request, a call an earlier attempt finished is
    /// replayed from the journal, and each new outcome is journaled as it arrives; a call
    /// keeps its idempotency key across attempts.
    async fn run_calls(
        &self,
        router: &Router,
        offered: &[(Target, ToolDef)],
        allowlist: &Allowlist,
        calls: &[ToolCall],
        durable: Option<&DurableChat>,
        turn: usize,
    ) -> Result<Vec<TraceStep>, CallError> {
        let mut running = tokio::task::JoinSet::new();
        let mut steps: Vec<Option<TraceStep>> = vec![None; calls.len()];
        for (index, call) in calls.iter().enumerate() {
            let journaled = format!("call-{turn}-{index}");
            let mut options = CallOptions::default();
            if let Some(durable) = durable {
                let replayed = durable.replayed(&journaled).await;
                if let Some(call) =
                    replayed.and_then(|v| serde_json::from_value::<JournaledCall>(v).ok())
                {
                    steps[index] = Some(call.into());
                    continue;
                }
                options.idempotency_key = Some(durable.call_key(&journaled).await);
            }
            let target = match offered.iter().find(|(_, d)| d.name == call.name) {
                Some((target, _)) => Ok(target.clone()),
                None => self.invoker.resolve_for(allowlist, router, &call.name),
            };
            // The canonical id when the name resolved, else the name as the model wrote it.
            let tool = target.as_ref().map_or_else(|_| call.name.clone(), Target::id);
            let (invoker, allowlist) = (self.invoker.clone(), allowlist.clone());
            let arguments = Value::Object(call.arguments.clone());
            running.spawn(
                async move {
                    let metered = match target {
                        Ok(target) => {
                            invoker.call_target(&allowlist, &target, &arguments, &options).await
                        }
                        Err(error) => Metered::refused(error),
                    };
                    (index, tool, arguments, metered)
                }
                .in_current_span(),
            );
        }
        while let Some(joined) = running.join_next().await {
            let Ok((index, tool, arguments, metered)) = joined else { continue };
            let (result, error) = match metered.outcome {
                Ok(value) => (Some(value), None),
                Err(e) => (None, Some(Box::new(e))),
            };
            let step = TraceStep::Tool {
                tool,
                arguments,
                result,
                error,
                fuel: metered.usage.fuel,
                latency_ms: metered.elapsed.as_secs_f64() * 1e3,
            };
            if let (Some(durable), Some(call)) = (durable, JournaledCall::of(&step)) {
                let value = serde_json::to_value(&call).unwrap_or_default();
                durable.record(&format!("call-{turn}-{index}"), "tool_call", value).await?;
            }
            steps[index] = Some(step);
        }
        Ok(steps
            .into_iter()
            .zip(calls)
            .map(|(step, call)| {
                step.unwrap_or_else(|| TraceStep::Tool {
                    tool: call.name.clone(),
                    arguments: Value::Object(call.arguments.clone()),
                    result: None,
                    error: Some(Box::new(CallError::new(
                        ErrorKind::Trap,
                        "the call's task ended abnormally",
                    ))),
                    fuel: 0,
                    latency_ms: 0.0,
                })
            })
            .collect())
    }
}

/// The engine's request for the next turn of `request`'s conversation.
fn turn_request(request: &AgentRequest, messages: &[ChatMessage], defs: &[ToolDef]) -> TurnRequest {
    TurnRequest {
        messages: messages.to_vec(),
        tools: defs.to_vec(),
        params: request.params.clone(),
        priority: request.priority,
        traceparent: request.trace.as_ref().map(|t| t.child().header()),
    }
}

/// A tool call's step as a durable request's journal keeps it.
#[derive(Serialize, serde::Deserialize)]
struct JournaledCall {
    tool: String,
    arguments: Value,
    result: Option<Value>,
    error: Option<CallError>,
    fuel: u64,
    latency_ms: f64,
}

impl JournaledCall {
    fn of(step: &TraceStep) -> Option<JournaledCall> {
        match step {
            TraceStep::Tool { tool, arguments, result, error, fuel, latency_ms } => {
                Some(JournaledCall {
                    tool: tool.clone(),
                    arguments: arguments.clone(),
                    result: result.clone(),
                    error: error.as_deref().cloned(),
                    fuel: *fuel,
                    latency_ms: *latency_ms,
                })
            }
            TraceStep::Model { .. } => None,
        }
    }
}

impl From<JournaledCall> for TraceStep {
    fn from(call: JournaledCall) -> Self {
        TraceStep::Tool {
            tool: call.tool,
            arguments: call.arguments,
            result: call.result,
            error: call.error.map(Box::new),
            fuel: call.fuel,
            latency_ms: call.latency_ms,
        }
    }
}

/// One log line per finished request (`autoglm::agent`, info), inside the request's span.
fn log(outcome: &Transcript) {
    let tools: Vec<&str> = outcome
        .steps
        .iter()
        .filter_map(|s| match s {
            TraceStep::Tool { tool, .. } => Some(tool.as_str()),
            TraceStep::Model { .. } => None,
        })
        .collect();
    tracing::info!(
        target: "autoglm::agent",
        finish = ?outcome.finish,
        turns = outcome.steps.len() - tools.len(),
        tools = ?tools,
        prompt_tokens = outcome.prompt_tokens,
        completion_tokens = outcome.completion_tokens,
        "chat request"
    );
}
