//! The embedded journal: one SQLite file in WAL mode with full sync, written by one thread
//! that commits whatever writes are waiting in one transaction (group commit), so many
//! tasks share each fsync and none is told a write is journaled before it is on disk.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::{
    Claimed, Fence, Journal, JournalError, ListQuery, decode, encode, final_states, readable,
    runnable_states,
};
use crate::tasks::record::{Event, TaskRecord, TaskState, now_ms};

/// Most writes that share one commit.
const BATCH: usize = 256;

type Reply = Box<dyn FnOnce(Result<(), JournalError>) + Send>;
/// A unit of work: given the connection inside the open transaction (or why none could be
/// opened), it runs and hands back how to answer once the commit's outcome is known.
type Job = Box<dyn FnOnce(Result<&Connection, JournalError>) -> Reply + Send>;

/// Why work failed: the journal's own failure, or a row that was there first (a lost race).
enum Failed {
    Journal(JournalError),
    Taken,
}

/// The SQLite journal.
pub struct Sqlite {
    store: String,
    jobs: mpsc::Sender<Job>,
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS tasks (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        name TEXT,
        caller TEXT NOT NULL,
        state TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        lease_owner TEXT,
        lease_until INTEGER,
        record TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks (kind, state, lease_until);
    CREATE INDEX IF NOT EXISTS tasks_by_age ON tasks (created_ms, id);
    CREATE TABLE IF NOT EXISTS task_events (
        task_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        at_ms INTEGER NOT NULL,
        event TEXT NOT NULL,
        PRIMARY KEY (task_id, seq)
    );
";

impl Sqlite {
    /// Open (creating where missing) the journal at `path`, on its own writer thread.
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let store = format!("sqlite:{}", path.display());
        let fail = |message: String| JournalError { store: store.clone(), message };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
        }
        let connection = Connection::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
        connection
            .busy_timeout(Duration::from_secs(5))
            .and_then(|()| {
                connection.pragma_update_and_check(None, "journal_mode", "wal", |row| {
                    row.get::<_, String>(0)
                })
            })
            .and_then(|_| connection.pragma_update(None, "synchronous", "full"))
            .and_then(|()| connection.execute_batch(SCHEMA))
            .and_then(|()| {
                connection.query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0))
            })
            .map_err(|e| {
                fail(format!(
                    "cannot be used: {e}; if the file is damaged, move it away (a new one is \
                     created) or restore it from a backup"
                ))
            })
            .and_then(|check| match check.as_str() {
                "ok" => Ok(()),
                _ => Err(fail(format!("is damaged ({check}); restore it from a backup"))),
            })?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let writer_store = store.clone();
        std::thread::Builder::new()
            .name("autoglm-journal".into())
            .spawn(move || write_loop(&writer_store, connection, queue))
            .map_err(|e| fail(format!("cannot start its writer thread: {e}")))?;
        Ok(Self { store, jobs })
    }

    /// Run `work` on the writer thread, inside the next group commit; its answer arrives
    /// once that commit is on disk.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, JournalError> {
        self.run_unique(work).await.map_err(|failed| match failed {
            Failed::Journal(error) => error,
            Failed::Taken => JournalError {
                store: self.store.clone(),
                message: "failed: a row it wrote was there already".into(),
            },
        })
    }

    /// [`Sqlite::run`], telling a write that lost its race (a unique key already taken) from
    /// the journal's failures.
    async fn run_unique<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, Failed> {
        let (tx, rx) = oneshot::channel();
        let store = self.store.clone();
        let job: Job = Box::new(move |connection| {
            let done = connection.map(|c| savepoint(c, work));
            Box::new(move |committed: Result<(), JournalError>| {
                let answer = committed.and(done).map_err(Failed::Journal).and_then(|done| {
                    done.map_err(|e| match e.sqlite_error_code() {
                        Some(rusqlite::ErrorCode::ConstraintViolation) => Failed::Taken,
                        _ => {
                            Failed::Journal(JournalError { store, message: format!("failed: {e}") })
                        }
                    })
                });
                let _ = tx.send(answer);
            })
        });
        let closed = || {
            Failed::Journal(JournalError {
                store: self.store.clone(),
                message: "stopped: its writer thread ended".into(),
            })
        };
        self.jobs.send(job).map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }
}

/// Run `work` so that, when it fails, none of its writes stay in the shared transaction.
fn savepoint<T>(
    connection: &Connection,
    work: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    connection.execute_batch("SAVEPOINT job")?;
    match work(connection) {
        Ok(value) => connection.execute_batch("RELEASE job").map(|()| value),
        Err(error) => {
            let _ = connection.execute_batch("ROLLBACK TO job; RELEASE job");
            Err(error)
        }
    }
}

fn write_loop(store: &str, connection: Connection, queue: mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter().take(BATCH - 1));
        let fail = |what: &str, e: rusqlite::Error| JournalError {
            store: store.to_string(),
            message: format!("{what}: {e}"),
        };
        // Without a transaction each savepoint would commit on its own, answered as failed.
        let began =
            connection.execute_batch("BEGIN IMMEDIATE").map_err(|e| fail("cannot write", e));
        let replies: Vec<Reply> =
            (batch.into_iter()).map(|job| job(began.clone().map(|()| &connection))).collect();
        let outcome = began.and_then(|()| {
            connection.execute_batch("COMMIT").map_err(|e| {
                let _ = connection.execute_batch("ROLLBACK");
                fail("cannot commit", e)
            })
        });
        for reply in replies {
            reply(outcome.clone());
        }
    }
}

fn read_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<String> {
    row.get(0)
}

#[async_trait::async_trait]
impl Journal for Sqlite {
    async fn create(
        &self,
        task: &TaskRecord,
        event: &Event,
        owner: Option<(&str, Duration)>,
    ) -> Result<bool, JournalError> {
        let (record, event_text) = (encode(task), encode(event));
        let (id, name, caller) = (task.id.clone(), task.name.clone(), encode(&task.caller));
        let kind = task.kind.as_str();
        let (state, created, seq, at) =
            (task.state.as_str(), task.created_ms as i64, event.seq as i64, event.at_ms as i64);
        let lease = owner.map(|(o, d)| (o.to_string(), (now_ms() + d.as_millis() as u64) as i64));
        let created = self.run_unique(move |c| {
            c.execute(
                "INSERT INTO tasks (id, kind, name, caller, state, created_ms, updated_ms, lease_owner, lease_until, record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9)",
                params![id, kind, name, caller, state, created, lease.as_ref().map(|l| &l.0), lease.as_ref().map(|l| l.1), record],
            )?;
            c.execute(
                "INSERT INTO task_events (task_id, seq, at_ms, event) VALUES (?1, ?2, ?3, ?4)",
                params![id, seq, at, event_text],
            )?;
            Ok(())
        });
        match created.await {
            Ok(()) => Ok(true),
            Err(Failed::Taken) => Ok(false),
            Err(Failed::Journal(error)) => Err(error),
        }
    }

    async fn commit(
        &self,
        task: &TaskRecord,
        events: &[Event],
        fence: Fence<'_>,
    ) -> Result<bool, JournalError> {
        let record = encode(task);
        let events: Vec<_> =
            events.iter().map(|e| (e.seq as i64, e.at_ms as i64, encode(e))).collect();
        let (id, state, updated) = (task.id.clone(), task.state.as_str(), task.updated_ms as i64);
        let runnable = task.state.is_runnable();
        let (owner, expected) = match fence {
            Fence::Lease(owner) => (Some(owner.to_string()), None),
            Fence::State(state) => (None, Some(state.as_str())),
        };
        let committed = self.run_unique(move |c| {
            // A task that stops being runnable gives its lease back; an operator's action
            // leaves it free for whichever replica claims it first.
            let changed = c.execute(
                "UPDATE tasks SET state = ?2, updated_ms = ?3, record = ?4,
                     lease_owner = CASE WHEN ?5 AND ?6 IS NOT NULL THEN lease_owner END,
                     lease_until = CASE WHEN ?5 AND ?6 IS NOT NULL THEN lease_until END
                 WHERE id = ?1
                   AND (?6 IS NULL OR lease_owner = ?6)
                   AND (?7 IS NULL OR (state = ?7 AND lease_owner IS NULL))",
                params![id, state, updated, record, runnable, owner, expected],
            )?;
            if changed == 0 {
                return Ok(false);
            }
            let mut insert = c.prepare_cached(
                "INSERT INTO task_events (task_id, seq, at_ms, event) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (seq, at, event) in &events {
                insert.execute(params![id, seq, at, event])?;
            }
            Ok(true)
        });
        // An event of that number is journaled already: another writer got there first.
        match committed.await {
            Ok(done) => Ok(done),
            Err(Failed::Taken) => Ok(false),
            Err(Failed::Journal(error)) => Err(error),
        }
    }

    async fn load(&self, id: &str) -> Result<Option<TaskRecord>, JournalError> {
        let id = id.to_string();
        let text = self
            .run(move |c| {
                c.query_row("SELECT record FROM tasks WHERE id = ?1", [id], read_record).optional()
            })
            .await?;
        text.map(|t| decode(&self.store, &t)).transpose()
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<TaskRecord>, JournalError> {
        let state = query.state.map(TaskState::as_str);
        let caller = query.caller.clone();
        let limit = query.limit as i64;
        let (before_ms, before_id) = match &query.before {
            Some(c) => (Some(c.created_ms as i64), Some(c.id.clone())),
            None => (None, None),
        };
        let texts = self
            .run(move |c| {
                let mut statement = c.prepare_cached(
                    "SELECT record FROM tasks
                     WHERE kind = 'task' AND (?1 IS NULL OR state = ?1)
                       AND (?2 IS NULL OR json_extract(caller, '$.caller') = ?2)
                       AND (?3 IS NULL OR created_ms < ?3 OR (created_ms = ?3 AND id < ?4))
                     ORDER BY created_ms DESC, id DESC LIMIT ?5",
                )?;
                let rows = statement
                    .query_map(params![state, caller, before_ms, before_id, limit], read_record)?;
                rows.collect::<rusqlite::Result<Vec<String>>>()
            })
            .await?;
        texts.iter().map(|t| decode(&self.store, t)).collect()
    }

    async fn events(&self, id: &str, from: u64, limit: usize) -> Result<Vec<Event>, JournalError> {
        let id = id.to_string();
        let texts = self
            .run(move |c| {
                let mut statement = c.prepare_cached(
                    "SELECT event FROM task_events WHERE task_id = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
                )?;
                let rows = statement.query_map(params![id, from as i64, limit as i64], read_record)?;
                rows.collect::<rusqlite::Result<Vec<String>>>()
            })
            .await?;
        texts.iter().map(|t| decode(&self.store, t)).collect()
    }

    async fn claim(
        &self,
        owner: &str,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Claimed>, JournalError> {
        let owner = owner.to_string();
        let states = encode(&runnable_states());
        let rows = self
            .run(move |c| {
                let now = now_ms() as i64;
                let mut statement = c.prepare_cached(
                    "SELECT id, lease_owner FROM tasks
                     WHERE kind = 'task' AND state IN (SELECT value FROM json_each(?1))
                       AND (lease_until IS NULL OR lease_until < ?2)
                     ORDER BY created_ms LIMIT ?3",
                )?;
                let found = statement
                    .query_map(params![states, now, limit as i64], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let mut claimed = Vec::new();
                for (id, previous) in found {
                    let until = now + lease.as_millis() as i64;
                    let record: String = c.query_row(
                        "UPDATE tasks SET lease_owner = ?2, lease_until = ?3 WHERE id = ?1 RETURNING record",
                        params![id, owner, until],
                        read_record,
                    )?;
                    claimed.push((record, previous));
                }
                Ok(claimed)
            })
            .await?;
        Ok((rows.into_iter())
            .filter_map(|(text, previous_owner)| {
                Some(Claimed { record: readable(decode(&self.store, &text))?, previous_owner })
            })
            .collect())
    }

    async fn renew(
        &self,
        owner: &str,
        ids: &[String],
        lease: Duration,
    ) -> Result<Vec<String>, JournalError> {
        let (owner, ids) = (owner.to_string(), encode(&ids));
        self.run(move |c| {
            let until = (now_ms() + lease.as_millis() as u64) as i64;
            let mut statement = c.prepare_cached(
                "UPDATE tasks SET lease_until = ?3
                 WHERE lease_owner = ?1 AND id IN (SELECT value FROM json_each(?2)) RETURNING id",
            )?;
            let rows = statement.query_map(params![owner, ids, until], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    async fn purge(&self, before_ms: u64) -> Result<u64, JournalError> {
        let states = encode(&final_states());
        self.run(move |c| {
            let old = "SELECT id FROM tasks WHERE updated_ms < ?1
                       AND (state IN (SELECT value FROM json_each(?2)) OR kind = 'chat')";
            c.execute(
                &format!("DELETE FROM task_events WHERE task_id IN ({old})"),
                params![before_ms as i64, states],
            )?;
            let removed = c.execute(
                "DELETE FROM tasks WHERE updated_ms < ?1
                   AND (state IN (SELECT value FROM json_each(?2)) OR kind = 'chat')",
                params![before_ms as i64, states],
            )?;
            Ok(removed as u64)
        })
        .await
    }

    async fn counts(&self) -> Result<Vec<(TaskState, u64)>, JournalError> {
        let rows = self
            .run(|c| {
                let mut statement = c.prepare_cached(
                    "SELECT state, COUNT(*) FROM tasks WHERE kind = 'task' GROUP BY state",
                )?;
                let rows = statement
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(state, n)| Some((TaskState::parse(&state)?, n as u64)))
            .collect())
    }
}
