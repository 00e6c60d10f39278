//! Four-stage tasks (the seed's order: four calls of the `orders` test plugin, each writing
//! its file) through the journal, SQLite and Postgres, against the same four calls made
//! one after another without a task: tasks/s at 64 in flight, and the journal's overhead
//! per stage at p50 (a task's latency less the four plain calls', over four), both at 64 in
//! flight (queueing included) and one at a time (the journal's own cost).
//!
//! `just bench` records the section; by hand: `cargo bench -p autoglm-host --bench tasks`
//! after `just test-plugins postgres`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use autoglm_bench::{Section, Table, percentiles, ratio, significant, verdict};
use autoglm_host::app::Host;
use autoglm_host::config::Config;
use autoglm_host::invoke::Allowlist;
use autoglm_host::tasks::{Submission, Tasks};
use autoglm_test_support::host::{host, target_dir, test_plugins_dir};
use autoglm_test_support::postgres::Postgres;
use serde_json::json;

const IN_FLIGHT: usize = 64;
/// Tasks run one at a time for the journal's own overhead, queueing left out.
const SERIAL: usize = 100;
const STAGES: [&str; 4] = ["check", "lock", "pay", "coupon"];

fn main() -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(run())
}

fn config(effects: &std::path::Path, database: &str) -> Config {
    let mut config = Config::from_toml(&format!(
        r#"
[tasks]
database = "{database}"
concurrency = {IN_FLIGHT}
[[plugins.orders.dirs]]
host = "{}"
guest = "/data"
mode = "rw"
"#,
        effects.display()
    ))
    .expect("the bench config parses");
    config.cache_dir = Some(target_dir().join("test-component-cache"));
    config
}

fn order() -> serde_json::Value {
    let stages: Vec<_> = (STAGES.iter())
        .map(|s| json!({"name": s, "tool": "orders.act", "args": {"stage": s}}))
        .collect();
    json!({"stages": stages})
}

/// `n` chains of the four calls, `in_flight` at a time: chains/s and each chain's latency.
async fn plain(host: &Arc<Host>, n: usize, in_flight: usize) -> (f64, Vec<Duration>) {
    let started = Instant::now();
    let mut handles = Vec::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(in_flight));
    for _ in 0..n {
        let (host, gate) = (host.clone(), gate.clone());
        handles.push(tokio::spawn(async move {
            let _slot = gate.acquire().await.unwrap();
            let began = Instant::now();
            for stage in STAGES {
                host.call("orders.act", &json!({"stage": stage})).await.outcome.unwrap();
            }
            began.elapsed()
        }));
    }
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.push(handle.await.unwrap());
    }
    (n as f64 / started.elapsed().as_secs_f64(), latencies)
}

/// `n` four-stage tasks submitted at once (the runner keeps `IN_FLIGHT` running): tasks/s
/// and each task's latency, from its `started` commit to its last (the time queued for a
/// runner left out, as the plain chains' wait for a slot is).
async fn tasked(tasks: &Arc<Tasks>, n: usize) -> anyhow::Result<(f64, Vec<Duration>)> {
    let operator = Allowlist::operator();
    let started = Instant::now();
    // Each submission waits for its own commit: made one after another, the submitter
    // (one commit per task) rather than the runner would set the pace.
    let submitted: Vec<_> = (0..n)
        .map(|_| {
            let (tasks, operator) = (tasks.clone(), operator.clone());
            tokio::spawn(async move {
                let submission = Submission { spec: Some(order()), ..Default::default() };
                tasks.submit(&operator, submission).await.expect("submitted").id
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for id in submitted {
        latencies.push(latency(tasks, &id.await?).await);
    }
    Ok((n as f64 / started.elapsed().as_secs_f64(), latencies))
}

/// `n` four-stage tasks one at a time: each task's latency, as [`tasked`] measures it.
async fn tasked_serially(tasks: &Arc<Tasks>, n: usize) -> Vec<Duration> {
    let operator = Allowlist::operator();
    let mut latencies = Vec::new();
    for _ in 0..n {
        let submission = Submission { spec: Some(order()), ..Default::default() };
        let id = tasks.submit(&operator, submission).await.expect("submitted").id;
        latencies.push(latency(tasks, &id).await);
    }
    latencies
}

/// Task `id`'s time from its `started` commit to its last, once it has succeeded.
async fn latency(tasks: &Tasks, id: &str) -> Duration {
    let operator = Allowlist::operator();
    let record = tasks.settled(&operator, id).await.expect("settled");
    assert_eq!(record.state.as_str(), "succeeded", "{record:?}");
    let events = tasks.events(&operator, id, 1, 1).await.expect("events");
    let started = events.first().filter(|e| e.kind == "started").expect("a started event");
    Duration::from_millis(record.updated_ms - started.at_ms)
}

/// The journal's overhead per stage: the task's p50 less the plain chain's, over four, in ms.
fn per_stage(task: Vec<Duration>, plain: Vec<Duration>) -> f64 {
    let (task, _) = percentiles(task);
    let (plain, _) = percentiles(plain);
    task.saturating_sub(plain).as_secs_f64() * 1e3 / STAGES.len() as f64
}

async fn run() -> anyhow::Result<()> {
    let quick = autoglm_bench::quick();
    let n = if quick { 300 } else { 1500 };
    let plugins = test_plugins_dir(&["orders"]);
    let work = tempfile::tempdir()?;
    let effects = work.path().join("effects");
    std::fs::create_dir(&effects)?;
    let postgres = Postgres::start();
    let stores = [
        ("SQLite (WAL, full sync)", format!("sqlite:{}", work.path().join("tasks.db").display())),
        ("Postgres 15 (localhost)", postgres.url()),
    ];
    let mut table = Table::new(&[
        "journal",
        "four-stage tasks/s",
        "the four calls without a task /s",
        "ratio",
        "task p50",
        "four calls p50",
        "overhead per stage, p50",
        "overhead per stage, p50, one at a time",
    ]);
    let mut goals = Vec::new();
    for (label, database) in stores {
        let config = config(&effects, &database);
        let host = Arc::new(host(&config, plugins.path()).await);
        let tasks = Tasks::open(&config, host.invoker.clone(), Tasks::stored_callers()).await?;
        tasks.start();
        // Warm both paths: the instance pool, the journal's pages.
        tasked(&tasks, 20).await?;
        plain(&host, 20, IN_FLIGHT).await;
        let (task_rate, task_latencies) = tasked(&tasks, n).await?;
        let (plain_rate, plain_latencies) = plain(&host, n, IN_FLIGHT).await;
        let (task_p50, _) = percentiles(task_latencies.clone());
        let (plain_p50, _) = percentiles(plain_latencies.clone());
        let loaded = per_stage(task_latencies, plain_latencies);
        let serial = SERIAL.min(n);
        let alone =
            per_stage(tasked_serially(&tasks, serial).await, plain(&host, serial, 1).await.1);
        table.row(vec![
            label.into(),
            significant(task_rate),
            significant(plain_rate),
            ratio(task_rate, plain_rate),
            format!("{} ms", significant(task_p50.as_secs_f64() * 1e3)),
            format!("{} ms", significant(plain_p50.as_secs_f64() * 1e3)),
            format!("{} ms", significant(loaded)),
            format!("{} ms", significant(alone)),
        ]);
        if label.starts_with("SQLite") {
            goals.push((
                "SQLite: four-stage tasks/s",
                "≥ 300".to_string(),
                significant(task_rate),
                task_rate >= 300.0,
            ));
            goals.push((
                "SQLite: journal overhead per stage, p50 (one task at a time)",
                "< 1 ms".to_string(),
                format!("{} ms", significant(alone)),
                alone < 1.0,
            ));
        }
    }
    println!("four-stage tasks ({n} per journal, {IN_FLIGHT} in flight)\n{}", table.text());
    let mut section = Section::new(
        "tasks",
        "Multi-stage tasks: the journal's cost",
        &format!(
            "{n} four-stage tasks (the seed's order: four calls of the `orders` test plugin, \
             each appending to a file in its granted directory), submitted at once and run \
             {IN_FLIGHT} at a time by one replica, every transition committed before it is \
             acted on (five commits a task: a stage's success shares the next stage's start). Baseline, measured in the same run: the same \
             four calls one after another without a task, {IN_FLIGHT} chains at a time. A \
             task's latency runs from its `started` commit to its last (ms resolution); the overhead per stage \
             is the task's p50 less the four calls' p50, over four: at {IN_FLIGHT} in flight it \
             includes waiting for the two cores, and {SERIAL} tasks one at a time against {SERIAL} \
             chains one at a time give the journal's own cost. Postgres runs on this \
             machine with its default settings (synchronous commit)."
        ),
    );
    section.tables.push(table);
    let mut goal_table = Table::new(&["goal", "target", "measured", "met"]);
    for (goal, target, measured, met) in goals {
        goal_table.row(vec![goal.into(), target, measured, verdict(met)]);
    }
    section.tables.push(goal_table);
    section.record()
}
