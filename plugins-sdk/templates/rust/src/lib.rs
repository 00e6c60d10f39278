//! {{name}}: a tool for the Open-AutoGLM host.
use autoglm_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
struct GreetArgs {
    /// Who to greet.
    name: String,
    /// End with an exclamation mark.
    #[serde(default)]
    excited: bool,
}

#[derive(Serialize, JsonSchema)]
struct Greeting {
    greeting: String,
}

fn greet(args: GreetArgs) -> Result<Greeting, ToolError> {
    let name = args.name.trim();
    if name.is_empty() {
        return Err(ToolError::invalid("name must not be empty"));
    }
    let end = if args.excited { "!" } else { "." };
    Ok(Greeting { greeting: format!("Hello, {name}{end}") })
}

#[derive(Deserialize, JsonSchema)]
struct WorkArgs {
    /// How many steps to work through (1 to 100).
    steps: u32,
}

#[derive(Serialize, JsonSchema)]
struct Worked {
    steps: u32,
    /// The same each time the host runs this call again: pass it on to services with
    /// side effects so they happen once.
    idempotency_key: String,
    /// The trace id of the request that caused the call.
    trace_id: Option<String>,
    /// Milliseconds left before the host stops the call.
    deadline_ms: u64,
}

/// A long call: reports its progress (MCP clients that ask see it) and says what the host
/// told it about the call.
fn work(args: WorkArgs) -> Result<Worked, ToolError> {
    if !(1..=100).contains(&args.steps) {
        return Err(ToolError::invalid("steps must be 1 to 100"));
    }
    for done in 1..=args.steps {
        progress(f64::from(done), Some(f64::from(args.steps)), Some(&format!("step {done}")));
    }
    let call = context();
    Ok(Worked {
        steps: args.steps,
        idempotency_key: call.idempotency_key,
        trace_id: call.trace_id,
        deadline_ms: call.deadline_ms,
    })
}

fn tools() -> Vec<Tool> {
    vec![
        Tool::new("greet", "Greet someone by name.", greet).output::<Greeting>().read_only().idempotent(),
        Tool::new("work", "Work through some steps, reporting progress.", work).output::<Worked>().read_only(),
    ]
}

export_plugin!(tools);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greets_and_refuses_a_blank_name() {
        let hello = greet(GreetArgs { name: "Ada".into(), excited: true }).unwrap();
        assert_eq!(hello.greeting, "Hello, Ada!");
        assert!(greet(GreetArgs { name: " ".into(), excited: false }).is_err());
    }
}
