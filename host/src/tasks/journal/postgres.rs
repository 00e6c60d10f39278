//! The shared journal: Postgres, for several replicas. Each write is one statement (a
//! data-modifying CTE), so it commits atomically without a transaction held across awaits;
//! leases are claimed with `FOR UPDATE SKIP LOCKED` and timed by the database's clock, so
//! replicas whose clocks disagree still agree on when a lease expired.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

use super::{
    Claimed, Fence, Journal, JournalError, ListQuery, decode, encode, final_states, readable,
    runnable_states,
};
use crate::tasks::record::{Event, TaskRecord, TaskState};

/// Connections per replica: writes of different tasks commit in parallel on them.
const CONNECTIONS: usize = 4;

/// Longest one statement may take before its connection is given up.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The database's clock in ms since the epoch, as SQL.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS autoglm_tasks (
        id text PRIMARY KEY,
        kind text NOT NULL,
        name text,
        caller text NOT NULL,
        state text NOT NULL,
        created_ms bigint NOT NULL,
        updated_ms bigint NOT NULL,
        lease_owner text,
        lease_until bigint,
        record text NOT NULL
    );
    CREATE INDEX IF NOT EXISTS autoglm_tasks_by_state ON autoglm_tasks (kind, state, lease_until);
    CREATE INDEX IF NOT EXISTS autoglm_tasks_by_age ON autoglm_tasks (created_ms, id);
    CREATE TABLE IF NOT EXISTS autoglm_task_events (
        task_id text NOT NULL,
        seq bigint NOT NULL,
        at_ms bigint NOT NULL,
        event text NOT NULL,
        PRIMARY KEY (task_id, seq)
    );
";

/// The Postgres journal.
pub struct Postgres {
    url: String,
    store: String,
    clients: Vec<Mutex<Option<Client>>>,
    next: AtomicUsize,
}

/// `url` without its password, for messages.
pub fn redacted(url: &str) -> String {
    // A password may also sit in the query (`?password=`): the query is left out.
    let url = url.split('?').next().unwrap_or_default();
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    match rest.split_once('@') {
        Some((user, host)) => {
            let user = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}@{host}")
        }
        None => url.to_string(),
    }
}

impl Postgres {
    /// Connect to `url` and create the tables where missing.
    pub async fn connect(url: &str) -> Result<Self, JournalError> {
        let journal = Self {
            url: url.to_string(),
            store: redacted(url),
            clients: (0..CONNECTIONS).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        };
        let client = journal.open_client().await?;
        // Replicas starting together must not race to create the same tables.
        let schema = format!(
            "SELECT pg_advisory_lock(7262011); {SCHEMA} SELECT pg_advisory_unlock(7262011);"
        );
        client
            .batch_execute(&schema)
            .await
            .map_err(|e| journal.fail("cannot create its tables", &e))?;
        *journal.clients[0].lock().await = Some(client);
        Ok(journal)
    }

    async fn open_client(&self) -> Result<Client, JournalError> {
        let config: tokio_postgres::Config = self.url.parse().map_err(|e| JournalError {
            store: self.store.clone(),
            message: format!("is not a valid Postgres URL: {e}"),
        })?;
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(JournalError {
                store: self.store.clone(),
                message: "asks for TLS (sslmode=require), which this build does not speak yet; \
                          reach Postgres over a trusted network or a local socket"
                    .into(),
            });
        }
        let mut config = config;
        config.keepalives(true).keepalives_idle(Duration::from_secs(30));
        let connected = tokio::time::timeout(Duration::from_secs(10), config.connect(NoTls)).await;
        let (client, connection) = match connected {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(self.fail("cannot be reached", &e)),
            Err(_) => {
                return Err(JournalError {
                    store: self.store.clone(),
                    message: "cannot be reached: no answer within 10 s".into(),
                });
            }
        };
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(%error, "tasks journal connection ended");
            }
        });
        Ok(client)
    }

    fn fail(&self, what: &str, error: &tokio_postgres::Error) -> JournalError {
        let detail = match error.as_db_error() {
            Some(db) => db.message().to_string(),
            None => error.to_string(),
        };
        JournalError { store: self.store.clone(), message: format!("{what}: {detail}") }
    }

    /// Run `work` on the next connection, reconnecting it first when it closed.
    async fn with<T>(
        &self,
        work: impl AsyncFnOnce(&Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, JournalError> {
        self.with_raw(work).await?.map_err(|e| self.fail("failed", &e))
    }

    /// [`Postgres::with`] with Ok(None) for a write that lost its race (a unique key that
    /// another writer took first).
    async fn with_unique<T>(
        &self,
        work: impl AsyncFnOnce(&Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<Option<T>, JournalError> {
        match self.with_raw(work).await? {
            Ok(value) => Ok(Some(value)),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                Ok(None)
            }
            Err(e) => Err(self.fail("failed", &e)),
        }
    }

    /// `work` on the next connection, bounded by [`STATEMENT_TIMEOUT`]: a connection that
    /// stops answering (a half-open socket) is dropped rather than waited on.
    async fn with_raw<T>(
        &self,
        work: impl AsyncFnOnce(&Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<Result<T, tokio_postgres::Error>, JournalError> {
        let slot = &self.clients[self.next.fetch_add(1, Ordering::Relaxed) % CONNECTIONS];
        let mut held = slot.lock().await;
        if held.as_ref().is_none_or(Client::is_closed) {
            *held = Some(self.open_client().await?);
        }
        let client = held.as_ref().expect("connected above");
        match tokio::time::timeout(STATEMENT_TIMEOUT, work(client)).await {
            Ok(done) => Ok(done),
            Err(_) => {
                *held = None;
                Err(JournalError {
                    store: self.store.clone(),
                    message: format!(
                        "did not answer within {} s; the connection is dropped and opened again",
                        STATEMENT_TIMEOUT.as_secs()
                    ),
                })
            }
        }
    }

    fn records(&self, rows: &[tokio_postgres::Row]) -> Result<Vec<TaskRecord>, JournalError> {
        rows.iter().map(|r| decode(&self.store, r.get::<_, &str>(0))).collect()
    }
}

#[async_trait::async_trait]
impl Journal for Postgres {
    async fn create(
        &self,
        task: &TaskRecord,
        event: &Event,
        owner: Option<(&str, Duration)>,
    ) -> Result<bool, JournalError> {
        let (record, event_text, caller) = (encode(task), encode(event), encode(&task.caller));
        let lease_ms = owner.map(|(_, d)| d.as_millis() as i64);
        let owner = owner.map(|(o, _)| o.to_string());
        let sql = format!(
            "WITH t AS (
                 INSERT INTO autoglm_tasks (id, kind, name, caller, state, created_ms, updated_ms, lease_owner, lease_until, record)
                 VALUES ($1, $12, $2, $3, $4, $5, $5, $6, CASE WHEN $7::bigint IS NULL THEN NULL ELSE {NOW_MS} + $7::bigint END, $8)
                 RETURNING id)
             INSERT INTO autoglm_task_events (task_id, seq, at_ms, event) SELECT id, $9, $10, $11 FROM t"
        );
        let created = self.with_unique(async |c| {
            c.execute(
                &sql,
                &[
                    &task.id,
                    &task.name,
                    &caller,
                    &task.state.as_str(),
                    &(task.created_ms as i64),
                    &owner,
                    &lease_ms,
                    &record,
                    &(event.seq as i64),
                    &(event.at_ms as i64),
                    &event_text,
                    &task.kind.as_str(),
                ],
            )
            .await
        });
        Ok(created.await?.is_some())
    }

    async fn commit(
        &self,
        task: &TaskRecord,
        events: &[Event],
        fence: Fence<'_>,
    ) -> Result<bool, JournalError> {
        let record = encode(task);
        let seqs: Vec<i64> = events.iter().map(|e| e.seq as i64).collect();
        let ats: Vec<i64> = events.iter().map(|e| e.at_ms as i64).collect();
        let texts: Vec<String> = events.iter().map(encode).collect();
        let (owner, expected) = match fence {
            Fence::Lease(owner) => (Some(owner.to_string()), None),
            Fence::State(state) => (None, Some(state.as_str())),
        };
        let keep = task.state.is_runnable() && owner.is_some();
        let sql = "WITH t AS (
                 UPDATE autoglm_tasks SET state = $2, updated_ms = $3, record = $4,
                     lease_owner = CASE WHEN $5 THEN lease_owner END,
                     lease_until = CASE WHEN $5 THEN lease_until END
                 WHERE id = $1
                   AND ($6::text IS NULL OR lease_owner = $6)
                   AND ($7::text IS NULL OR (state = $7 AND lease_owner IS NULL))
                 RETURNING id)
             INSERT INTO autoglm_task_events (task_id, seq, at_ms, event)
                 SELECT t.id, e.seq, e.at_ms, e.event
                 FROM t, unnest($8::bigint[], $9::bigint[], $10::text[]) AS e(seq, at_ms, event)";
        let inserted = self
            .with_unique(async |c| {
                c.execute(
                    sql,
                    &[
                        &task.id,
                        &task.state.as_str(),
                        &(task.updated_ms as i64),
                        &record,
                        &keep,
                        &owner,
                        &expected,
                        &seqs,
                        &ats,
                        &texts,
                    ],
                )
                .await
            })
            .await?;
        // None: an event of that number is journaled already, another writer was first.
        Ok(inserted == Some(events.len() as u64))
    }

    async fn load(&self, id: &str) -> Result<Option<TaskRecord>, JournalError> {
        let rows = self
            .with(async |c| c.query("SELECT record FROM autoglm_tasks WHERE id = $1", &[&id]).await)
            .await?;
        Ok(self.records(&rows)?.pop())
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<TaskRecord>, JournalError> {
        let state = query.state.map(TaskState::as_str);
        let (before_ms, before_id) = match &query.before {
            Some(c) => (Some(c.created_ms as i64), Some(c.id.clone())),
            None => (None, None),
        };
        let rows = self
            .with(async |c| {
                c.query(
                    "SELECT record FROM autoglm_tasks
                     WHERE kind = 'task' AND ($1::text IS NULL OR state = $1)
                       AND ($2::text IS NULL OR (caller::jsonb ->> 'caller') = $2)
                       AND ($3::bigint IS NULL OR created_ms < $3 OR (created_ms = $3 AND id < $4))
                     ORDER BY created_ms DESC, id DESC LIMIT $5",
                    &[&state, &query.caller, &before_ms, &before_id, &(query.limit as i64)],
                )
                .await
            })
            .await?;
        self.records(&rows)
    }

    async fn events(&self, id: &str, from: u64, limit: usize) -> Result<Vec<Event>, JournalError> {
        let rows = self
            .with(async |c| {
                c.query(
                    "SELECT event FROM autoglm_task_events WHERE task_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
                    &[&id, &(from as i64), &(limit as i64)],
                )
                .await
            })
            .await?;
        rows.iter().map(|r| decode(&self.store, r.get::<_, &str>(0))).collect()
    }

    async fn claim(
        &self,
        owner: &str,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Claimed>, JournalError> {
        let states: Vec<&str> = runnable_states();
        let sql = format!(
            "WITH free AS (
                 SELECT id, lease_owner AS previous FROM autoglm_tasks
                 WHERE kind = 'task' AND state = ANY($1) AND (lease_until IS NULL OR lease_until < {NOW_MS})
                 ORDER BY created_ms LIMIT $2
                 FOR UPDATE SKIP LOCKED)
             UPDATE autoglm_tasks t SET lease_owner = $3, lease_until = {NOW_MS} + $4
             FROM free WHERE t.id = free.id
             RETURNING t.record, free.previous"
        );
        let rows = self
            .with(async |c| {
                c.query(&sql, &[&states, &(limit as i64), &owner, &(lease.as_millis() as i64)])
                    .await
            })
            .await?;
        Ok((rows.iter())
            .filter_map(|r| {
                let record = readable(decode(&self.store, r.get::<_, &str>(0)))?;
                Some(Claimed { record, previous_owner: r.get(1) })
            })
            .collect())
    }

    async fn renew(
        &self,
        owner: &str,
        ids: &[String],
        lease: Duration,
    ) -> Result<Vec<String>, JournalError> {
        let sql = format!(
            "UPDATE autoglm_tasks SET lease_until = {NOW_MS} + $3
             WHERE lease_owner = $1 AND id = ANY($2) RETURNING id"
        );
        let rows = self
            .with(async |c| c.query(&sql, &[&owner, &ids, &(lease.as_millis() as i64)]).await)
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn purge(&self, before_ms: u64) -> Result<u64, JournalError> {
        let states = final_states();
        self.with(async |c| {
            c.execute(
                "WITH gone AS (
                     DELETE FROM autoglm_tasks
                     WHERE updated_ms < $1 AND (state = ANY($2) OR kind = 'chat') RETURNING id),
                 events AS (
                     DELETE FROM autoglm_task_events WHERE task_id IN (SELECT id FROM gone))
                 SELECT 1 FROM gone",
                &[&(before_ms as i64), &states],
            )
            .await
        })
        .await
    }

    async fn counts(&self) -> Result<Vec<(TaskState, u64)>, JournalError> {
        let rows = self
            .with(async |c| {
                c.query(
                    "SELECT state, COUNT(*) FROM autoglm_tasks WHERE kind = 'task' GROUP BY state",
                    &[],
                )
                .await
            })
            .await?;
        Ok((rows.iter())
            .filter_map(|r| Some((TaskState::parse(r.get(0))?, r.get::<_, i64>(1) as u64)))
            .collect())
    }
}
