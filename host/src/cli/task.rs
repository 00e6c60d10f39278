//! `autoglm task run|show|list`: tasks from the command line, journaled where the server
//! journals them, so a task the CLI started and the server's tasks are one list.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use serde_json::{Map, Value, json};

use autoglm_host::app::{Host, Settings};
use autoglm_host::invoke::Allowlist;
use autoglm_host::tasks::record::{TaskRecord, TaskState};
use autoglm_host::tasks::{Submission, Tasks};

/// Run the spec in `target` (a JSON or TOML file) or the template it names, wait until the
/// task settles and print it; the exit code is 0 only when it succeeded.
pub async fn run(
    settings: &Settings,
    target: &str,
    input: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let inputs: Map<String, Value> = match input {
        None => Map::new(),
        Some(text) => serde_json::from_str(text)
            .with_context(|| format!("--input is not a JSON object: {text}"))?,
    };
    let path = Path::new(target);
    let submission = match path.is_file() {
        true => Submission { spec: Some(read_spec(path)?), inputs, ..Default::default() },
        false => Submission { template: Some(target.to_string()), inputs, ..Default::default() },
    };
    let (host, errors) = Host::open(settings).await?;
    for error in errors {
        eprintln!("warning: {error}");
    }
    let tasks = open(settings, &host).await?;
    // Only the task submitted here: other runnable tasks of the journal are the servers'.
    tasks.keep_leases();
    let operator = Allowlist::operator();
    let record = tasks.submit(&operator, submission).await?;
    eprintln!("task {} submitted to {}", record.id, tasks.store());
    let record = tasks.settled(&operator, &record.id).await?;
    show_record(&record)?;
    Ok(match record.state {
        TaskState::Succeeded => ExitCode::SUCCESS,
        _ => ExitCode::from(4),
    })
}

/// Print task `id` with its stage timeline.
pub async fn show(settings: &Settings, id: &str) -> anyhow::Result<ExitCode> {
    let host = Host::open(settings).await?.0;
    let record = open(settings, &host).await?.get(&Allowlist::operator(), id).await?;
    show_record(&record)?;
    Ok(ExitCode::SUCCESS)
}

/// Print the newest tasks, one a line.
pub async fn list(
    settings: &Settings,
    state: Option<&str>,
    limit: usize,
) -> anyhow::Result<ExitCode> {
    let state = match state {
        None => None,
        Some(name) => Some(TaskState::parse(name).with_context(|| {
            let names: Vec<&str> = TaskState::ALL.iter().map(|s| s.as_str()).collect();
            format!("--state {name} is not one of {}", names.join(", "))
        })?),
    };
    let host = Host::open(settings).await?.0;
    let tasks = open(settings, &host).await?;
    let (page, _) = tasks.list(&Allowlist::operator(), state, limit, None).await?;
    for record in page {
        let done = record.stages.iter().filter(|s| s.result.is_some()).count();
        println!(
            "{}  {:<20} {:<12} {}/{} stages  {}",
            record.id,
            record.state.as_str(),
            record.name.as_deref().unwrap_or("-"),
            done,
            record.stages.len(),
            record.caller.caller(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn open(settings: &Settings, host: &Host) -> anyhow::Result<Arc<Tasks>> {
    Tasks::open(&settings.config, host.invoker.clone(), Tasks::stored_callers()).await
}

fn read_spec(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => {
            toml::from_str(&text).with_context(|| format!("{} is not TOML", path.display()))
        }
        _ => serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display())),
    }
}

fn show_record(record: &TaskRecord) -> anyhow::Result<()> {
    let stages: Vec<Value> = (record.stages.iter())
        .map(|s| {
            json!({
                "stage": s.name,
                "state": s.state,
                "attempts": s.attempts,
                "result": s.result,
                "error": s.error,
                "compensation": s.compensation,
            })
        })
        .collect();
    let shown = json!({
        "id": record.id,
        "name": record.name,
        "state": record.state,
        "error": record.error,
        "stages": stages,
    });
    println!("{}", serde_json::to_string_pretty(&shown)?);
    Ok(())
}
