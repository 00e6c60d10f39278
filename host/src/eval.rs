//! Tool-calling quality of a model (the seed's evaluation metrics): for each case of a JSON
//! lines file, offer the loaded tools, let the engine answer, and compare the call it made
//! with the expected one. Cases run in batches through [`Engine::step`].

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use autoglm_engine::{ChatMessage, Engine, Reply, SamplingParams, ToolDef, parse_reply};

/// One evaluation case.
#[derive(Debug, Clone, Deserialize)]
pub struct Case {
    /// The conversation so far (usually one user message).
    pub messages: Vec<ChatMessage>,
    /// The call the model should make next, or null when it should answer without a tool.
    pub expected: Option<ExpectedCall>,
}

/// The call a case expects.
#[derive(Debug, Clone, Deserialize)]
pub struct ExpectedCall {
    /// Canonical tool id, `plugin.tool`.
    pub name: String,
    /// The arguments, compared as JSON values (5 equals 5.0).
    pub arguments: Value,
}

/// Read cases from a JSON lines file; a bad line is reported with its number.
pub fn load_cases(path: &Path) -> anyhow::Result<Vec<Case>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not an evaluation case", path.display(), n + 1))
        })
        .collect()
}

/// The scores of a model on a set of cases; fractions are in 0..1.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Cases where the model chose the expected tool, or no tool when none was expected.
    pub tool_selection_accuracy: f64,
    /// Cases expecting a call where the model made exactly that call (name and arguments).
    pub exact_call_accuracy: f64,
    /// Calls whose arguments were a valid JSON object (1 when the model made no call).
    pub valid_json_rate: f64,
    /// Of the cases answered without a tool, those that needed none.
    pub no_tool_precision: f64,
    /// Of the cases that needed no tool, those answered without one.
    pub no_tool_recall: f64,
    /// Mean time from a batch's start to a case's last token.
    pub mean_latency_ms: f64,
    /// Generated tokens per second of wall time.
    pub tokens_per_second: f64,
    /// Number of cases.
    pub cases: usize,
    /// Exact calls and cases per expected tool (`none` for no tool).
    pub per_tool: BTreeMap<String, (usize, usize)>,
    /// The first few cases the model got wrong: request, expected, got.
    pub misses: Vec<Value>,
}

/// What the model did with one case.
struct Outcome {
    /// Canonical id of the tool it called (or tried to), None for a plain answer.
    tool: Option<String>,
    arguments: Option<Value>,
    valid_json: Option<bool>,
    raw: String,
    latency: Duration,
    tokens: usize,
}

/// Run `cases` with `tools` offered (canonical id and definition), `batch` at a time.
pub fn evaluate(
    engine: &Engine,
    tools: &[(String, ToolDef)],
    cases: &[Case],
    params: &SamplingParams,
    batch: usize,
    mut progress: impl FnMut(usize),
) -> anyhow::Result<Report> {
    let defs: Vec<ToolDef> = tools.iter().map(|(_, d)| d.clone()).collect();
    let names: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
    let id_of = |name: &str| tools.iter().find(|(_, d)| d.name == name).map(|(id, _)| id.clone());
    let started = Instant::now();
    let mut outcomes = Vec::with_capacity(cases.len());
    for chunk in cases.chunks(batch.max(1)) {
        let chunk_start = Instant::now();
        let mut seqs = chunk
            .iter()
            .map(|case| engine.start_chat(&case.messages, &defs, params))
            .collect::<Result<Vec<_>, _>>()?;
        let mut done: Vec<Option<Duration>> = vec![None; chunk.len()];
        while seqs.iter().any(|s| s.finish_reason().is_none()) {
            let mut refs: Vec<&mut _> = seqs.iter_mut().collect();
            engine.step(&mut refs)?;
            for (i, seq) in seqs.iter().enumerate() {
                if seq.finish_reason().is_some() && done[i].is_none() {
                    done[i] = Some(chunk_start.elapsed());
                }
            }
        }
        for (seq, latency) in seqs.iter().zip(done) {
            let raw = engine.tokenizer().decode(seq.generated())?;
            let outcome = match parse_reply(&raw, &names) {
                Reply::Text(_) => Outcome {
                    tool: None,
                    arguments: None,
                    valid_json: None,
                    raw,
                    latency: Duration::ZERO,
                    tokens: 0,
                },
                Reply::Call(call) => Outcome {
                    tool: id_of(&call.name),
                    arguments: Some(Value::Object(call.arguments)),
                    valid_json: Some(true),
                    raw,
                    latency: Duration::ZERO,
                    tokens: 0,
                },
                Reply::InvalidCall { raw: text, .. } => {
                    let first = text.lines().next().unwrap_or_default().trim().to_string();
                    let tool = Some(id_of(&first).unwrap_or(first));
                    Outcome {
                        tool,
                        arguments: None,
                        valid_json: Some(false),
                        raw,
                        latency: Duration::ZERO,
                        tokens: 0,
                    }
                }
            };
            outcomes.push(Outcome {
                latency: latency.unwrap_or_default(),
                tokens: seq.generated().len(),
                ..outcome
            });
        }
        progress(chunk.len());
    }
    Ok(score(cases, &outcomes, started.elapsed()))
}

fn score(cases: &[Case], outcomes: &[Outcome], wall: Duration) -> Report {
    let n = cases.len().max(1) as f64;
    let fraction = |hits: usize, of: usize| if of == 0 { 1.0 } else { hits as f64 / of as f64 };
    let (mut selected, mut exact, mut expecting) = (0, 0, 0);
    let (mut attempts, mut valid) = (0, 0);
    let (mut none_true, mut none_predicted, mut none_expected) = (0, 0, 0);
    let mut per_tool: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut misses = Vec::new();
    for (case, outcome) in cases.iter().zip(outcomes) {
        let expected_tool = case.expected.as_ref().map(|e| e.name.clone());
        let right_tool = outcome.tool == expected_tool;
        selected += usize::from(right_tool);
        if let Some(ok) = outcome.valid_json {
            attempts += 1;
            valid += usize::from(ok);
        }
        let entry =
            per_tool.entry(expected_tool.clone().unwrap_or_else(|| "none".into())).or_default();
        entry.1 += 1;
        let hit = match &case.expected {
            Some(expected) => {
                expecting += 1;
                let same = right_tool
                    && outcome
                        .arguments
                        .as_ref()
                        .is_some_and(|a| same_json(a, &expected.arguments));
                exact += usize::from(same);
                same
            }
            None => {
                none_expected += 1;
                right_tool
            }
        };
        entry.0 += usize::from(hit);
        if outcome.tool.is_none() {
            none_predicted += 1;
            none_true += usize::from(case.expected.is_none());
        }
        if !hit && misses.len() < 20 {
            let request = case.messages.last().map(|m| m.content.clone()).unwrap_or_default();
            let expected = case
                .expected
                .as_ref()
                .map(|e| serde_json::json!({"name": e.name, "arguments": e.arguments}));
            misses.push(
                serde_json::json!({"request": request, "expected": expected, "got": outcome.raw}),
            );
        }
    }
    let tokens: usize = outcomes.iter().map(|o| o.tokens).sum();
    Report {
        tool_selection_accuracy: selected as f64 / n,
        exact_call_accuracy: fraction(exact, expecting),
        valid_json_rate: fraction(valid, attempts),
        no_tool_precision: fraction(none_true, none_predicted),
        no_tool_recall: fraction(none_true, none_expected),
        mean_latency_ms: outcomes.iter().map(|o| o.latency.as_secs_f64() * 1e3).sum::<f64>() / n,
        tokens_per_second: tokens as f64 / wall.as_secs_f64().max(1e-9),
        cases: cases.len(),
        per_tool,
        misses,
    }
}

/// JSON equality with numbers compared by value (a model may write 5.0 for 5).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_json(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

impl Report {
    /// The report as a table for a terminal.
    pub fn table(&self) -> String {
        let mut out = format!("{} cases\n", self.cases);
        for (name, value) in [
            ("tool_selection_accuracy", self.tool_selection_accuracy),
            ("exact_call_accuracy", self.exact_call_accuracy),
            ("valid_json_rate", self.valid_json_rate),
            ("no_tool_precision", self.no_tool_precision),
            ("no_tool_recall", self.no_tool_recall),
        ] {
            out.push_str(&format!("{name:<26} {:>6.1}%\n", value * 100.0));
        }
        out.push_str(&format!("{:<26} {:>7.1}\n", "mean_latency_ms", self.mean_latency_ms));
        out.push_str(&format!("{:<26} {:>7.1}\n", "tokens_per_second", self.tokens_per_second));
        out.push_str("\nper expected tool (right / cases):\n");
        for (tool, (hits, total)) in &self.per_tool {
            out.push_str(&format!("  {tool:<22} {hits:>4} / {total:<4}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_compare_by_value_and_objects_by_content() {
        assert!(same_json(&json!({"value": 5, "to": "km"}), &json!({"to": "km", "value": 5.0})));
        assert!(!same_json(&json!({"value": 5}), &json!({"value": 5, "to": "km"})));
        assert!(!same_json(&json!({"location": "Paris"}), &json!({"location": "paris"})));
    }
}
