//! One replica running one task it holds the lease of: stages in order (a group's stages
//! at once), retries with backoff, the failure policy, and compensation in reverse order.
//! Each transition is committed, fenced by the lease, before the next step acts on it. A
//! transition whose next step is only another commit (a task's start, a lone stage's
//! success) rides in that commit, so a sequential task costs one commit a stage, not two.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::journal::Fence;
use super::record::{
    CompensationRecord, Event, Failure, StageState, TaskRecord, TaskState, now_ms,
};
use super::spec::{Call, FailurePolicy, Ref, Stage, TaskSpec};
use super::{Tasks, next_event};
use crate::error::{CallError, ErrorKind};
use crate::metered::Metered;
use crate::runtime::sandbox::CallOptions;

/// Why a run stops before the task settles: the journal refused or lost a write, or the
/// lease went to another replica. Either way the journal holds the truth and whoever
/// holds the lease next goes on from there.
#[derive(Debug)]
struct Stop;

/// A task being run.
pub(super) struct Run {
    tasks: Arc<Tasks>,
    record: Mutex<TaskRecord>,
    /// Set once a commit failed: the record in memory is then ahead of the journal, and no
    /// stage of a group still running may commit it.
    stopped: std::sync::atomic::AtomicBool,
    /// Events made but not yet journaled: the next commit writes them first, in the same
    /// transaction. Touched only under the `record` lock, as the record they describe.
    deferred: std::sync::Mutex<Vec<Event>>,
}

impl Run {
    pub(super) fn new(tasks: Arc<Tasks>, record: TaskRecord) -> Self {
        Self {
            tasks,
            record: Mutex::new(record),
            stopped: Default::default(),
            deferred: Default::default(),
        }
    }

    /// Run until the task settles or this replica must stop.
    pub(super) async fn drive(self) {
        let id = self.record.lock().await.id.clone();
        let spec = {
            let record = self.record.lock().await;
            TaskSpec::parse(&record.spec)
        };
        let spec = match spec {
            Ok(spec) => spec,
            Err(error) => {
                // Only a journal written by another version can hold a spec this one refuses.
                let failure = Failure { kind: "bad_request".into(), message: error.to_string() };
                let _ = self.finish(TaskState::Failed, Some(failure)).await;
                return;
            }
        };
        if let Err(Stop) = self.steps(&spec).await {
            tracing::warn!(task = %id, "task run stopped; the journal keeps it for the next lease holder");
        }
    }

    async fn steps(&self, spec: &TaskSpec) -> Result<(), Stop> {
        {
            let mut record = self.record.lock().await;
            if record.resumes > 0 && record.events > 1 {
                let detail = json!({"owner": self.tasks.owner, "resumes": record.resumes});
                self.commit(&mut record, "taken_over", None, None, Some(detail)).await?;
            }
            if record.state == TaskState::Pending {
                record.state = TaskState::Running;
                self.defer(next_event(&mut record, "started", None, None, None));
            }
        }
        loop {
            let state = self.record.lock().await.state;
            match state {
                TaskState::Running => {}
                TaskState::Compensating => return self.compensate(spec).await,
                _ => return Ok(()),
            }
            let step = {
                let record = self.record.lock().await;
                spec.steps.iter().find(|step| {
                    step.stages.iter().any(|s| {
                        !matches!(
                            record.stage(&s.name).state,
                            StageState::Succeeded | StageState::Skipped
                        )
                    })
                })
            };
            let Some(step) = step else {
                return self.finish(TaskState::Succeeded, None).await;
            };
            let pending: Vec<&Stage> = {
                let record = self.record.lock().await;
                (step.stages.iter())
                    .filter(|s| {
                        !matches!(
                            record.stage(&s.name).state,
                            StageState::Succeeded | StageState::Skipped
                        )
                    })
                    .collect()
            };
            // A lone stage's success is followed by nothing but the next commit (the next
            // stage's start or the task's end); a group's stages are not, while siblings run.
            let lone = pending.len() == 1;
            let outcomes = join_all(pending.iter().map(|stage| self.stage(stage, lone))).await;
            let mut critical = None;
            for (stage, outcome) in pending.iter().zip(outcomes) {
                let Some(failure) = outcome? else { continue };
                if !stage.critical {
                    let mut record = self.record.lock().await;
                    let now = now_ms();
                    let entry = record.stage_mut(&stage.name);
                    entry.state = StageState::Skipped;
                    entry.finished_ms = Some(now);
                    let detail = json!({"reason": "not critical", "error": failure});
                    self.commit(
                        &mut record,
                        "stage_skipped",
                        Some(&stage.name),
                        None,
                        Some(detail),
                    )
                    .await?;
                } else if critical.is_none() {
                    critical = Some((stage.name.clone(), failure));
                }
            }
            let Some((stage, failure)) = critical else { continue };
            let mut record = self.record.lock().await;
            record.error = Some(failure);
            match spec.policy {
                FailurePolicy::Compensate => {
                    record.state = TaskState::Compensating;
                    self.commit(&mut record, "compensating", Some(&stage), None, None).await?;
                }
                FailurePolicy::Pause => {
                    record.state = TaskState::Paused;
                    record.paused_at = Some(stage.clone());
                    return self.commit(&mut record, "paused", Some(&stage), None, None).await;
                }
                FailurePolicy::Skip => {
                    record.state = TaskState::Failed;
                    return self.commit(&mut record, "failed", Some(&stage), None, None).await;
                }
            }
        }
    }

    /// Run one stage to its result or its final failure (`Some`), retrying as it says; a
    /// success is left to ride in the next commit when `defer_success`.
    async fn stage(&self, stage: &Stage, defer_success: bool) -> Result<Option<Failure>, Stop> {
        let began = Instant::now();
        loop {
            let (args, attempt, key) = {
                let mut record = self.record.lock().await;
                let now = now_ms();
                let entry = record.stage_mut(&stage.name);
                entry.state = StageState::Running;
                entry.attempts += 1;
                entry.started_ms = Some(now);
                let attempt = entry.attempts;
                self.commit(&mut record, "stage_started", Some(&stage.name), Some(attempt), None)
                    .await?;
                let key = attempt_key(&record.id, &stage.name, record.stage(&stage.name).observed);
                (resolve(&stage.call.args, &record), attempt, key)
            };
            let outcome = match args {
                Ok(args) => self.call(&stage.call, &args, key, true).await,
                Err(error) => Err(error),
            };
            let mut record = self.record.lock().await;
            let now = now_ms();
            match outcome {
                Ok(result) => {
                    let completed = record.stages.iter().filter(|s| s.completed.is_some()).count();
                    let entry = record.stage_mut(&stage.name);
                    entry.state = StageState::Succeeded;
                    entry.result = Some(result.clone());
                    entry.error = None;
                    entry.finished_ms = Some(now);
                    entry.completed = Some(completed as u32 + 1);
                    let (name, detail) =
                        (Some(stage.name.as_str()), Some(json!({"result": result})));
                    if defer_success {
                        let event =
                            next_event(&mut record, "stage_succeeded", name, Some(attempt), detail);
                        self.defer(event);
                    } else {
                        self.commit(&mut record, "stage_succeeded", name, Some(attempt), detail)
                            .await?;
                    }
                    self.tasks.invoker.metrics().tasks().stage_done(began.elapsed().as_secs_f64());
                    return Ok(None);
                }
                Err(error) => {
                    let failure = Failure::from(&error);
                    let past_deadline = record.deadline_ms.is_some_and(|d| now >= d);
                    let entry = record.stage_mut(&stage.name);
                    entry.failures += 1;
                    entry.observed += 1;
                    entry.error = Some(failure.clone());
                    let retry =
                        retryable(&error) && !past_deadline && entry.failures <= stage.call.retries;
                    if retry {
                        let wait = backoff(&stage.call, entry.failures);
                        let detail =
                            json!({"error": failure, "retry_in_ms": wait.as_millis() as u64});
                        self.commit(
                            &mut record,
                            "stage_failed",
                            Some(&stage.name),
                            Some(attempt),
                            Some(detail),
                        )
                        .await?;
                        drop(record);
                        self.tasks.invoker.metrics().tasks().retried();
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    entry.state = StageState::Failed;
                    entry.finished_ms = Some(now);
                    let detail = json!({"error": failure, "final": true});
                    self.commit(
                        &mut record,
                        "stage_failed",
                        Some(&stage.name),
                        Some(attempt),
                        Some(detail),
                    )
                    .await?;
                    self.tasks.invoker.metrics().tasks().stage_done(began.elapsed().as_secs_f64());
                    return Ok(Some(failure));
                }
            }
        }
    }

    /// Undo the completed stages, last completed first; end `compensated` (or `aborted`),
    /// or `compensation_failed` at the first compensation that fails past its retries.
    async fn compensate(&self, spec: &TaskSpec) -> Result<(), Stop> {
        let order: Vec<&Stage> = {
            let record = self.record.lock().await;
            let mut done: Vec<(u32, &Stage)> = (spec.stages())
                .filter_map(|(_, stage)| {
                    let entry = record.stage(&stage.name);
                    // A stage that timed out may have done its work all the same (the call
                    // was cut, not refused): it is undone too, first, as the latest.
                    let unknown = entry.state == StageState::Failed
                        && entry.error.as_ref().is_some_and(|e| e.kind == "timeout");
                    let undo = stage.compensate.is_some()
                        && (unknown
                            || matches!(
                                entry.state,
                                StageState::Succeeded | StageState::Compensating
                            ));
                    undo.then(|| (entry.completed.unwrap_or(u32::MAX), stage))
                })
                .collect();
            done.sort_by_key(|entry| std::cmp::Reverse(entry.0));
            done.into_iter().map(|(_, stage)| stage).collect()
        };
        for stage in order {
            let call = stage.compensate.as_ref().expect("filtered above");
            loop {
                let (args, attempt, key) = {
                    let mut record = self.record.lock().await;
                    let now = now_ms();
                    let entry = record.stage_mut(&stage.name);
                    entry.state = StageState::Compensating;
                    let compensation =
                        entry.compensation.get_or_insert_with(CompensationRecord::default);
                    compensation.attempts += 1;
                    compensation.started_ms = Some(now);
                    let attempt = compensation.attempts;
                    self.commit(
                        &mut record,
                        "compensation_started",
                        Some(&stage.name),
                        Some(attempt),
                        None,
                    )
                    .await?;
                    let undo = format!("{}/compensate", stage.name);
                    let observed =
                        record.stage(&stage.name).compensation.as_ref().map_or(0, |c| c.observed);
                    let key = attempt_key(&record.id, &undo, observed);
                    (resolve(&call.args, &record), attempt, key)
                };
                let outcome = match args {
                    Ok(args) => self.call(call, &args, key, false).await,
                    Err(error) => Err(error),
                };
                let mut record = self.record.lock().await;
                let now = now_ms();
                let entry = record.stage_mut(&stage.name);
                let compensation =
                    entry.compensation.get_or_insert_with(CompensationRecord::default);
                match outcome {
                    Ok(result) => {
                        compensation.result = Some(result);
                        compensation.error = None;
                        compensation.finished_ms = Some(now);
                        entry.state = StageState::Compensated;
                        self.commit(
                            &mut record,
                            "compensation_succeeded",
                            Some(&stage.name),
                            Some(attempt),
                            None,
                        )
                        .await?;
                        self.tasks.invoker.metrics().tasks().compensated();
                        break;
                    }
                    Err(error) => {
                        let failure = Failure::from(&error);
                        compensation.failures += 1;
                        compensation.observed += 1;
                        compensation.error = Some(failure.clone());
                        if retryable(&error) && compensation.failures <= call.retries {
                            let wait = backoff(call, compensation.failures);
                            let detail =
                                json!({"error": failure, "retry_in_ms": wait.as_millis() as u64});
                            self.commit(
                                &mut record,
                                "compensation_failed",
                                Some(&stage.name),
                                Some(attempt),
                                Some(detail),
                            )
                            .await?;
                            drop(record);
                            self.tasks.invoker.metrics().tasks().retried();
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        compensation.finished_ms = Some(now);
                        entry.state = StageState::CompensationFailed;
                        record.state = TaskState::CompensationFailed;
                        record.error = Some(Failure {
                            kind: failure.kind.clone(),
                            message: format!(
                                "the compensation of stage `{}` failed: {}; fix the cause, then retry \
                                 (POST /v1/tasks/{}/retry) or abort",
                                stage.name, failure.message, record.id
                            ),
                        });
                        let detail = json!({"error": failure, "final": true});
                        return self
                            .commit(
                                &mut record,
                                "compensation_failed",
                                Some(&stage.name),
                                Some(attempt),
                                Some(detail),
                            )
                            .await;
                    }
                }
            }
        }
        let end = match self.record.lock().await.aborting {
            true => TaskState::Aborted,
            false => TaskState::Compensated,
        };
        let error = self.record.lock().await.error.clone();
        self.finish(end, error).await
    }

    async fn finish(&self, state: TaskState, error: Option<Failure>) -> Result<(), Stop> {
        let mut record = self.record.lock().await;
        record.state = state;
        record.error = error;
        self.commit(&mut record, state.as_str(), None, None, None).await
    }

    /// One tool call of the task, under its submitter's allowlist as the server sees it
    /// now, bounded by the call's deadline and, for a stage (`bounded`), the task's. A
    /// compensation is not bound by the task's deadline: a task past it must still be
    /// undone.
    async fn call(
        &self,
        call: &Call,
        args: &Value,
        key: String,
        bounded: bool,
    ) -> Result<Value, CallError> {
        let (caller, trace_id, deadline) = {
            let record = self.record.lock().await;
            let deadline = record.deadline_ms.filter(|_| bounded);
            (record.caller.clone(), record.trace_id.clone(), deadline)
        };
        let allowlist = (self.tasks.callers)(&caller)?;
        let left = deadline.map(|d| Duration::from_millis(d.saturating_sub(now_ms())));
        let limit = match (call.deadline_ms.map(Duration::from_millis), left) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if limit == Some(Duration::ZERO) {
            return Err(CallError::new(ErrorKind::Timeout, "the task's deadline_ms passed"));
        }
        let options = CallOptions { idempotency_key: Some(key), trace_id, events: None };
        let invoker = &self.tasks.invoker;
        let called = invoker.call_with(&allowlist, &call.tool, args, &options);
        let metered: Metered<Value> = match limit {
            None => called.await,
            Some(limit) => tokio::time::timeout(limit, called).await.unwrap_or_else(|_| {
                Metered::refused(CallError::new(
                    ErrorKind::Timeout,
                    format!(
                        "the call took longer than {} ms (the stage's or the task's deadline_ms)",
                        limit.as_millis()
                    ),
                ))
            }),
        };
        metered.outcome
    }

    /// Leave `event` to the next [`Run::commit`]: only for a transition the run does
    /// nothing outside the journal after, but commit again.
    fn defer(&self, event: Event) {
        self.deferred.lock().expect("deferred events lock").push(event);
    }

    /// Commit the deferred events and the next one, fenced by this replica's lease.
    async fn commit(
        &self,
        record: &mut TaskRecord,
        kind: &str,
        stage: Option<&str>,
        attempt: Option<u32>,
        detail: Option<Value>,
    ) -> Result<(), Stop> {
        use std::sync::atomic::Ordering;
        if self.stopped.load(Ordering::Acquire) {
            return Err(Stop);
        }
        let mut events = std::mem::take(&mut *self.deferred.lock().expect("deferred events lock"));
        events.push(next_event(record, kind, stage, attempt, detail));
        let fence = Fence::Lease(&self.tasks.owner);
        let committed = self.tasks.journal.commit(record, &events, fence).await;
        self.tasks.progress.notify_waiters();
        if !matches!(committed, Ok(true)) {
            self.stopped.store(true, Ordering::Release);
        }
        match committed {
            Ok(true) => Ok(()),
            Ok(false) => {
                tracing::warn!(task = %record.id, "another replica holds this task now");
                Err(Stop)
            }
            Err(error) => {
                tracing::error!(task = %record.id, %error, "task transition not journaled");
                Err(Stop)
            }
        }
    }
}

/// `args` with every reference replaced by what it names.
fn resolve(args: &Value, record: &TaskRecord) -> Result<Value, CallError> {
    if let Some(reference) = Ref::of(args) {
        let reference = reference.map_err(|m| CallError::new(ErrorKind::InvalidArguments, m))?;
        let (root, path, what) = match &reference {
            Ref::Input(path) => {
                (Value::Object(record.inputs.clone()), path.clone(), "the inputs".to_string())
            }
            Ref::Result { stage, path } => {
                let result = record.stage(stage).result.clone().unwrap_or(Value::Null);
                (result, path.clone(), format!("the result of stage `{stage}`"))
            }
        };
        return Ref::lookup(&root, &path).cloned().ok_or_else(|| {
            CallError::new(
                ErrorKind::InvalidArguments,
                format!("{what} has nothing at `{}`", path.join(".")),
            )
        });
    }
    match args {
        Value::Object(map) => Ok(Value::Object(
            (map.iter())
                .map(|(k, v)| Ok((k.clone(), resolve(v, record)?)))
                .collect::<Result<_, CallError>>()?,
        )),
        Value::Array(items) => {
            Ok(Value::Array(items.iter().map(|v| resolve(v, record)).collect::<Result<_, _>>()?))
        }
        other => Ok(other.clone()),
    }
}

/// The idempotency key of a call of `what` (a stage, or `STAGE/compensate`) after
/// `observed` failures: a crash re-run keeps it, a retry after an observed failure gets a new
/// one (a service that remembers the failed attempt's answer would repeat it).
fn attempt_key(task: &str, what: &str, observed: u32) -> String {
    match observed {
        0 => format!("{task}/{what}"),
        n => format!("{task}/{what}/retry-{n}"),
    }
}

/// Whether trying again can help: not when the call was refused for what it is.
fn retryable(error: &CallError) -> bool {
    !matches!(
        error.kind,
        ErrorKind::InvalidArguments
            | ErrorKind::PermissionDenied
            | ErrorKind::UnknownTool
            | ErrorKind::AmbiguousTool
            | ErrorKind::BadRequest
    )
}

/// The wait before retry number `failures` (from 1): the backoff, doubled each time.
fn backoff(call: &Call, failures: u32) -> Duration {
    let factor = 1u64 << failures.saturating_sub(1).min(16);
    Duration::from_millis(call.backoff_ms.saturating_mul(factor).min(super::spec::MAX_STAGE_MS))
}
