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

fn tools() -> Vec<Tool> {
    vec![Tool::new("greet", "Greet someone by name.", greet).output::<Greeting>().read_only().idempotent()]
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
