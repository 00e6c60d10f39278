//! Multi-stage tasks with compensation (the seed's 2.3), durable across crashes.
//!
//! A task is a spec ([`spec`]) run stage by stage by a replica that holds its lease. Every
//! transition is committed to the journal ([`journal`]) before the runner acts on it: a
//! stage whose result is journaled never runs again, and a stage in flight when its replica
//! died runs again, on whichever replica takes the task over, with the same idempotency key
//! (`host.context`). Tools are therefore run at least once, and exactly once when they
//! honour the key.
//!
//! This layer sits above the invocation path (every stage is a tool call under the
//! submitter's allowlist, checked again at each call) and below the agent and the server.

mod durable;
pub mod journal;
pub mod record;
mod run;
pub mod spec;
mod templates;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{Notify, Semaphore};

use crate::config::Config;
use crate::error::{CallError, ErrorKind};
use crate::invoke::{Allowlist, Invoker, OPERATOR};
pub use durable::DurableChat;
use journal::{Cursor, Fence, Journal, JournalError, ListQuery, Store};
use record::{Event, RunKind, StageRecord, StageState, TaskRecord, TaskState, now_ms};
use spec::TaskSpec;
pub use templates::load_templates;

/// Largest page of a listing.
pub const MAX_PAGE: usize = 500;

/// Decides, when a task's stage is about to run, what its submitter may call now: the
/// server looks the key up again (it may have been narrowed or removed since).
pub type CallerCheck = Arc<dyn Fn(&Allowlist) -> Result<Allowlist, CallError> + Send + Sync>;

/// What a client asks to run: an inline spec or a template, with inputs.
#[derive(Debug, Clone, Default)]
pub struct Submission {
    /// An inline spec.
    pub spec: Option<Value>,
    /// A template's name.
    pub template: Option<String>,
    /// The inputs `input.NAME` references read.
    pub inputs: Map<String, Value>,
    /// The trace id of the submitting request.
    pub trace_id: Option<String>,
}

/// What an operator asks of a stopped task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Go on: run the failed stage again, or skip it when `skip`.
    Resume {
        /// Mark the failed stage skipped instead of running it again.
        skip: bool,
    },
    /// Run the failed stage (or failed compensation) again.
    Retry,
    /// Undo what completed and end `aborted`; for a task whose compensation failed, end
    /// `aborted` as it is.
    Abort,
}

impl Action {
    /// The action named in `POST /v1/tasks/{id}/NAME`.
    pub fn parse(name: &str, skip: bool) -> Option<Action> {
        match name {
            "resume" => Some(Action::Resume { skip }),
            "retry" => Some(Action::Retry),
            "abort" => Some(Action::Abort),
            _ => None,
        }
    }
}

/// The tasks of one replica: submits them, runs the ones it holds leases on, and answers
/// queries from the journal.
pub struct Tasks {
    journal: Arc<dyn Journal>,
    store: String,
    invoker: Arc<Invoker>,
    templates: BTreeMap<String, TaskSpec>,
    owner: String,
    lease: Duration,
    poll: Duration,
    retain: Duration,
    slots: Arc<Semaphore>,
    running: Mutex<HashMap<String, Running>>,
    generations: std::sync::atomic::AtomicU64,
    wake: Notify,
    progress: Notify,
    callers: CallerCheck,
}

impl Tasks {
    /// Open the journal `config` names and read its templates, for calls through `invoker`
    /// by submitters as `callers` sees them when a stage runs.
    pub async fn open(
        config: &Config,
        invoker: Arc<Invoker>,
        callers: CallerCheck,
    ) -> anyhow::Result<Arc<Tasks>> {
        let store = Store::parse(&config.tasks_database())?;
        let journal = store.open().await?;
        let templates = load_templates(&config.tasks_dir())?;
        let settings = &config.tasks;
        let owner = format!(
            "{}-{}-{:08x}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "autoglm".into()),
            std::process::id(),
            rand::random::<u32>()
        );
        Ok(Arc::new(Tasks {
            journal,
            store: store.describe(),
            invoker,
            templates,
            owner,
            lease: Duration::from_millis(settings.lease_ms),
            poll: Duration::from_millis(settings.poll_ms),
            retain: Duration::from_secs(settings.retain_days * 86_400),
            slots: Arc::new(Semaphore::new(settings.concurrency)),
            running: Mutex::new(HashMap::new()),
            generations: std::sync::atomic::AtomicU64::new(0),
            wake: Notify::new(),
            progress: Notify::new(),
            callers,
        }))
    }

    /// Trust each task's stored allowlist as it is, for hosts without API keys (the CLI).
    pub fn stored_callers() -> CallerCheck {
        Arc::new(|caller: &Allowlist| Ok(caller.clone()))
    }

    /// The journal's store, for messages (`sqlite:PATH`, `postgres://user@host/db`).
    pub fn store(&self) -> &str {
        &self.store
    }

    /// This replica's name in leases.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The templates, by name.
    pub fn templates(&self) -> &BTreeMap<String, TaskSpec> {
        &self.templates
    }

    /// Run, in the background, what this replica should: tasks it is told of, tasks it
    /// finds runnable and unclaimed in the journal, leases renewed, old tasks removed.
    pub fn start(self: &Arc<Self>) {
        let tasks = self.clone();
        tokio::spawn(async move { tasks.claim_loop().await });
        self.keep_leases();
    }

    /// Renew the leases of the tasks this process runs, without claiming any others: for
    /// the CLI, which runs the task it submitted and no one else's.
    pub fn keep_leases(self: &Arc<Self>) {
        let tasks = self.clone();
        tokio::spawn(async move { tasks.heartbeat_loop().await });
    }

    /// Check `submission` and journal it as a new task of `caller`'s, which this replica
    /// starts at once when it has room (another replica may, otherwise). Nothing is
    /// journaled when the spec, its inputs or its tools are refused.
    pub async fn submit(
        self: &Arc<Self>,
        caller: &Allowlist,
        submission: Submission,
    ) -> Result<TaskRecord, CallError> {
        let spec = match (&submission.spec, &submission.template) {
            (Some(value), None) => TaskSpec::parse(value).map_err(bad_spec)?,
            (None, Some(name)) => self.templates.get(name).cloned().ok_or_else(|| {
                let known: Vec<&str> = self.templates.keys().map(String::as_str).collect();
                CallError::new(
                    ErrorKind::BadRequest,
                    format!(
                        "`template`: no task template `{name}`; templates: {}",
                        if known.is_empty() { "none".into() } else { known.join(", ") }
                    ),
                )
            })?,
            _ => {
                return Err(CallError::new(
                    ErrorKind::BadRequest,
                    "give one of `spec` (a task spec) and `template` (a template's name)",
                ));
            }
        };
        spec.check_inputs(&submission.inputs).map_err(bad_spec)?;
        self.check_tools(caller, &spec)?;
        let id = format!("{:032x}", rand::random::<u128>());
        let now = now_ms();
        let mut record = TaskRecord {
            id,
            kind: RunKind::Task,
            name: spec.name.clone().or(submission.template.clone()),
            state: TaskState::Pending,
            spec: spec.source.clone(),
            inputs: submission.inputs,
            caller: caller.clone(),
            trace_id: submission.trace_id,
            stages: spec.stages().map(|(_, s)| StageRecord::new(&s.name)).collect(),
            error: None,
            paused_at: None,
            aborting: false,
            resumes: 0,
            created_ms: now,
            updated_ms: now,
            deadline_ms: spec.deadline_ms.map(|ms| now + ms),
            events: 0,
            steps: Map::new(),
        };
        let event = next_event(&mut record, "submitted", None, None, None);
        let slot = self.slots.clone().try_acquire_owned().ok();
        let lease = slot.as_ref().map(|_| (self.owner.as_str(), self.lease));
        let created = self.journal.create(&record, &event, lease).await.map_err(unavailable)?;
        if !created {
            return Err(CallError::new(
                ErrorKind::Conflict,
                "a task with this id exists; submit again",
            ));
        }
        match slot {
            Some(slot) => self.spawn(record.clone(), slot),
            None => self.wake.notify_one(),
        }
        Ok(record)
    }

    /// Every tool the spec names (compensations included) must exist and be one `caller`
    /// may call.
    fn check_tools(&self, caller: &Allowlist, spec: &TaskSpec) -> Result<(), CallError> {
        let router = self.invoker.router();
        for (field, call) in spec.calls() {
            let target = self.invoker.resolve_for(caller, &router, &call.tool).map_err(|e| {
                let kind = match e.kind {
                    ErrorKind::UnknownTool | ErrorKind::AmbiguousTool => ErrorKind::BadRequest,
                    kind => kind,
                };
                CallError::new(kind, format!("`{field}`: {}", e.message))
            })?;
            caller
                .check(&target.id())
                .map_err(|e| CallError::new(e.kind, format!("`{field}`: {}", e.message)))?;
        }
        Ok(())
    }

    /// The task `id`, when `caller` may see it.
    pub async fn get(&self, caller: &Allowlist, id: &str) -> Result<TaskRecord, CallError> {
        let record = self.journal.load(id).await.map_err(unavailable)?;
        (record.filter(|r| r.kind == RunKind::Task && visible(caller, r)))
            .ok_or_else(|| not_found(id))
    }

    /// A page of `caller`'s tasks, newest first, and the cursor of the next page.
    pub async fn list(
        &self,
        caller: &Allowlist,
        state: Option<TaskState>,
        limit: usize,
        before: Option<Cursor>,
    ) -> Result<(Vec<TaskRecord>, Option<Cursor>), CallError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let query = ListQuery {
            state,
            caller: (caller.caller() != OPERATOR).then(|| caller.caller().to_string()),
            limit: limit + 1,
            before,
        };
        let mut page = self.journal.list(&query).await.map_err(unavailable)?;
        let more = page.len() > limit;
        page.truncate(limit);
        let next = more.then(|| page.last().map(Cursor::after)).flatten();
        Ok((page, next))
    }

    /// The events of task `id` from `from` on (at most `limit`), when `caller` may see it.
    pub async fn events(
        &self,
        caller: &Allowlist,
        id: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Event>, CallError> {
        self.get(caller, id).await?;
        self.journal.events(id, from, limit).await.map_err(unavailable)
    }

    /// Wait until something may have changed in a task this replica runs, or `at_most`.
    pub async fn changed(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.progress.notified()).await;
    }

    /// Wait until task `id` is settled (finished, paused or stuck), and return it.
    pub async fn settled(&self, caller: &Allowlist, id: &str) -> Result<TaskRecord, CallError> {
        loop {
            let record = self.get(caller, id).await?;
            if record.state.is_settled() {
                return Ok(record);
            }
            self.changed(self.poll).await;
        }
    }

    /// Carry out an operator's `action` on task `id`.
    pub async fn act(
        &self,
        caller: &Allowlist,
        id: &str,
        action: Action,
    ) -> Result<TaskRecord, CallError> {
        let mut record = self.get(caller, id).await?;
        let before = record.state;
        let conflict = |what: &str| {
            CallError::new(ErrorKind::Conflict, format!("task {id} is {}: {what}", before.as_str()))
        };
        let kind = match (before, action) {
            (TaskState::Paused | TaskState::Failed, Action::Resume { skip }) => {
                let stage =
                    failed_stage(&record).ok_or_else(|| conflict("no failed stage to resume"))?;
                let now = now_ms();
                let stage = record.stage_mut(&stage);
                match skip {
                    true => {
                        stage.state = StageState::Skipped;
                        stage.finished_ms = Some(now);
                    }
                    false => {
                        stage.state = StageState::Pending;
                        stage.failures = 0;
                    }
                }
                record.state = TaskState::Running;
                "resumed"
            }
            (TaskState::Paused | TaskState::Failed, Action::Retry) => {
                let stage =
                    failed_stage(&record).ok_or_else(|| conflict("no failed stage to retry"))?;
                let stage = record.stage_mut(&stage);
                stage.state = StageState::Pending;
                stage.failures = 0;
                record.state = TaskState::Running;
                "retried"
            }
            (TaskState::CompensationFailed, Action::Retry) => {
                for stage in &mut record.stages {
                    if stage.state == StageState::CompensationFailed {
                        stage.state = StageState::Succeeded;
                        if let Some(compensation) = &mut stage.compensation {
                            compensation.failures = 0;
                        }
                    }
                }
                record.state = TaskState::Compensating;
                "retried"
            }
            (TaskState::Paused | TaskState::Failed, Action::Abort) => {
                record.state = TaskState::Compensating;
                record.aborting = true;
                "aborted"
            }
            (TaskState::CompensationFailed, Action::Abort) => {
                record.state = TaskState::Aborted;
                "aborted"
            }
            _ => {
                return Err(conflict(
                    "only a paused or failed task can be resumed, retried or aborted, and one whose \
                     compensation failed retried or aborted",
                ));
            }
        };
        record.error = None;
        record.paused_at = None;
        let detail =
            serde_json::json!({"action": kind, "by": caller.caller(), "from": before.as_str()});
        let event = next_event(&mut record, kind, None, None, Some(detail));
        let committed = (self.journal)
            .commit(&record, std::slice::from_ref(&event), Fence::State(before))
            .await
            .map_err(unavailable)?;
        if !committed {
            return Err(CallError::new(
                ErrorKind::Conflict,
                format!("task {id} changed while the action was being applied; look at it again"),
            ));
        }
        self.invoker.metrics().tasks().resumed();
        self.wake.notify_one();
        Ok(record)
    }

    /// Refresh the tasks-by-state gauges from the journal.
    pub async fn observe(&self) {
        match self.journal.counts().await {
            Ok(counts) => {
                let metrics = self.invoker.metrics().tasks();
                for state in TaskState::ALL {
                    let count = counts.iter().find(|(s, _)| *s == state).map_or(0, |(_, n)| *n);
                    metrics.set_state(state.as_str(), count);
                }
            }
            Err(error) => tracing::warn!(%error, "task counts not read"),
        }
    }

    async fn claim_loop(self: Arc<Self>) {
        let mut purged = None::<std::time::Instant>;
        loop {
            if purged.is_none_or(|at| at.elapsed() > Duration::from_secs(3600)) {
                let before = now_ms().saturating_sub(self.retain.as_millis() as u64);
                match self.journal.purge(before).await {
                    Ok(0) => {}
                    Ok(removed) => {
                        tracing::info!(removed, "finished tasks past retain_days removed")
                    }
                    Err(error) => tracing::warn!(%error, "old tasks not removed"),
                }
                purged = Some(std::time::Instant::now());
            }
            let free = self.slots.available_permits();
            if free > 0 {
                match self.journal.claim(&self.owner, self.lease, free).await {
                    Ok(claimed) => {
                        for task in claimed {
                            // Its own lease, expired while the journal was unreachable: the
                            // run here still goes on (and renews it), a second must not start.
                            if self.lock_running().contains_key(&task.record.id) {
                                continue;
                            }
                            let Ok(slot) = self.slots.clone().try_acquire_owned() else { break };
                            let mut record = task.record;
                            if task.previous_owner.is_some_and(|p| p != self.owner) {
                                record.resumes += 1;
                                self.invoker.metrics().tasks().taken_over();
                                tracing::info!(task = %record.id, "task taken over from a replica whose lease expired");
                            }
                            self.spawn(record, slot);
                        }
                    }
                    Err(error) => tracing::warn!(%error, "tasks not claimed"),
                }
            }
            let _ = tokio::time::timeout(self.poll, self.wake.notified()).await;
        }
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.lease / 3);
        let mut renewed = std::time::Instant::now();
        loop {
            tick.tick().await;
            let held: Vec<(String, u64)> =
                self.lock_running().iter().map(|(id, r)| (id.clone(), r.generation)).collect();
            if held.is_empty() {
                renewed = std::time::Instant::now();
                continue;
            }
            let ids: Vec<String> = held.iter().map(|(id, _)| id.clone()).collect();
            let lost: Vec<(String, u64)> = match self
                .journal
                .renew(&self.owner, &ids, self.lease)
                .await
            {
                Ok(still) => {
                    renewed = std::time::Instant::now();
                    held.into_iter().filter(|(id, _)| !still.contains(id)).collect()
                }
                // Past a lease without renewing, another replica may hold these tasks now:
                // stop running them here rather than run a stage twice at once.
                Err(error) if renewed.elapsed() >= self.lease => {
                    tracing::error!(%error, "task leases not renewed for a whole lease: stopping their runs here");
                    held
                }
                Err(error) => {
                    tracing::warn!(%error, "task leases not renewed");
                    Vec::new()
                }
            };
            let mut running = self.lock_running();
            for (id, generation) in lost {
                // Only the run the renewal was for: the task may have been claimed again since.
                if running.get(&id).is_some_and(|r| r.generation == generation) {
                    tracing::warn!(task = %id, "lease lost: stopping this replica's run");
                    if let Some(run) = running.remove(&id) {
                        run.handle.abort();
                    }
                }
            }
        }
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn spawn(self: &Arc<Self>, record: TaskRecord, slot: tokio::sync::OwnedSemaphorePermit) {
        let id = record.id.clone();
        let generation = self.generations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tasks = self.clone();
        let mut running = self.lock_running();
        let handle = tokio::spawn(async move {
            // Dropped however the run ends (a panic included): the entry and the slot go.
            let _done = Finished {
                tasks: tasks.clone(),
                id: record.id.clone(),
                generation,
                slot: Some(slot),
            };
            run::Run::new(tasks, record).drive().await;
        });
        running.insert(id, Running { generation, handle: handle.abort_handle() });
    }
}

/// A run this replica has going.
struct Running {
    /// Which spawn of the task it is: a task can be claimed again once its run ended.
    generation: u64,
    handle: tokio::task::AbortHandle,
}

/// Clears a run's entry and frees its slot when the run ends.
struct Finished {
    tasks: Arc<Tasks>,
    id: String,
    generation: u64,
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Drop for Finished {
    fn drop(&mut self) {
        let mut running = self.tasks.lock_running();
        if running.get(&self.id).is_some_and(|r| r.generation == self.generation) {
            running.remove(&self.id);
        }
        drop(running);
        // The slot goes before the claim loop is woken: woken first, it could find no free
        // slot and sleep a whole poll with runnable tasks waiting.
        drop(self.slot.take());
        self.tasks.progress.notify_waiters();
        self.tasks.wake.notify_one();
    }
}

/// The stage an operator's resume or retry is about: where the task paused, else the
/// first that failed.
fn failed_stage(record: &TaskRecord) -> Option<String> {
    (record.paused_at.clone()).or_else(|| {
        record.stages.iter().find(|s| s.state == StageState::Failed).map(|s| s.name.clone())
    })
}

/// Whether `caller` may see `record`: every key sees its own tasks (whether it may call
/// every tool or not), the operator at the command line sees all.
fn visible(caller: &Allowlist, record: &TaskRecord) -> bool {
    caller.caller() == OPERATOR || record.caller.caller() == caller.caller()
}

/// The next event of `record`, its sequence number taken.
fn next_event(
    record: &mut TaskRecord,
    kind: &str,
    stage: Option<&str>,
    attempt: Option<u32>,
    detail: Option<Value>,
) -> Event {
    let now = now_ms();
    record.updated_ms = now;
    let event = Event {
        seq: record.events,
        at_ms: now,
        kind: kind.to_string(),
        state: record.state,
        stage: stage.map(str::to_string),
        attempt,
        detail,
    };
    record.events += 1;
    event
}

fn bad_spec(error: spec::SpecError) -> CallError {
    CallError::new(ErrorKind::BadRequest, format!("invalid task spec: {error}"))
}

fn unavailable(error: JournalError) -> CallError {
    CallError::new(ErrorKind::JournalUnavailable, error.to_string())
}

fn not_found(id: &str) -> CallError {
    CallError::new(ErrorKind::NotFound, format!("no task {id}"))
}
