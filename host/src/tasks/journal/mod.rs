//! The write-ahead journal: every transition of a task is committed here before the runner
//! acts on it, so a replica that dies mid-task loses nothing another cannot pick up.
//!
//! Two stores keep it: SQLite (a file, WAL, full sync; the default) and Postgres, shared by
//! several replicas that claim runnable tasks with leases (`FOR UPDATE SKIP LOCKED`).

mod postgres;
mod sqlite;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::record::{Event, TaskRecord, TaskState};

/// Why the journal could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the tasks journal ({store}) {message}")]
pub struct JournalError {
    /// Which store: `sqlite:PATH` or `postgres://HOST/DB`.
    pub store: String,
    /// What failed and what to do.
    pub message: String,
}

/// What a commit must find to go ahead: the journal refuses a write that lost its race.
#[derive(Debug, Clone, Copy)]
pub enum Fence<'a> {
    /// The task's lease is held by this owner (the runner's writes).
    Lease(&'a str),
    /// The task is in this state and no replica holds it (an operator's action).
    State(TaskState),
}

/// A task a replica has just claimed.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The task as journaled.
    pub record: TaskRecord,
    /// The replica whose lease had expired, when it was taken over from one.
    pub previous_owner: Option<String>,
}

/// Which tasks a listing shows.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// Only tasks this caller submitted.
    pub caller: Option<String>,
    /// At most this many (newest first).
    pub limit: usize,
    /// Only tasks older than this cursor (from the previous page).
    pub before: Option<Cursor>,
}

/// A position in a listing: the last task of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Its creation time.
    pub created_ms: u64,
    /// Its id.
    pub id: String,
}

impl Cursor {
    /// The cursor after `record`.
    pub fn after(record: &TaskRecord) -> Self {
        Self { created_ms: record.created_ms, id: record.id.clone() }
    }

    /// `CREATED-ID`, as the API hands it out.
    pub fn encode(&self) -> String {
        format!("{}-{}", self.created_ms, self.id)
    }

    /// A cursor from [`Cursor::encode`].
    pub fn decode(text: &str) -> Option<Self> {
        let (created, id) = text.split_once('-')?;
        Some(Self { created_ms: created.parse().ok()?, id: id.to_string() })
    }
}

/// A store of tasks and their events.
#[async_trait::async_trait]
pub trait Journal: Send + Sync {
    /// Journal a new task with its first event, its lease held by `owner` when given;
    /// Ok(false) when a task of that id is journaled already.
    async fn create(
        &self,
        task: &TaskRecord,
        event: &Event,
        owner: Option<(&str, Duration)>,
    ) -> Result<bool, JournalError>;

    /// Commit `events` (one or more, in order) and the task as it is after them, all or
    /// nothing, if `fence` holds; Ok(false) when it does not (another replica took the
    /// task, or an operator's action lost a race). A task that is no longer runnable is
    /// released.
    async fn commit(
        &self,
        task: &TaskRecord,
        events: &[Event],
        fence: Fence<'_>,
    ) -> Result<bool, JournalError>;

    /// The task `id`.
    async fn load(&self, id: &str) -> Result<Option<TaskRecord>, JournalError>;

    /// Tasks, newest first.
    async fn list(&self, query: &ListQuery) -> Result<Vec<TaskRecord>, JournalError>;

    /// The events of task `id` from sequence number `from` on, at most `limit`.
    async fn events(&self, id: &str, from: u64, limit: usize) -> Result<Vec<Event>, JournalError>;

    /// Take the leases of up to `limit` runnable tasks that nobody holds (or whose lease
    /// expired) for `owner`.
    async fn claim(
        &self,
        owner: &str,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Claimed>, JournalError>;

    /// Extend `owner`'s leases of `ids`; the ids it still holds.
    async fn renew(
        &self,
        owner: &str,
        ids: &[String],
        lease: Duration,
    ) -> Result<Vec<String>, JournalError>;

    /// Remove finished tasks, and durable chats however they ended, last changed before
    /// `before_ms`; how many.
    async fn purge(&self, before_ms: u64) -> Result<u64, JournalError>;

    /// Tasks by state, for the metrics.
    async fn counts(&self) -> Result<Vec<(TaskState, u64)>, JournalError>;
}

/// Where the journal lives, from `[tasks] database`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A Postgres URL.
    Postgres(String),
}

impl Store {
    /// The store `database` names: `postgres://…`/`postgresql://…`, or `sqlite:PATH`.
    pub fn parse(database: &str) -> anyhow::Result<Store> {
        if database.starts_with("postgres://") || database.starts_with("postgresql://") {
            return Ok(Store::Postgres(database.to_string()));
        }
        match database.strip_prefix("sqlite:") {
            Some(path) if !path.is_empty() => {
                Ok(Store::Sqlite(PathBuf::from(path.trim_start_matches("//"))))
            }
            _ => anyhow::bail!(
                "[tasks] database = \"{database}\" names no store: use \"sqlite:PATH\" or \
                 \"postgres://USER@HOST:PORT/DB\""
            ),
        }
    }

    /// The store for messages, without a password.
    pub fn describe(&self) -> String {
        match self {
            Store::Sqlite(path) => format!("sqlite:{}", path.display()),
            Store::Postgres(url) => postgres::redacted(url),
        }
    }

    /// Open (and create, where missing) the journal.
    pub async fn open(&self) -> Result<Arc<dyn Journal>, JournalError> {
        match self {
            Store::Sqlite(path) => Ok(Arc::new(sqlite::Sqlite::open(path)?)),
            Store::Postgres(url) => Ok(Arc::new(postgres::Postgres::connect(url).await?)),
        }
    }
}

/// The final states whose tasks retention removes, by name.
fn final_states() -> Vec<&'static str> {
    TaskState::ALL.into_iter().filter(|s| s.is_final()).map(TaskState::as_str).collect()
}

/// The runnable states, by name.
fn runnable_states() -> Vec<&'static str> {
    TaskState::ALL.into_iter().filter(|s| s.is_runnable()).map(TaskState::as_str).collect()
}

fn encode<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("journal records serialize")
}

fn decode<T: serde::de::DeserializeOwned>(store: &str, text: &str) -> Result<T, JournalError> {
    serde_json::from_str(text).map_err(|e| JournalError {
        store: store.to_string(),
        message: format!(
            "holds a record this version cannot read ({e}); was it written by a newer autoglm?"
        ),
    })
}

/// A claimed record, or None (logged) when this version cannot read it: one unreadable row
/// must not keep the others of its batch from running. Its lease expires; whichever
/// version can read it claims it then.
fn readable(record: Result<TaskRecord, JournalError>) -> Option<TaskRecord> {
    record.map_err(|error| tracing::error!(%error, "a claimed task left alone")).ok()
}
