//! Tool-calling quality of a model (the seed's evaluation metrics): for each case of a JSON
//! lines file, offer the loaded tools, let the engine answer, and compare the call it made
//! with the expected one. Cases run in batches through [`Engine::step`].

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use autoglm_engine::template::python_json;
use autoglm_engine::{
    ChatMessage, Engine, Reply, Role, SamplingParams, ToolCall, ToolDef, parse_reply,
};

/// One evaluation case.
#[derive(Debug, Clone, Deserialize)]
pub struct Case {
    /// The conversation so far (usually one user message).
    pub messages: Vec<ChatMessage>,
    /// The call the model should make next, or null when it should answer without a tool.
    pub expected: Option<ExpectedCall>,
    /// The request's language (`en`, `zh`), for scores per language.
    #[serde(default)]
    pub language: Option<String>,
    /// Whether the expected tool is one the model was never trained on.
    #[serde(default)]
    pub unseen: bool,
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
    /// Cases expecting a call where the model's call, made for real, returned the same
    /// successful result as the expected call (`7*12+3` for `12*7+3`); where the expected
    /// call fails, its arguments must be the same instead.
    pub equivalent_call_accuracy: f64,
    /// Of the calls that ran, those after whose result the model's answer states the
    /// result's values (and no number the result and the request lack), or, after an
    /// error, says that it failed.
    pub faithful_answer_rate: f64,
    /// The expected tool chosen, over the cases whose tool the model never trained on.
    pub unseen_tool_selection: Option<f64>,
    /// Selection and equivalent calls per language.
    pub per_language: BTreeMap<String, LanguageScores>,
    /// Median time of one request answered end to end (the call, the tool, the answer),
    /// run alone with the prefix cache warm, over the first cases that expect a call
    /// ([`end_to_end`]; None where not measured).
    pub end_to_end_p50_ms: Option<f64>,
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

/// Scores of the cases in one language.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LanguageScores {
    /// Cases.
    pub cases: usize,
    /// Tool selection accuracy.
    pub tool_selection_accuracy: f64,
    /// Equivalent call accuracy.
    pub equivalent_call_accuracy: f64,
}

/// Runs a tool for real: its result, or the error object the model would be shown.
pub type CallTool<'a> = &'a (dyn Fn(&str, &Value) -> Result<Value, Value> + Sync);

/// Cases timed end to end, one at a time.
const TIMED_CASES: usize = 12;

/// What the model did with one case.
struct Outcome {
    /// Canonical id of the tool it called (or tried to), None for a plain answer.
    tool: Option<String>,
    arguments: Option<Value>,
    valid_json: Option<bool>,
    raw: String,
    latency: Duration,
    tokens: usize,
    /// Whether the call equals the expected one, by its arguments or its real result.
    equivalent: bool,
    /// Whether the answer to the call's result was faithful, when the call ran.
    faithful: Option<bool>,
    /// The answer, where it was not faithful (for the misses).
    answer: Option<String>,
}

/// Run `cases` with `tools` offered (canonical id and definition), `batch` at a time; each
/// call the model makes runs for real through `call`, and the model answers its result.
pub fn evaluate(
    engine: &Engine,
    tools: &[(String, ToolDef)],
    cases: &[Case],
    params: &SamplingParams,
    batch: usize,
    call: CallTool,
    mut progress: impl FnMut(usize),
) -> anyhow::Result<Report> {
    let defs: Vec<ToolDef> = tools.iter().map(|(_, d)| d.clone()).collect();
    let started = Instant::now();
    let conversations: Vec<Vec<ChatMessage>> = cases.iter().map(|c| c.messages.clone()).collect();
    let mut outcomes = Vec::with_capacity(cases.len());
    for chunk in conversations.chunks(batch.max(1)) {
        outcomes.extend(turns(engine, tools, &defs, chunk, params)?);
        progress(chunk.len());
    }
    let wall = started.elapsed();

    // The calls, for real, and the expected ones where they differ.
    let mut answered = Vec::new();
    for (i, (case, outcome)) in cases.iter().zip(&mut outcomes).enumerate() {
        let (Some(tool), Some(arguments)) = (&outcome.tool, &outcome.arguments) else { continue };
        if !tools.iter().any(|(id, _)| id == tool) {
            continue;
        }
        let result = call(tool, arguments);
        if let Some(expected) = case.expected.as_ref().filter(|e| &e.name == tool) {
            outcome.equivalent = same_json(arguments, &expected.arguments)
                || match (&result, call(&expected.name, &expected.arguments)) {
                    (Ok(got), Ok(wanted)) => same_json(got, &wanted),
                    _ => false,
                };
        }
        let messages = with_result(&case.messages, tools, tool, arguments, &result);
        answered.push((i, messages, result));
    }
    // The answers to the results.
    for chunk in answered.chunks(batch.max(1)) {
        let conversations: Vec<Vec<ChatMessage>> =
            chunk.iter().map(|(_, m, _)| m.clone()).collect();
        let replies = turns(engine, tools, &defs, &conversations, params)?;
        for ((i, _, result), reply) in chunk.iter().zip(replies) {
            let request: String = cases[*i].messages.iter().map(|m| m.content.as_str()).collect();
            let faithful = reply.tool.is_none() && faithful(&reply.raw, result, &request);
            outcomes[*i].faithful = Some(faithful);
            if !faithful {
                outcomes[*i].answer = Some(reply.raw);
            }
        }
    }
    Ok(score(cases, &outcomes, wall))
}

/// One model turn for each of `conversations`, decoded together.
fn turns(
    engine: &Engine,
    tools: &[(String, ToolDef)],
    defs: &[ToolDef],
    conversations: &[Vec<ChatMessage>],
    params: &SamplingParams,
) -> anyhow::Result<Vec<Outcome>> {
    let names: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
    let id_of = |name: &str| tools.iter().find(|(_, d)| d.name == name).map(|(id, _)| id.clone());
    let chunk_start = Instant::now();
    let mut seqs = conversations
        .iter()
        .map(|messages| engine.start_chat(messages, defs, params))
        .collect::<Result<Vec<_>, _>>()?;
    let mut done: Vec<Option<Duration>> = vec![None; conversations.len()];
    while seqs.iter().any(|s| s.finish_reason().is_none()) {
        let mut refs: Vec<&mut _> = seqs.iter_mut().collect();
        engine.step(&mut refs)?;
        for (i, seq) in seqs.iter().enumerate() {
            if seq.finish_reason().is_some() && done[i].is_none() {
                done[i] = Some(chunk_start.elapsed());
            }
        }
    }
    let mut out = Vec::with_capacity(seqs.len());
    for (seq, latency) in seqs.iter().zip(done) {
        let raw = engine.tokenizer().decode(seq.generated())?;
        let (tool, arguments, valid_json) = match parse_reply(&raw, &names) {
            Reply::Text(_) => (None, None, None),
            Reply::Call(call) => {
                (id_of(&call.name), Some(Value::Object(call.arguments)), Some(true))
            }
            Reply::InvalidCall { raw: text, .. } => {
                let first = text.lines().next().unwrap_or_default().trim().to_string();
                (Some(id_of(&first).unwrap_or(first)), None, Some(false))
            }
        };
        out.push(Outcome {
            tool,
            arguments,
            valid_json,
            raw,
            latency: latency.unwrap_or_default(),
            tokens: seq.generated().len(),
            equivalent: false,
            faithful: None,
            answer: None,
        });
    }
    Ok(out)
}

/// Median milliseconds to answer a request end to end, alone: the first turn, the call,
/// the answer; over the first cases that expect a call (weather questions where the cases
/// have them), after [`evaluate`] has warmed the prefix cache.
pub fn end_to_end(
    engine: &Engine,
    tools: &[(String, ToolDef)],
    cases: &[Case],
    params: &SamplingParams,
    call: CallTool,
) -> anyhow::Result<f64> {
    let defs: Vec<ToolDef> = tools.iter().map(|(_, d)| d.clone()).collect();
    let defs = defs.as_slice();
    let calling: Vec<&Case> = cases.iter().filter(|c| c.expected.is_some()).collect();
    let weather: Vec<&Case> = calling
        .iter()
        .copied()
        .filter(|c| c.expected.as_ref().is_some_and(|e| e.name.ends_with("get_weather")))
        .collect();
    let timed = if weather.is_empty() { calling } else { weather };
    let mut times = Vec::new();
    for case in timed.into_iter().take(TIMED_CASES) {
        let started = Instant::now();
        let first = turns(engine, tools, defs, std::slice::from_ref(&case.messages), params)?;
        let first = &first[0];
        if let (Some(tool), Some(arguments)) = (&first.tool, &first.arguments)
            && tools.iter().any(|(id, _)| id == tool)
        {
            let result = call(tool, arguments);
            let messages = with_result(&case.messages, tools, tool, arguments, &result);
            turns(engine, tools, defs, &[messages], params)?;
        }
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times.get(times.len() / 2).copied().unwrap_or(0.0))
}

/// `messages` continued with the model's call of `tool` (a canonical id among `tools`) and
/// its result, as the agent shows them.
fn with_result(
    messages: &[ChatMessage],
    tools: &[(String, ToolDef)],
    tool: &str,
    arguments: &Value,
    result: &Result<Value, Value>,
) -> Vec<ChatMessage> {
    let name = tools.iter().find(|(id, _)| id == tool).map(|(_, d)| d.name.clone());
    let call = ToolCall {
        name: name.unwrap_or_else(|| tool.to_string()),
        arguments: arguments.as_object().cloned().unwrap_or_default(),
    };
    let observation = match result {
        Ok(value) | Err(value) => python_json(value, None),
    };
    let mut messages = messages.to_vec();
    messages.push(ChatMessage::tool_call(call));
    messages.push(ChatMessage::new(Role::Observation, observation));
    messages
}

/// Whether `answer`, given after `result`, states it: it contains one of the result's
/// values and no number that neither the result nor `request` holds; after an error, it
/// says that the call failed.
fn faithful(answer: &str, result: &Result<Value, Value>, request: &str) -> bool {
    let lower = answer.to_lowercase();
    let value = match result {
        Err(_) => {
            // Whole words: "note" is not "not".
            const FAILED: [&str; 9] = [
                "sorry", "error", "failed", "fails", "couldn't", "cannot", "can't", "not", "unable",
            ];
            const FAILED_ZH: [&str; 4] = ["抱歉", "错误", "失败", "无法"];
            let mut words = lower.split(|c: char| !c.is_alphanumeric() && c != '\'');
            return words.any(|w| FAILED.contains(&w))
                || FAILED_ZH.iter().any(|w| lower.contains(w));
        }
        Ok(value) => value,
    };
    let mut leaves = Vec::new();
    scalar_leaves(value, &mut leaves);
    let stated = leaves.iter().any(|leaf| match leaf {
        Value::String(s) => !s.is_empty() && lower.contains(&s.to_lowercase()),
        Value::Number(n) => {
            numbers(answer).iter().any(|x| n.as_f64().is_some_and(|y| close(*x, y)))
        }
        Value::Bool(b) => lower.contains(&b.to_string()),
        _ => false,
    });
    let mut known: Vec<f64> = leaves.iter().filter_map(Value::as_f64).collect();
    for leaf in &leaves {
        if let Value::String(s) = leaf {
            known.extend(numbers(s));
        }
    }
    known.extend(numbers(request));
    stated && numbers(answer).iter().all(|x| known.iter().any(|y| close(*x, *y)))
}

fn close(x: f64, y: f64) -> bool {
    (x - y).abs() <= 1e-6 * x.abs().max(y.abs()).max(1.0)
}

/// Strings, numbers and booleans anywhere in `value`.
fn scalar_leaves(value: &Value, out: &mut Vec<Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| scalar_leaves(v, out)),
        Value::Object(fields) => fields.values().for_each(|v| scalar_leaves(v, out)),
        Value::Null => {}
        scalar => out.push(scalar.clone()),
    }
}

/// The decimal numbers written in `text` (a leading minus sign included).
fn numbers(text: &str) -> Vec<f64> {
    let mut out = Vec::new();
    let mut current = String::new();
    let flush = |current: &mut String, out: &mut Vec<f64>| {
        let trimmed = current.trim_end_matches('.');
        if let Ok(x) = trimmed.parse::<f64>() {
            out.push(x);
        }
        current.clear();
    };
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let starts_negative = c == '-'
            && current.is_empty()
            && chars.get(i + 1).is_some_and(char::is_ascii_digit)
            && (i == 0 || !chars[i - 1].is_alphanumeric());
        if c.is_ascii_digit() || (c == '.' && !current.is_empty()) || starts_negative {
            current.push(c);
        } else if !current.is_empty() {
            flush(&mut current, &mut out);
        }
    }
    if !current.is_empty() {
        flush(&mut current, &mut out);
    }
    out
}

fn score(cases: &[Case], outcomes: &[Outcome], wall: Duration) -> Report {
    let n = cases.len().max(1) as f64;
    let fraction = |hits: usize, of: usize| if of == 0 { 1.0 } else { hits as f64 / of as f64 };
    let (mut selected, mut exact, mut equivalent, mut expecting) = (0, 0, 0, 0);
    let (mut attempts, mut valid) = (0, 0);
    let (mut none_true, mut none_predicted, mut none_expected) = (0, 0, 0);
    let (mut unseen, mut unseen_selected) = (0, 0);
    let mut per_tool: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    // Per language: cases, selected, expecting a call, equivalent calls.
    let mut languages: BTreeMap<String, [usize; 4]> = BTreeMap::new();
    let mut misses = Vec::new();
    for (case, outcome) in cases.iter().zip(outcomes) {
        let expected_tool = case.expected.as_ref().map(|e| e.name.clone());
        let right_tool = outcome.tool == expected_tool;
        selected += usize::from(right_tool);
        if case.unseen {
            unseen += 1;
            unseen_selected += usize::from(right_tool);
        }
        if let Some(ok) = outcome.valid_json {
            attempts += 1;
            valid += usize::from(ok);
        }
        let entry =
            per_tool.entry(expected_tool.clone().unwrap_or_else(|| "none".into())).or_default();
        entry.1 += 1;
        let language = languages.entry(case.language.clone().unwrap_or_else(|| "any".into()));
        let language = language.or_default();
        language[0] += 1;
        language[1] += usize::from(right_tool);
        let hit = match &case.expected {
            Some(expected) => {
                expecting += 1;
                language[2] += 1;
                let same = right_tool
                    && outcome
                        .arguments
                        .as_ref()
                        .is_some_and(|a| same_json(a, &expected.arguments));
                exact += usize::from(same);
                let equal = right_tool && outcome.equivalent;
                equivalent += usize::from(equal);
                language[3] += usize::from(equal);
                equal
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
        let unfaithful = outcome.faithful == Some(false);
        if (!hit || unfaithful) && misses.len() < 40 {
            let request = case.messages.last().map(|m| m.content.clone()).unwrap_or_default();
            let expected = case
                .expected
                .as_ref()
                .map(|e| serde_json::json!({"name": e.name, "arguments": e.arguments}));
            misses.push(serde_json::json!({
                "request": request,
                "expected": expected,
                "got": outcome.raw,
                "unfaithful_answer": outcome.answer,
            }));
        }
    }
    let judged: Vec<bool> = outcomes.iter().filter_map(|o| o.faithful).collect();
    let tokens: usize = outcomes.iter().map(|o| o.tokens).sum();
    Report {
        tool_selection_accuracy: selected as f64 / n,
        exact_call_accuracy: fraction(exact, expecting),
        equivalent_call_accuracy: fraction(equivalent, expecting),
        faithful_answer_rate: fraction(judged.iter().filter(|f| **f).count(), judged.len()),
        unseen_tool_selection: (unseen > 0).then(|| fraction(unseen_selected, unseen)),
        per_language: languages
            .into_iter()
            .map(|(language, [cases, selected, expecting, equal])| {
                let scores = LanguageScores {
                    cases,
                    tool_selection_accuracy: fraction(selected, cases),
                    equivalent_call_accuracy: fraction(equal, expecting),
                };
                (language, scores)
            })
            .collect(),
        end_to_end_p50_ms: None,
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
        let mut rows = vec![
            ("tool_selection_accuracy", self.tool_selection_accuracy),
            ("exact_call_accuracy", self.exact_call_accuracy),
            ("equivalent_call_accuracy", self.equivalent_call_accuracy),
            ("valid_json_rate", self.valid_json_rate),
            ("no_tool_precision", self.no_tool_precision),
            ("no_tool_recall", self.no_tool_recall),
            ("faithful_answer_rate", self.faithful_answer_rate),
        ];
        if let Some(unseen) = self.unseen_tool_selection {
            rows.push(("unseen_tool_selection", unseen));
        }
        for (name, value) in rows {
            out.push_str(&format!("{name:<26} {:>6.1}%\n", value * 100.0));
        }
        if let Some(ms) = self.end_to_end_p50_ms {
            out.push_str(&format!("{:<26} {ms:>7.1}\n", "end_to_end_p50_ms"));
        }
        out.push_str(&format!("{:<26} {:>7.1}\n", "mean_latency_ms", self.mean_latency_ms));
        out.push_str(&format!("{:<26} {:>7.1}\n", "tokens_per_second", self.tokens_per_second));
        out.push_str("\nper language (cases, selection, equivalent calls):\n");
        for (language, scores) in &self.per_language {
            out.push_str(&format!(
                "  {language:<22} {:>4}  {:>5.1}%  {:>5.1}%\n",
                scores.cases,
                scores.tool_selection_accuracy * 100.0,
                scores.equivalent_call_accuracy * 100.0
            ));
        }
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
    fn a_faithful_answer_states_the_result_and_invents_no_number() {
        let weather = Ok(json!({"city": "Paris", "temperature": 4, "condition": "foggy"}));
        let request = "What's the weather in Paris?";
        assert!(faithful("It is 4°C and foggy in Paris.", &weather, request));
        assert!(!faithful("It is 14°C and foggy in Paris.", &weather, request), "14 is made up");
        assert!(!faithful("I hope you enjoy your trip!", &weather, request), "states nothing");
        let sum = Ok(json!(87.0));
        assert!(faithful("12*7+3 = 87.", &sum, "Calculate 12*7+3"));
        assert!(!faithful("12*7+3 = 88.", &sum, "Calculate 12*7+3"));
        let error = Err(json!({"error": {"kind": "tool_error", "message": "no such note"}}));
        assert!(faithful("Sorry, the read tool failed (tool_error).", &error, "Read x"));
        assert!(!faithful("Your note says hello.", &error, "Read x"));
        assert_eq!(numbers("-3 and 4.5, x-2 at 6."), vec![-3.0, 4.5, 2.0, 6.0]);
    }

    #[test]
    fn numbers_compare_by_value_and_objects_by_content() {
        assert!(same_json(&json!({"value": 5, "to": "km"}), &json!({"to": "km", "value": 5.0})));
        assert!(!same_json(&json!({"value": 5}), &json!({"value": 5, "to": "km"})));
        assert!(!same_json(&json!({"location": "Paris"}), &json!({"location": "paris"})));
    }
}
