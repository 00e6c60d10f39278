//! A task spec: ordered stages (or groups of stages that run at once), each a tool call
//! whose arguments may use earlier results, with an optional compensation that undoes it.
//!
//! Specs come from untrusted clients, so everything that can be checked without running a
//! stage is checked here, each error naming the field: names, references (to an earlier
//! stage, never to a later one or the stage itself), retries, deadlines and sizes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest spec accepted, as JSON.
pub const MAX_SPEC_BYTES: usize = 256 * 1024;
/// Most stages in one task, group members included.
pub const MAX_STAGES: usize = 64;
/// Most retries of one stage or compensation.
pub const MAX_RETRIES: u32 = 100;
/// Longest backoff before a retry, and longest deadline of a stage.
pub const MAX_STAGE_MS: u64 = 3_600_000;
/// Longest deadline of a whole task: a day.
pub const MAX_TASK_MS: u64 = 86_400_000;

/// What a task does when a critical stage fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Undo the completed stages in reverse order (the default).
    #[default]
    Compensate,
    /// Stop and wait for an operator to resume, retry or abort.
    Pause,
    /// End `failed` without undoing anything. Non-critical stages are skipped under every
    /// policy; this one also leaves the completed stages as they are.
    Skip,
}

impl FailurePolicy {
    /// The policy's name in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Compensate => "compensate",
            Self::Pause => "pause",
            Self::Skip => "skip",
        }
    }
}

/// One tool call of a task: a stage's action or its compensation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Call {
    /// The tool, in any of the three name forms.
    pub tool: String,
    /// Its arguments; `{"$ref": "stage.result.path"}` anywhere stands for an earlier result,
    /// `{"$ref": "input.name"}` for one of the task's inputs.
    #[serde(default = "empty_object")]
    pub args: Value,
    /// Attempts after the first one fails.
    #[serde(default)]
    pub retries: u32,
    /// Wait before the first retry, doubled before each next one.
    #[serde(default = "default_backoff")]
    pub backoff_ms: u64,
    /// The longest one attempt may take (the plugin's own deadline still applies).
    #[serde(default)]
    pub deadline_ms: Option<u64>,
}

/// One stage: a named call, its compensation, and whether the task needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// Unique in the task: letters, digits, '_' and '-'.
    pub name: String,
    /// What the stage does.
    pub call: Call,
    /// The call that undoes it; it may use the stage's own result.
    pub compensate: Option<Call>,
    /// Whether the task fails when the stage does; a non-critical stage that fails is
    /// skipped and the task goes on.
    pub critical: bool,
}

/// A stage as written: the call's fields beside the stage's own (serde's `flatten` cannot
/// refuse unknown fields).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WrittenStage {
    name: String,
    tool: String,
    #[serde(default = "empty_object")]
    args: Value,
    #[serde(default)]
    retries: u32,
    #[serde(default = "default_backoff")]
    backoff_ms: u64,
    #[serde(default)]
    deadline_ms: Option<u64>,
    #[serde(default)]
    compensate: Option<Call>,
    #[serde(default = "yes")]
    critical: bool,
}

/// What runs at one point of the task: one stage, or a group whose stages run at once.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The stages, in the order the spec gives them.
    pub stages: Vec<Stage>,
    /// Whether the spec wrote them as a `group`.
    pub group: bool,
}

/// A checked task spec.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// The template's name, or the spec's own `name`.
    pub name: Option<String>,
    /// For people, and for MCP clients when the spec is a template.
    pub description: Option<String>,
    /// What a critical failure does.
    pub policy: FailurePolicy,
    /// The longest the whole task may take.
    pub deadline_ms: Option<u64>,
    /// The inputs a template takes: name -> JSON Schema.
    pub inputs: Map<String, Value>,
    /// What runs, in order.
    pub steps: Vec<Step>,
    /// The spec as written (validated), which the journal keeps.
    pub source: Value,
}

/// A spec that cannot run, with the field that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {message}")]
pub struct SpecError {
    /// Where in the spec: `stages[2].compensate.args.id`.
    pub field: String,
    /// What is wrong and what to change.
    pub message: String,
}

impl SpecError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// A reference inside arguments: to an input, or to a path in a stage's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ref {
    /// `input.NAME.path…`
    Input(Vec<String>),
    /// `STAGE.result.path…`
    Result {
        /// The stage.
        stage: String,
        /// The path inside its result.
        path: Vec<String>,
    },
}

impl Ref {
    /// The reference `value` holds, when it is `{"$ref": "…"}`.
    pub fn of(value: &Value) -> Option<Result<Ref, String>> {
        let object = value.as_object()?;
        let text = object.get("$ref")?;
        Some(match (object.len(), text.as_str()) {
            (1, Some(text)) => Ref::parse(text),
            _ => Err("a reference is an object with one key, `$ref`, whose value is a string \
                      such as \"lock.result.reservation_id\""
                .into()),
        })
    }

    fn parse(text: &str) -> Result<Ref, String> {
        let mut parts = text.split('.').map(str::to_string);
        let head = parts.next().unwrap_or_default();
        if head == "input" {
            let path: Vec<String> = parts.collect();
            return match path.first() {
                Some(name) if !name.is_empty() => Ok(Ref::Input(path)),
                _ => Err(format!("`{text}` names no input: write \"input.NAME\"")),
            };
        }
        match parts.next().as_deref() {
            Some("result") => Ok(Ref::Result { stage: head, path: parts.collect() }),
            _ => Err(format!(
                "`{text}` is not a reference: write \"STAGE.result\", \"STAGE.result.FIELD\" or \"input.NAME\""
            )),
        }
    }

    /// The value this reference names in `root` (an input map or a result), if there.
    pub fn lookup<'a>(root: &'a Value, path: &[String]) -> Option<&'a Value> {
        path.iter().try_fold(root, |value, part| match value {
            Value::Object(map) => map.get(part),
            Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
    }
}

impl TaskSpec {
    /// Check `value` as a spec. Tools are not resolved here: which exist is the caller's
    /// business (see `Tasks::submit`), and a template may be checked before plugins load.
    pub fn parse(value: &Value) -> Result<TaskSpec, SpecError> {
        let bytes = serde_json::to_vec(value).map(|b| b.len()).unwrap_or(usize::MAX);
        if bytes > MAX_SPEC_BYTES {
            return Err(SpecError::new(
                "spec",
                format!("the spec is {bytes} bytes; at most {MAX_SPEC_BYTES} are accepted"),
            ));
        }
        let object =
            value.as_object().ok_or_else(|| SpecError::new("spec", "must be an object"))?;
        for key in object.keys() {
            if !matches!(
                key.as_str(),
                "name" | "description" | "policy" | "deadline_ms" | "inputs" | "stages"
            ) {
                return Err(SpecError::new(
                    key.clone(),
                    "unknown field; a spec has name, description, policy, deadline_ms, inputs and stages",
                ));
            }
        }
        let name = optional_string(object, "name")?;
        if let Some(name) = &name {
            check_name("name", name)?;
        }
        let policy = match object.get("policy") {
            None => FailurePolicy::default(),
            Some(p) => serde_json::from_value(p.clone()).map_err(|_| {
                SpecError::new("policy", "must be \"compensate\", \"pause\" or \"skip\"")
            })?,
        };
        let deadline_ms = match object.get("deadline_ms") {
            None | Some(Value::Null) => None,
            Some(v) => Some(bounded_ms("deadline_ms", v, MAX_TASK_MS)?),
        };
        let inputs = match object.get("inputs") {
            None => Map::new(),
            Some(Value::Object(inputs)) => inputs.clone(),
            Some(_) => {
                return Err(SpecError::new(
                    "inputs",
                    "must be an object: input name -> its JSON Schema",
                ));
            }
        };
        for (input, schema) in &inputs {
            let field = format!("inputs.{input}");
            check_name(&field, input)?;
            jsonschema::validator_for(schema)
                .map_err(|e| SpecError::new(field, format!("not a valid JSON Schema: {e}")))?;
        }
        let steps = parse_steps(object.get("stages"))?;
        let spec = TaskSpec {
            name,
            description: optional_string(object, "description")?,
            policy,
            deadline_ms,
            inputs,
            steps,
            source: value.clone(),
        };
        spec.check_references()?;
        Ok(spec)
    }

    /// Every stage with the field path the spec wrote it at.
    pub fn stages(&self) -> impl Iterator<Item = (String, &Stage)> {
        self.steps.iter().enumerate().flat_map(|(i, step)| {
            step.stages.iter().enumerate().map(move |(j, stage)| {
                let field = match step.group {
                    true => format!("stages[{i}].group[{j}]"),
                    false => format!("stages[{i}]"),
                };
                (field, stage)
            })
        })
    }

    /// Every call the task may make (stages and compensations) with its field path.
    pub fn calls(&self) -> impl Iterator<Item = (String, &Call)> {
        self.stages().flat_map(|(field, stage)| {
            let compensation =
                (stage.compensate.as_ref()).map(|call| (format!("{field}.compensate.tool"), call));
            std::iter::once((format!("{field}.tool"), &stage.call)).chain(compensation)
        })
    }

    /// Check `given` against the declared inputs, and that every `input.X` the stages use
    /// is given.
    pub fn check_inputs(&self, given: &Map<String, Value>) -> Result<(), SpecError> {
        for (name, value) in given {
            let field = format!("inputs.{name}");
            match self.inputs.get(name) {
                Some(schema) => {
                    let validator = jsonschema::validator_for(schema)
                        .map_err(|e| SpecError::new(&field, e.to_string()))?;
                    if let Some(error) = validator.iter_errors(value).next() {
                        return Err(SpecError::new(field, error.to_string()));
                    }
                }
                None if self.inputs.is_empty() => {}
                None => {
                    let known: Vec<&str> = self.inputs.keys().map(String::as_str).collect();
                    return Err(SpecError::new(
                        field,
                        format!("the task takes no such input; it takes {}", known.join(", ")),
                    ));
                }
            }
        }
        for (field, reference) in self.references() {
            if let Ref::Input(path) = reference
                && !given.contains_key(&path[0])
            {
                return Err(SpecError::new(
                    field,
                    format!("uses input `{}`, which the request does not give", path[0]),
                ));
            }
        }
        Ok(())
    }

    /// Every reference in the spec's arguments, with its field path.
    fn references(&self) -> Vec<(String, Ref)> {
        let mut found = Vec::new();
        for (field, stage) in self.stages() {
            collect_refs(&format!("{field}.args"), &stage.call.args, &mut found);
            if let Some(compensate) = &stage.compensate {
                collect_refs(&format!("{field}.compensate.args"), &compensate.args, &mut found);
            }
        }
        found.into_iter().filter_map(|(field, r)| r.ok().map(|r| (field, r))).collect()
    }

    /// A stage may use the results of the stages of earlier steps only; its compensation
    /// may also use its own.
    fn check_references(&self) -> Result<(), SpecError> {
        let step_of: BTreeMap<&str, usize> = (self.steps.iter().enumerate())
            .flat_map(|(i, step)| step.stages.iter().map(move |s| (s.name.as_str(), i)))
            .collect();
        for (i, step) in self.steps.iter().enumerate() {
            for (j, stage) in step.stages.iter().enumerate() {
                let field = match step.group {
                    true => format!("stages[{i}].group[{j}]"),
                    false => format!("stages[{i}]"),
                };
                let mut found = Vec::new();
                collect_refs(&format!("{field}.args"), &stage.call.args, &mut found);
                let own = found.len();
                if let Some(compensate) = &stage.compensate {
                    let place = format!("{field}.compensate.args");
                    collect_refs(&place, &compensate.args, &mut found);
                }
                for (k, (place, reference)) in found.into_iter().enumerate() {
                    let reference = reference.map_err(|m| SpecError::new(&place, m))?;
                    let Ref::Result { stage: target, .. } = &reference else { continue };
                    let compensation = k >= own;
                    match step_of.get(target.as_str()) {
                        None => {
                            return Err(SpecError::new(
                                place,
                                format!(
                                    "`$ref` names stage `{target}`, which the task does not have"
                                ),
                            ));
                        }
                        Some(_) if target == &stage.name && compensation => {}
                        Some(_) if target == &stage.name => {
                            return Err(SpecError::new(
                                place,
                                format!(
                                    "stage `{target}` refers to its own result (a cycle); only its \
                                     compensation may"
                                ),
                            ));
                        }
                        Some(&at) if at >= i => {
                            return Err(SpecError::new(
                                place,
                                format!(
                                    "`$ref` names stage `{target}`, which runs {} this one (a cycle \
                                     or a forward reference); a stage may use only the results of \
                                     stages before it",
                                    if at == i { "at the same time as" } else { "after" }
                                ),
                            ));
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        Ok(())
    }
}

fn parse_steps(stages: Option<&Value>) -> Result<Vec<Step>, SpecError> {
    let items = match stages {
        Some(Value::Array(items)) if !items.is_empty() => items,
        _ => return Err(SpecError::new("stages", "must be a non-empty array of stages")),
    };
    let mut steps = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    let mut count = 0;
    for (i, item) in items.iter().enumerate() {
        let field = format!("stages[{i}]");
        let step = match item.get("group").is_some() {
            true => {
                let object = item.as_object().filter(|o| o.len() == 1).ok_or_else(|| {
                    SpecError::new(&field, "a group is an object with one key, `group`")
                })?;
                let members = match &object["group"] {
                    Value::Array(members) if !members.is_empty() => members,
                    _ => {
                        return Err(SpecError::new(
                            format!("{field}.group"),
                            "must be a non-empty array of stages",
                        ));
                    }
                };
                let stages = (members.iter().enumerate())
                    .map(|(j, m)| parse_stage(&format!("{field}.group[{j}]"), m))
                    .collect::<Result<_, _>>()?;
                Step { stages, group: true }
            }
            false => Step { stages: vec![parse_stage(&field, item)?], group: false },
        };
        for (j, stage) in step.stages.iter().enumerate() {
            let place = match step.group {
                true => format!("{field}.group[{j}].name"),
                false => format!("{field}.name"),
            };
            if !names.insert(stage.name.clone()) {
                return Err(SpecError::new(
                    place,
                    format!("a second stage named `{}`", stage.name),
                ));
            }
        }
        count += step.stages.len();
        if count > MAX_STAGES {
            return Err(SpecError::new("stages", format!("at most {MAX_STAGES} stages")));
        }
        steps.push(step);
    }
    Ok(steps)
}

fn parse_stage(field: &str, value: &Value) -> Result<Stage, SpecError> {
    if value.get("group").is_some() {
        return Err(SpecError::new(field, "groups cannot be nested"));
    }
    let written: WrittenStage =
        serde_json::from_value(value.clone()).map_err(|e| SpecError::new(field, e.to_string()))?;
    let stage = Stage {
        name: written.name,
        call: Call {
            tool: written.tool,
            args: written.args,
            retries: written.retries,
            backoff_ms: written.backoff_ms,
            deadline_ms: written.deadline_ms,
        },
        compensate: written.compensate,
        critical: written.critical,
    };
    check_name(&format!("{field}.name"), &stage.name)?;
    if stage.name == "input" {
        return Err(SpecError::new(
            format!("{field}.name"),
            "`input` is reserved for the task's inputs",
        ));
    }
    check_call(field, &stage.call)?;
    if let Some(compensate) = &stage.compensate {
        check_call(&format!("{field}.compensate"), compensate)?;
    }
    Ok(stage)
}

fn check_call(field: &str, call: &Call) -> Result<(), SpecError> {
    if call.tool.trim().is_empty() {
        return Err(SpecError::new(format!("{field}.tool"), "names no tool"));
    }
    if !call.args.is_object() {
        return Err(SpecError::new(format!("{field}.args"), "must be an object"));
    }
    if call.retries > MAX_RETRIES {
        return Err(SpecError::new(
            format!("{field}.retries"),
            format!("{} is more than {MAX_RETRIES}", call.retries),
        ));
    }
    if call.backoff_ms > MAX_STAGE_MS {
        return Err(SpecError::new(
            format!("{field}.backoff_ms"),
            format!("{} is more than {MAX_STAGE_MS}", call.backoff_ms),
        ));
    }
    if let Some(deadline) = call.deadline_ms {
        bounded_ms(&format!("{field}.deadline_ms"), &Value::from(deadline), MAX_STAGE_MS)?;
    }
    Ok(())
}

fn collect_refs(field: &str, value: &Value, found: &mut Vec<(String, Result<Ref, String>)>) {
    if let Some(reference) = Ref::of(value) {
        found.push((field.to_string(), reference));
        return;
    }
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                collect_refs(&format!("{field}.{key}"), inner, found);
            }
        }
        Value::Array(items) => {
            for (i, inner) in items.iter().enumerate() {
                collect_refs(&format!("{field}[{i}]"), inner, found);
            }
        }
        _ => {}
    }
}

fn check_name(field: &str, name: &str) -> Result<(), SpecError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match valid {
        true => Ok(()),
        false => Err(SpecError::new(
            field,
            format!("`{name}` is not a name: use 1 to 64 letters, digits, '_' and '-'"),
        )),
    }
}

fn optional_string(object: &Map<String, Value>, key: &str) -> Result<Option<String>, SpecError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(SpecError::new(key, "must be a string")),
    }
}

fn bounded_ms(field: &str, value: &Value, most: u64) -> Result<u64, SpecError> {
    match value.as_u64() {
        Some(ms) if (1..=most).contains(&ms) => Ok(ms),
        _ => Err(SpecError::new(field, format!("must be an integer from 1 to {most} (ms)"))),
    }
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

fn default_backoff() -> u64 {
    100
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn order() -> Value {
        json!({"stages": [
            {"name": "check", "tool": "shop.act", "args": {"stage": "check"}},
            {"name": "lock", "tool": "shop.act", "args": {"stage": "lock"},
             "compensate": {"tool": "shop.undo", "args": {"id": {"$ref": "lock.result.id"}}}},
            {"group": [
                {"name": "pay", "tool": "shop.act", "args": {"id": {"$ref": "lock.result.id"}}},
                {"name": "coupon", "tool": "shop.act", "critical": false},
            ]},
        ]})
    }

    fn error(spec: Value) -> SpecError {
        TaskSpec::parse(&spec).unwrap_err()
    }

    #[test]
    fn a_good_spec_parses_with_its_groups_and_defaults() {
        let spec = TaskSpec::parse(&order()).unwrap();
        assert_eq!(spec.policy, FailurePolicy::Compensate);
        assert_eq!(spec.steps.len(), 3);
        assert!(spec.steps[2].group);
        assert!(!spec.steps[2].stages[1].critical);
        assert_eq!(spec.steps[0].stages[0].call.backoff_ms, 100);
        let fields: Vec<String> = spec.calls().map(|(f, _)| f).collect();
        assert!(fields.contains(&"stages[1].compensate.tool".to_string()));
        assert!(fields.contains(&"stages[2].group[1].tool".to_string()));
    }

    #[test]
    fn references_must_point_backwards() {
        let mut later = order();
        later["stages"][0]["args"]["x"] = json!({"$ref": "pay.result"});
        let e = error(later);
        assert_eq!(e.field, "stages[0].args.x");
        assert!(e.message.contains("after"), "{e}");

        let mut own = order();
        own["stages"][0]["args"]["x"] = json!({"$ref": "check.result"});
        assert!(error(own).message.contains("its own result"));

        let mut sibling = order();
        sibling["stages"][2]["group"][1]["args"] = json!({"x": {"$ref": "pay.result"}});
        let e = error(sibling);
        assert_eq!(e.field, "stages[2].group[1].args.x");
        assert!(e.message.contains("at the same time"), "{e}");

        let mut missing = order();
        missing["stages"][1]["args"]["x"] = json!([{"$ref": "nowhere.result"}]);
        let e = error(missing);
        assert_eq!(e.field, "stages[1].args.x[0]");
        assert!(e.message.contains("does not have"));

        let mut bad = order();
        bad["stages"][1]["args"]["x"] = json!({"$ref": "check.output"});
        assert!(error(bad).message.contains("STAGE.result"));
    }

    #[test]
    fn malformed_specs_name_their_field() {
        let mut dup = order();
        dup["stages"][1]["name"] = json!("check");
        assert_eq!(error(dup).field, "stages[1].name");
        let mut unknown = order();
        unknown["stages"][0]["colour"] = json!("red");
        assert_eq!(error(unknown).field, "stages[0]");
        let mut retries = order();
        retries["stages"][0]["retries"] = json!(1000);
        assert_eq!(error(retries).field, "stages[0].retries");
        assert_eq!(error(json!({"stages": []})).field, "stages");
        let nested = error(json!({"stages": [{"group": [{"group": []}]}]}));
        assert_eq!(
            (nested.field.as_str(), nested.message.as_str()),
            ("stages[0].group[0]", "groups cannot be nested")
        );
        assert_eq!(error(json!({"policy": "maybe", "stages": []})).field, "policy");
        let huge = json!({"stages": [{"name": "a", "tool": "t", "args": {"x": "y".repeat(MAX_SPEC_BYTES)}}]});
        assert_eq!(error(huge).field, "spec");
        let many: Vec<Value> =
            (0..=MAX_STAGES).map(|i| json!({"name": format!("s{i}"), "tool": "t"})).collect();
        assert_eq!(error(json!({"stages": many})).field, "stages");
    }

    #[test]
    fn inputs_are_declared_given_and_checked() {
        let spec = TaskSpec::parse(&json!({
            "inputs": {"sku": {"type": "string"}},
            "stages": [{"name": "a", "tool": "t", "args": {"sku": {"$ref": "input.sku"}}}],
        }))
        .unwrap();
        assert!(spec.check_inputs(&json!({"sku": "x"}).as_object().unwrap().clone()).is_ok());
        let missing = spec.check_inputs(&Map::new()).unwrap_err();
        assert_eq!(missing.field, "stages[0].args.sku");
        let wrong = spec.check_inputs(json!({"sku": 3}).as_object().unwrap()).unwrap_err();
        assert_eq!(wrong.field, "inputs.sku");
        let extra = spec.check_inputs(json!({"sku": "x", "n": 1}).as_object().unwrap());
        assert_eq!(extra.unwrap_err().field, "inputs.n");
    }

    #[test]
    fn lookups_follow_objects_and_arrays() {
        let value = json!({"a": [{"b": 7}]});
        let path = ["a", "0", "b"].map(String::from);
        assert_eq!(Ref::lookup(&value, &path), Some(&json!(7)));
        assert_eq!(Ref::lookup(&value, &["a".into(), "x".into()]), None);
    }
}
