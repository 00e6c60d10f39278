//! Reading the model's reply: GLM-4 writes a tool call as `name\n{json arguments}` and a plain
//! answer as `\ntext`. Batch and incremental (streaming) parsers; malformed calls become a
//! recoverable error or plain text, never a panic.

use serde_json::Value;

use crate::template::ToolCall;

/// What a finished reply turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A plain answer.
    Text(String),
    /// A call of one of the offered tools with a JSON object of arguments.
    Call(ToolCall),
    /// Something shaped like a call that cannot be run; the agent can tell the model why.
    InvalidCall {
        /// The raw reply.
        raw: String,
        /// What is wrong, in words the model (and a log reader) can act on.
        error: String,
    },
}

/// Parse a complete reply against the names of the offered tools.
pub fn parse_reply(text: &str, tools: &[&str]) -> Reply {
    let Some((first, rest)) = text.split_once('\n') else {
        return Reply::Text(text.trim().to_string());
    };
    let name = first.trim();
    if name.is_empty() || !looks_like_name(name) {
        return Reply::Text(text.trim().to_string());
    }
    let arguments = serde_json::from_str::<Value>(rest.trim());
    let known = tools.contains(&name);
    match arguments {
        Ok(Value::Object(arguments)) if known => {
            Reply::Call(ToolCall { name: name.to_string(), arguments })
        }
        Ok(Value::Object(_)) => Reply::InvalidCall {
            raw: text.to_string(),
            error: format!(
                "there is no tool named \"{name}\"; the tools are: {}",
                tools.join(", ")
            ),
        },
        Ok(other) if known => Reply::InvalidCall {
            raw: text.to_string(),
            error: format!(
                "the arguments of {name} must be a JSON object, not {}",
                json_kind(&other)
            ),
        },
        Err(e) if known => Reply::InvalidCall {
            raw: text.to_string(),
            error: format!("the arguments of {name} are not valid JSON: {e}"),
        },
        _ => Reply::Text(text.trim().to_string()),
    }
}

fn looks_like_name(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Incremental parser: feed text as tokens decode; plain answers stream out as soon as they
/// are recognisably plain, tool calls are held until the reply ends.
#[derive(Debug)]
pub struct StreamParser {
    tools: Vec<String>,
    text: String,
    mode: Mode,
    /// Bytes of `text` already handed out as answer text.
    sent: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Undecided,
    Text,
    /// Probably a call: wait for the end.
    Held,
}

impl StreamParser {
    /// A parser for a reply to a prompt that offered `tools`.
    pub fn new(tools: &[&str]) -> Self {
        Self {
            tools: tools.iter().map(|t| t.to_string()).collect(),
            text: String::new(),
            mode: Mode::Undecided,
            sent: 0,
        }
    }

    /// Add decoded text; returns answer text that can be shown now (possibly empty).
    pub fn push(&mut self, chunk: &str) -> String {
        self.text.push_str(chunk);
        if self.mode == Mode::Undecided {
            self.mode = self.decide();
        }
        if self.mode == Mode::Text { self.release() } else { String::new() }
    }

    /// The reply is complete: what it was, and any answer text not yet handed out.
    pub fn finish(mut self) -> (Reply, String) {
        let tools: Vec<&str> = self.tools.iter().map(String::as_str).collect();
        let reply = parse_reply(&self.text, &tools);
        let rest = match reply {
            Reply::Text(_) => self.release(),
            _ => String::new(),
        };
        (reply, rest)
    }

    fn decide(&self) -> Mode {
        let start = self.text.trim_start_matches([' ', '\t']);
        match start.split_once('\n') {
            Some((first, _)) if first.trim().is_empty() || !looks_like_name(first.trim()) => {
                Mode::Text
            }
            Some(_) => Mode::Held,
            None if start.is_empty() || looks_like_name(start) => Mode::Undecided,
            None => Mode::Text,
        }
    }

    /// Answer text from `sent` on, without the reply's leading whitespace and without
    /// trailing whitespace (which either ends the reply or is sent with what follows it).
    fn release(&mut self) -> String {
        let start = self.sent.max(self.text.len() - self.text.trim_start().len());
        let upto = self.text.trim_end().len().max(start);
        self.sent = upto;
        self.text[start..upto].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOOLS: &[&str] = &["weather.get_weather", "calculator.evaluate"];

    fn stream(chunks: &[&str]) -> (String, Reply) {
        let mut parser = StreamParser::new(TOOLS);
        let mut shown: String = chunks.iter().map(|c| parser.push(c)).collect();
        let (reply, rest) = parser.finish();
        shown.push_str(&rest);
        (shown, reply)
    }

    #[test]
    fn a_call_is_a_known_name_then_a_json_object() {
        let reply = parse_reply("weather.get_weather\n{\"location\": \"Beijing\"}", TOOLS);
        let Reply::Call(call) = reply else { panic!("expected a call, got {reply:?}") };
        assert_eq!(call.name, "weather.get_weather");
        assert_eq!(call.arguments["location"], "Beijing");
    }

    #[test]
    fn plain_answers_and_chinese_text_are_text() {
        assert_eq!(parse_reply("\nIt is sunny.", TOOLS), Reply::Text("It is sunny.".into()));
        assert_eq!(
            parse_reply("北京今天晴，25°C。\n祝你愉快！", TOOLS),
            Reply::Text("北京今天晴，25°C。\n祝你愉快！".into())
        );
        assert_eq!(parse_reply("Hello", TOOLS), Reply::Text("Hello".into()));
        assert_eq!(parse_reply("", TOOLS), Reply::Text(String::new()));
    }

    #[test]
    fn unknown_names_and_broken_json_are_recoverable_errors() {
        let Reply::InvalidCall { error, .. } = parse_reply("get_stock\n{\"symbol\": \"X\"}", TOOLS)
        else {
            panic!()
        };
        assert!(
            error.contains("no tool named \"get_stock\"") && error.contains("weather.get_weather"),
            "{error}"
        );
        let Reply::InvalidCall { error, .. } =
            parse_reply("weather.get_weather\n{\"location\": \"Bei", TOOLS)
        else {
            panic!()
        };
        assert!(error.contains("not valid JSON"), "{error}");
        let Reply::InvalidCall { error, .. } = parse_reply("calculator.evaluate\n[1, 2]", TOOLS)
        else {
            panic!()
        };
        assert!(error.contains("must be a JSON object, not an array"), "{error}");
        // A first line that happens to be a word, followed by prose, is just text.
        assert_eq!(parse_reply("Sure\nhere it is", TOOLS), Reply::Text("Sure\nhere it is".into()));
    }

    #[test]
    fn streaming_shows_text_early_and_holds_calls() {
        let (shown, reply) = stream(&["\n", "It ", "is", " 25", "°C", " in 北", "京.", " \n"]);
        assert_eq!(shown, "It is 25°C in 北京.");
        assert_eq!(reply, Reply::Text(shown.clone()));

        let mut parser = StreamParser::new(TOOLS);
        for chunk in ["weat", "her.get", "_weather", "\n{\"loc", "ation\": ", "\"Paris\"}"] {
            assert_eq!(parser.push(chunk), "", "a call must not leak as text");
        }
        let (reply, rest) = parser.finish();
        assert!(
            matches!(reply, Reply::Call(ref c) if c.arguments["location"] == "Paris"),
            "{reply:?}"
        );
        assert_eq!(rest, "");
    }

    #[test]
    fn streaming_a_held_reply_that_is_text_after_all_releases_it_at_the_end() {
        let (shown, reply) = stream(&["Sure", "\nhere", " it is"]);
        assert_eq!(shown, "Sure\nhere it is");
        assert_eq!(reply, Reply::Text(shown));
        let (shown, reply) = stream(&["No", " tools needed."]);
        assert_eq!(shown, "No tools needed.");
        assert_eq!(reply, Reply::Text(shown));
    }

    #[test]
    fn arbitrary_splits_of_a_reply_give_the_same_result() {
        let replies = [
            "\n你好，世界！ The answer is 42.",
            "calculator.evaluate\n{\"expression\": \"6*7\"}",
            "weather.get_weather\n{\"location\": ",
        ];
        for reply in replies {
            let whole = stream(&[reply]);
            let chars: Vec<char> = reply.chars().collect();
            for cut in 0..chars.len() {
                let (a, b): (String, String) =
                    (chars[..cut].iter().collect(), chars[cut..].iter().collect());
                assert_eq!(stream(&[&a, &b]), whole, "split at {cut} of {reply:?}");
            }
        }
    }
}
