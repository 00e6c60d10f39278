//! Durable chat: a chat completion's agent steps (model turns and tool calls) journaled as
//! a run of their own, keyed by the caller and the request's `Idempotency-Key`. A retried
//! request with the same key replays what the journal holds (the same turns, the same tool
//! results) and goes on from the first step it lacks; the runner never claims these runs,
//! the retried request drives them.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use super::journal::Fence;
use super::record::{RunKind, TaskRecord, TaskState, now_ms};
use super::{Tasks, next_event, unavailable};
use crate::error::{CallError, ErrorKind};
use crate::invoke::Allowlist;

/// Longest idempotency key accepted.
pub const MAX_KEY_BYTES: usize = 200;

/// One durable chat request's journal.
pub struct DurableChat {
    tasks: Arc<Tasks>,
    record: Mutex<TaskRecord>,
}

impl Tasks {
    /// The journal of `caller`'s chat request `request` under idempotency `key`: the one a
    /// earlier attempt began, or a new one. The same key with a different request is a
    /// conflict: the key names one request.
    pub async fn durable_chat(
        self: &Arc<Self>,
        caller: &Allowlist,
        key: &str,
        request: &Value,
        trace_id: Option<String>,
    ) -> Result<DurableChat, CallError> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES || !key.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(CallError::new(
                ErrorKind::BadRequest,
                format!("Idempotency-Key must be 1 to {MAX_KEY_BYTES} printable ASCII characters"),
            ));
        }
        let digest = hex(&Sha256::digest(request.to_string().as_bytes()));
        let id = hex(&Sha256::digest(format!("{}\0{key}", caller.caller()).as_bytes()))[..32]
            .to_string();
        let reused = || {
            CallError::new(
                ErrorKind::Conflict,
                format!(
                    "Idempotency-Key `{key}` was used with a different request; a key names one \
                     request: send the same body to resume it, or a new key"
                ),
            )
        };
        if let Some(record) = self.journal.load(&id).await.map_err(unavailable)? {
            let theirs = record.kind != RunKind::Chat || record.caller.caller() != caller.caller();
            if theirs || record.spec["chat"]["digest"] != digest.as_str() {
                return Err(reused());
            }
            return Ok(DurableChat { tasks: self.clone(), record: Mutex::new(record) });
        }
        let now = now_ms();
        let mut record = TaskRecord {
            id,
            kind: RunKind::Chat,
            name: Some("chat".into()),
            state: TaskState::Running,
            spec: json!({"chat": {"digest": digest}}),
            inputs: Map::new(),
            caller: caller.clone(),
            trace_id,
            stages: Vec::new(),
            error: None,
            paused_at: None,
            aborting: false,
            resumes: 0,
            created_ms: now,
            updated_ms: now,
            deadline_ms: None,
            events: 0,
            steps: Map::new(),
        };
        let event = next_event(&mut record, "submitted", None, None, None);
        // Two first attempts at once: the second finds the first's row and is told so.
        self.journal.create(&record, &event, None).await.map_err(|_| {
            CallError::new(
                ErrorKind::Conflict,
                format!(
                    "a request with Idempotency-Key `{key}` is being answered; retry once it ends"
                ),
            )
        })?;
        Ok(DurableChat { tasks: self.clone(), record: Mutex::new(record) })
    }
}

impl DurableChat {
    /// What the journal holds for `step`, from an earlier attempt.
    pub async fn replayed(&self, step: &str) -> Option<Value> {
        self.record.lock().await.steps.get(step).cloned()
    }

    /// Journal `value` as what `step` produced, before the agent acts on it.
    pub async fn record(&self, step: &str, kind: &str, value: Value) -> Result<(), CallError> {
        let mut record = self.record.lock().await;
        if record.state != TaskState::Running {
            return Ok(());
        }
        record.steps.insert(step.to_string(), value.clone());
        let detail = json!({"step": step, "value": value});
        let event = next_event(&mut record, kind, None, None, Some(detail));
        self.commit(&record, &event).await
    }

    /// The idempotency key of tool call `step`: the same on every attempt.
    pub async fn call_key(&self, step: &str) -> String {
        format!("chat/{}/{step}", self.record.lock().await.id)
    }

    /// The request was answered: the run is over.
    pub async fn finish(&self) -> Result<(), CallError> {
        let mut record = self.record.lock().await;
        if record.state != TaskState::Running {
            return Ok(());
        }
        record.state = TaskState::Succeeded;
        let event = next_event(&mut record, "succeeded", None, None, None);
        self.commit(&record, &event).await
    }

    async fn commit(
        &self,
        record: &TaskRecord,
        event: &super::record::Event,
    ) -> Result<(), CallError> {
        let fence = Fence::State(TaskState::Running);
        let events = std::slice::from_ref(event);
        match self.tasks.journal.commit(record, events, fence).await.map_err(unavailable)? {
            true => Ok(()),
            false => Err(CallError::new(
                ErrorKind::Conflict,
                "another attempt of this request moved on meanwhile; retry it",
            )),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
