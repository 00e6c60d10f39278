//! What the journal keeps of a task: its state, each stage's timeline, and the events
//! (transitions) in the order they were committed.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::CallError;
use crate::invoke::Allowlist;

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Journaled, not started.
    Pending,
    /// Running its stages.
    Running,
    /// Undoing its completed stages.
    Compensating,
    /// Stopped after a failure, waiting for an operator (`resume`, `retry`, `abort`).
    Paused,
    /// Every stage succeeded or was skipped.
    Succeeded,
    /// A critical stage failed under the `skip` policy; nothing was undone.
    Failed,
    /// A critical stage failed and the completed stages were undone.
    Compensated,
    /// A compensation failed past its retries: an operator must look (`retry`, `abort`).
    CompensationFailed,
    /// An operator aborted it (after undoing what had completed).
    Aborted,
}

impl TaskState {
    /// Every state, for metrics and filters.
    pub const ALL: [TaskState; 9] = [
        Self::Pending,
        Self::Running,
        Self::Compensating,
        Self::Paused,
        Self::Succeeded,
        Self::Failed,
        Self::Compensated,
        Self::CompensationFailed,
        Self::Aborted,
    ];

    /// The state's name in the API and the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Compensating => "compensating",
            Self::Paused => "paused",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Compensated => "compensated",
            Self::CompensationFailed => "compensation_failed",
            Self::Aborted => "aborted",
        }
    }

    /// The state named `name`.
    pub fn parse(name: &str) -> Option<TaskState> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether a replica should be working on it (and holds a lease while it does).
    pub fn is_runnable(self) -> bool {
        matches!(self, Self::Pending | Self::Running | Self::Compensating)
    }

    /// Whether nothing more happens without an operator: finished, paused or stuck.
    pub fn is_settled(self) -> bool {
        !self.is_runnable()
    }

    /// Whether the task is over for good (kept for `retain_days`, then removed).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Compensated | Self::Aborted)
    }
}

/// Where a stage is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageState {
    /// Not started.
    Pending,
    /// A call is in flight (or was, when its replica died).
    Running,
    /// Its result is journaled: it never runs again.
    Succeeded,
    /// It failed past its retries.
    Failed,
    /// It failed and was not critical, or an operator skipped it.
    Skipped,
    /// Its compensation is running.
    Compensating,
    /// Its compensation succeeded.
    Compensated,
    /// Its compensation failed past its retries.
    CompensationFailed,
}

/// A failure, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The stable kind (`tool_error`, `timeout`, ...).
    pub kind: String,
    /// What happened.
    pub message: String,
}

impl From<&CallError> for Failure {
    fn from(error: &CallError) -> Self {
        Self { kind: error.kind.as_str().into(), message: error.to_string() }
    }
}

/// One compensation's progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompensationRecord {
    /// Calls made.
    pub attempts: u32,
    /// Failed calls since the last operator retry.
    pub failures: u32,
    /// Failed calls in all: each gives the next call a new idempotency key.
    #[serde(default)]
    pub observed: u32,
    /// Its result, once it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Its last failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    /// When it last started and ended (ms since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    /// When it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
}

/// One stage's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    /// The stage's name.
    pub name: String,
    /// Where it is.
    pub state: StageState,
    /// Calls made, re-runs after a crash included.
    pub attempts: u32,
    /// Failed calls since the stage started (or an operator retried it).
    pub failures: u32,
    /// Failed calls in all: each gives the next call a new idempotency key.
    #[serde(default)]
    pub observed: u32,
    /// Its result, once journaled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Its last failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    /// When its last attempt started (ms since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    /// When it succeeded, failed or was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    /// The order it completed in among the task's stages: compensation runs in reverse.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed: Option<u32>,
    /// Its compensation, once one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compensation: Option<CompensationRecord>,
}

impl StageRecord {
    /// A stage not yet started.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            state: StageState::Pending,
            attempts: 0,
            failures: 0,
            observed: 0,
            result: None,
            error: None,
            started_ms: None,
            finished_ms: None,
            completed: None,
            compensation: None,
        }
    }
}

/// What a journaled run is: a task the runner drives, or a durable chat whose request drives
/// it (the runner never claims those; a retried request resumes them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// A multi-stage task.
    #[default]
    Task,
    /// A chat completion's agent steps.
    Chat,
}

impl RunKind {
    /// The kind's name in the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Task => "task",
            Self::Chat => "chat",
        }
    }
}

/// A task as the journal holds it: enough to resume it on any replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Its id.
    pub id: String,
    /// A task, or a durable chat.
    #[serde(default)]
    pub kind: RunKind,
    /// Its template's or spec's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where it is.
    pub state: TaskState,
    /// The spec, as submitted (checked again on load).
    pub spec: Value,
    /// The inputs it was given.
    pub inputs: Map<String, Value>,
    /// Who submitted it: the tools it may call are checked again at every call.
    pub caller: Allowlist,
    /// The trace id of the request that submitted it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Each stage's timeline, in spec order.
    pub stages: Vec<StageRecord>,
    /// Why it stopped, when it did not succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    /// The stage a pause stopped at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<String>,
    /// Compensation was started by an operator's abort: the task ends `aborted`.
    #[serde(default)]
    pub aborting: bool,
    /// Times a replica took it over after its owner stopped.
    #[serde(default)]
    pub resumes: u32,
    /// When it was submitted, last changed, and must end by (ms since the epoch).
    pub created_ms: u64,
    /// When it last changed.
    pub updated_ms: u64,
    /// When it must end by, from the spec's `deadline_ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Events committed so far: the next one's sequence number.
    pub events: u64,
    /// A durable chat's journaled steps (model turns, tool calls), by step name.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub steps: Map<String, Value>,
}

impl TaskRecord {
    /// The stage named `name`.
    pub fn stage_mut(&mut self, name: &str) -> &mut StageRecord {
        (self.stages.iter_mut().find(|s| s.name == name))
            .expect("stage records are made from the same spec")
    }

    /// The stage named `name`.
    pub fn stage(&self, name: &str) -> &StageRecord {
        (self.stages.iter().find(|s| s.name == name))
            .expect("stage records are made from the same spec")
    }
}

/// One committed transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Its place in the task's sequence, from 0.
    pub seq: u64,
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// What happened: `submitted`, `started`, `stage_started`, `stage_succeeded`,
    /// `stage_failed`, `stage_skipped`, `compensating`, `compensation_started`,
    /// `compensation_succeeded`, `compensation_failed`, `paused`, `resumed`, `retried`,
    /// `aborted`, `taken_over`, or the name of a final state.
    pub kind: String,
    /// The task's state after it.
    pub state: TaskState,
    /// The stage it concerns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// The attempt it concerns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// A result, an error, or what an operator asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

/// Milliseconds since the epoch, by this machine's clock.
pub fn now_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as u64)
}
