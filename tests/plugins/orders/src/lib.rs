//! The seed's order (pre-check, lock stock, pay, issue coupon) as one tool that acts and
//! one that undoes, every effect a file in the granted `/data`, so the tasks tests can see
//! what ran, how often, in which order and under which idempotency key.
//!
//! `/data/log` gets one line per event: `start STAGE KEY`, `done STAGE KEY`,
//! `fail STAGE KEY`, `undo STAGE KEY`. A file `/data/fail-STAGE` makes the stage fail
//! (`/data/fail-undo-STAGE` its undo), and `wait_for` makes it wait for a file.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use autoglm_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Act {
    /// The stage's name, as written in the log.
    stage: String,
    /// A file of /data to wait for before finishing (another stage's `at-STAGE` marker,
    /// written when it starts, or a file the test creates).
    #[serde(default)]
    wait_for: Option<String>,
    /// Anything the stage was given from an earlier one, echoed back.
    #[serde(default)]
    given: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Undo {
    /// The stage to undo.
    stage: String,
    /// The reservation the stage returned.
    #[serde(default)]
    id: Option<String>,
}

#[derive(Serialize, JsonSchema)]
struct Done {
    stage: String,
    key: String,
    /// A reservation id later stages and the undo can refer to.
    id: String,
    given: Option<String>,
}

fn record(line: &str) -> Result<(), ToolError> {
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open("/data/log")
        .map_err(|e| ToolError::failed(format!("cannot open /data/log: {e}")))?;
    writeln!(log, "{line}").map_err(|e| ToolError::failed(format!("cannot write /data/log: {e}")))
}

fn act(args: Act) -> Result<Done, ToolError> {
    let key = context().idempotency_key;
    let stage = args.stage;
    record(&format!("start {stage} {key}"))?;
    let _ = fs::write(format!("/data/at-{stage}"), &key);
    if Path::new(&format!("/data/fail-{stage}")).exists() {
        record(&format!("fail {stage} {key}"))?;
        return Err(ToolError::failed(format!("stage {stage} fails: /data/fail-{stage} exists")));
    }
    if let Some(file) = &args.wait_for {
        let path = format!("/data/{file}");
        while !Path::new(&path).exists() {
            if context().deadline_ms < 200 {
                record(&format!("fail {stage} {key}"))?;
                return Err(ToolError::failed(format!("stage {stage} gave up waiting for {path}")));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    fs::write(format!("/data/done-{stage}"), &key)
        .map_err(|e| ToolError::failed(format!("cannot mark {stage} done: {e}")))?;
    record(&format!("done {stage} {key}"))?;
    let id = format!("{stage}-{}", &key[key.len().saturating_sub(8)..]);
    Ok(Done { stage, key, id, given: args.given })
}

fn undo(args: Undo) -> Result<String, ToolError> {
    let key = context().idempotency_key;
    let stage = args.stage;
    if Path::new(&format!("/data/fail-undo-{stage}")).exists() {
        record(&format!("fail-undo {stage} {key}"))?;
        return Err(ToolError::failed(format!(
            "undo of {stage} fails: /data/fail-undo-{stage} exists"
        )));
    }
    let _ = fs::remove_file(format!("/data/done-{stage}"));
    record(&format!("undo {stage} {key} {}", args.id.unwrap_or_default()))?;
    Ok(format!("{stage} undone"))
}

fn tools() -> Vec<Tool> {
    vec![
        Tool::new("act", "Do one stage of an order, leaving its mark in /data.", act)
            .directory("/data", Access::ReadWrite),
        Tool::new("undo", "Undo one stage of an order.", undo)
            .directory("/data", Access::ReadWrite),
    ]
}

export_plugin!(tools);
