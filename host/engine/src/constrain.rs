//! Constrained decoding of tool calls, usable with any model: the reply must be a plain
//! answer or `name\n{arguments}` where the name is an offered tool and the arguments follow
//! that tool's JSON schema (property names, types, enums, required fields). String
//! arguments can further be held to whole-word spans of the conversation ("copy" fields),
//! which keeps a small model's copies of names and values faithful.

use std::collections::HashMap;

use serde_json::Value;

use crate::template::ToolDef;

/// What a reply prefix is, judged against the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It cannot be extended into a valid reply.
    Invalid,
    /// It can still become a valid reply.
    Partial,
    /// A complete tool call: nothing but a stop token may follow.
    CompleteCall,
    /// A plain answer: anything may follow, including a stop token.
    Text,
}

/// The grammar of a reply to a prompt that offered some tools.
#[derive(Debug, Clone)]
pub struct CallGrammar {
    tools: Vec<ToolShape>,
    source: Vec<char>,
    text_allowed: bool,
}

#[derive(Debug, Clone)]
struct ToolShape {
    name: String,
    properties: Vec<(String, Kind)>,
    required: Vec<String>,
    /// Whether properties other than the listed ones may appear.
    open: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    String { copy: bool },
    Number,
    Integer,
    Boolean,
    Enum(Vec<String>),
    Any,
}

impl CallGrammar {
    /// The grammar for `tools`; the fields named in `copy` (tool name -> argument names) must
    /// copy a whole-word span of `source` (the conversation's user and tool text).
    pub fn new(tools: &[ToolDef], copy: &HashMap<String, Vec<String>>, source: &str) -> Self {
        let tools = tools
            .iter()
            .map(|tool| {
                let copied = copy.get(&tool.name).map(Vec::as_slice).unwrap_or_default();
                let schema = &tool.parameters;
                let properties = schema
                    .get("properties")
                    .and_then(Value::as_object)
                    .map(|props| {
                        props
                            .iter()
                            .map(|(name, prop)| {
                                (name.clone(), kind_of(prop, copied.contains(name)))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let required = schema
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|r| r.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                    .unwrap_or_default();
                let open = schema.get("additionalProperties") != Some(&Value::Bool(false))
                    && schema.get("properties").is_none();
                ToolShape { name: tool.name.clone(), properties, required, open }
            })
            .collect();
        Self { tools, source: source.chars().collect(), text_allowed: true }
    }

    /// The same grammar without plain answers: the reply must call a tool.
    pub fn requiring_call(self) -> Self {
        Self { text_allowed: false, ..self }
    }

    /// Judge a reply prefix.
    pub fn check(&self, text: &str) -> Verdict {
        self.check_pending(text, None)
    }

    /// Judge a reply prefix whose trailing U+FFFD stands for the first bytes `pending` of a
    /// character still being decoded, when they are known: only characters starting with
    /// them may follow, and none at all when they are empty (bytes that never form one).
    pub fn check_pending(&self, text: &str, pending: Option<&[u8]>) -> Verdict {
        if text.ends_with('\u{FFFD}') && pending.is_some_and(<[u8]>::is_empty) {
            return Verdict::Invalid;
        }
        if text.starts_with('\n') {
            return if self.text_allowed { Verdict::Text } else { Verdict::Invalid };
        }
        // A character cut in half by the last token decodes as U+FFFD and may complete with
        // the next token (only inside a string); anywhere else U+FFFD means invalid bytes.
        if text.trim_end_matches('\u{FFFD}').contains('\u{FFFD}')
            || text.ends_with("\u{FFFD}\u{FFFD}")
        {
            return Verdict::Invalid;
        }
        let Some((name, rest)) = text.split_once('\n') else {
            return if self.tools.iter().any(|t| t.name.starts_with(text)) {
                Verdict::Partial
            } else {
                Verdict::Invalid
            };
        };
        let Some(tool) = self.tools.iter().find(|t| t.name == name) else {
            return Verdict::Invalid;
        };
        let chars: Vec<char> = rest.chars().collect();
        let mut parser = Parser { s: &chars, i: 0, source: &self.source, pending };
        match parser.object(tool) {
            Step::More => Verdict::Partial,
            Step::Bad => Verdict::Invalid,
            Step::Done => {
                parser.ws();
                if parser.i == chars.len() { Verdict::CompleteCall } else { Verdict::Invalid }
            }
        }
    }
}

fn kind_of(prop: &Value, copy: bool) -> Kind {
    if let Some(values) = prop.get("enum").and_then(Value::as_array) {
        let strings: Vec<String> =
            values.iter().filter_map(|v| v.as_str().map(String::from)).collect();
        if strings.len() == values.len() {
            return Kind::Enum(strings);
        }
    }
    match prop.get("type").and_then(Value::as_str) {
        Some("string") => Kind::String { copy },
        Some("number") => Kind::Number,
        Some("integer") => Kind::Integer,
        Some("boolean") => Kind::Boolean,
        _ => Kind::Any,
    }
}

/// Most whitespace characters accepted between two JSON tokens.
const MAX_GAP: usize = 4;

/// Outcome of parsing one construct from a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Parsed completely; the parser stands after it.
    Done,
    /// The input ended inside it, validly so far.
    More,
    /// It cannot be valid.
    Bad,
}

struct Parser<'a> {
    s: &'a [char],
    i: usize,
    source: &'a [char],
    pending: Option<&'a [u8]>,
}

macro_rules! step {
    ($e:expr) => {
        match $e {
            Step::Done => {}
            other => return other,
        }
    };
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    /// Skip whitespace between JSON tokens: a little (a model writes one space), never a run
    /// long enough to stall a generation.
    fn ws(&mut self) {
        let start = self.i;
        while matches!(self.peek(), Some(' ' | '\n' | '\t' | '\r')) && self.i - start < MAX_GAP {
            self.i += 1;
        }
    }

    /// Skip whitespace, then expect `c`.
    fn expect(&mut self, c: char) -> Step {
        self.ws();
        match self.peek() {
            None => Step::More,
            Some(x) if x == c => {
                self.i += 1;
                Step::Done
            }
            Some(_) => Step::Bad,
        }
    }

    fn object(&mut self, tool: &ToolShape) -> Step {
        step!(self.expect('{'));
        let mut seen: Vec<&str> = Vec::new();
        let mut first = true;
        loop {
            self.ws();
            let missing = tool.required.iter().any(|r| !seen.contains(&r.as_str()));
            let more =
                tool.open || tool.properties.iter().any(|(n, _)| !seen.contains(&n.as_str()));
            match self.peek() {
                None => return Step::More,
                Some('}') if !missing => {
                    self.i += 1;
                    return Step::Done;
                }
                Some('}') => return Step::Bad,
                Some(',') if !first && more => {
                    self.i += 1;
                    self.ws();
                    if self.peek().is_none() {
                        return Step::More;
                    }
                }
                Some('"') if first => {}
                Some(_) => return Step::Bad,
            }
            first = false;
            // A property name: one not used yet, known unless the schema is open.
            let mut key = String::new();
            match self.string(false, |text, closed| {
                key = text.to_string();
                let unused = tool.properties.iter().filter(|(n, _)| !seen.contains(&n.as_str()));
                let known = unused
                    .clone()
                    .any(|(n, _)| if closed { n == text } else { n.starts_with(text) });
                known || tool.open
            }) {
                Step::Done => {}
                other => return other,
            }
            let Some((name, kind)) = tool.properties.iter().find(|(n, _)| *n == key) else {
                step!(self.expect(':'));
                step!(self.any_value());
                continue;
            };
            seen.push(name.as_str());
            step!(self.expect(':'));
            self.ws();
            step!(self.value(kind));
        }
    }

    fn value(&mut self, kind: &Kind) -> Step {
        if self.peek().is_none() {
            return Step::More;
        }
        match kind {
            Kind::String { copy: false } => self.string(true, |_, _| true),
            Kind::String { copy: true } => {
                let (source, pending) = (self.source, self.pending);
                self.string(false, |text, closed| copies(source, text, closed, pending))
            }
            Kind::Enum(options) => self.string(false, |text, closed| {
                options.iter().any(|o| if closed { o == text } else { o.starts_with(text) })
            }),
            Kind::Number => self.number(true),
            Kind::Integer => self.number(false),
            Kind::Boolean => self.literal(&["true", "false"]),
            Kind::Any => self.any_value(),
        }
    }

    /// A JSON string whose (unescaped) text so far passes `ok(text, closed)`; backslash
    /// escapes only if `escapes` (names and copied values never need them).
    fn string(&mut self, escapes: bool, ok: impl FnMut(&str, bool) -> bool) -> Step {
        let mut ok = ok;
        step!(self.expect('"'));
        let mut text = String::new();
        loop {
            match self.peek() {
                None => return if ok(&text, false) { Step::More } else { Step::Bad },
                Some('"') => {
                    self.i += 1;
                    return if ok(&text, true) { Step::Done } else { Step::Bad };
                }
                Some('\\') if !escapes => return Step::Bad,
                Some('\\') => {
                    let Some(&escaped) = self.s.get(self.i + 1) else { return Step::More };
                    let c = match escaped {
                        '"' => '"',
                        '\\' => '\\',
                        '/' => '/',
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        'b' => '\u{8}',
                        'f' => '\u{c}',
                        'u' => {
                            let hex: String = self.s.iter().skip(self.i + 2).take(4).collect();
                            if hex.len() < 4 {
                                return if hex.chars().all(|c| c.is_ascii_hexdigit()) {
                                    Step::More
                                } else {
                                    Step::Bad
                                };
                            }
                            match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                                Some(c) => {
                                    self.i += 4;
                                    c
                                }
                                None => return Step::Bad,
                            }
                        }
                        _ => return Step::Bad,
                    };
                    self.i += 2;
                    text.push(c);
                }
                Some(c) if (c as u32) < 0x20 => return Step::Bad,
                Some(c) => {
                    self.i += 1;
                    text.push(c);
                }
            }
            if !ok(&text, false) {
                return Step::Bad;
            }
        }
    }

    /// A JSON number (an integer when `fraction` is false). The number is complete only once
    /// something follows it.
    fn number(&mut self, fraction: bool) -> Step {
        let start = self.i;
        while let Some(c) = self.peek() {
            if c.is_ascii_digit() || c == '-' || (fraction && matches!(c, '.' | 'e' | 'E' | '+')) {
                self.i += 1;
            } else {
                break;
            }
        }
        let text: String = self.s[start..self.i].iter().collect();
        if text.is_empty() {
            return Step::Bad;
        }
        let complete = serde_json::from_str::<serde_json::Number>(&text).is_ok();
        if self.peek().is_none() {
            // Still being written: valid if it is a prefix of some number.
            let probe = format!("{text}0");
            let viable = complete
                || serde_json::from_str::<serde_json::Number>(&probe).is_ok()
                || text == "-";
            return if viable { Step::More } else { Step::Bad };
        }
        if complete { Step::Done } else { Step::Bad }
    }

    fn literal(&mut self, options: &[&str]) -> Step {
        let rest: String = self.s[self.i..].iter().take(5).collect();
        for option in options {
            if rest.starts_with(option) {
                self.i += option.chars().count();
                return Step::Done;
            }
            if option.starts_with(&rest) && self.i + rest.chars().count() == self.s.len() {
                return Step::More;
            }
        }
        Step::Bad
    }

    /// Any JSON value.
    fn any_value(&mut self) -> Step {
        self.ws();
        match self.peek() {
            None => Step::More,
            Some('"') => self.string(true, |_, _| true),
            Some('{') => {
                self.i += 1;
                self.ws();
                if self.peek() == Some('}') {
                    self.i += 1;
                    return Step::Done;
                }
                loop {
                    step!(self.string(true, |_, _| true));
                    step!(self.expect(':'));
                    step!(self.any_value());
                    self.ws();
                    match self.peek() {
                        None => return Step::More,
                        Some(',') => {
                            self.i += 1;
                            self.ws();
                        }
                        Some('}') => {
                            self.i += 1;
                            return Step::Done;
                        }
                        Some(_) => return Step::Bad,
                    }
                }
            }
            Some('[') => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(']') {
                    self.i += 1;
                    return Step::Done;
                }
                loop {
                    step!(self.any_value());
                    self.ws();
                    match self.peek() {
                        None => return Step::More,
                        Some(',') => self.i += 1,
                        Some(']') => {
                            self.i += 1;
                            return Step::Done;
                        }
                        Some(_) => return Step::Bad,
                    }
                }
            }
            Some('t' | 'f' | 'n') => self.literal(&["true", "false", "null"]),
            Some(_) => self.number(true),
        }
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() && !is_cjk(c)
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0xAC00..=0xD7AF)
}

/// Whether a word starts at `i` (or, for `end`, ends just before `i`) in `s`.
fn boundary(s: &[char], i: usize) -> bool {
    match (i.checked_sub(1).map(|j| s[j]), s.get(i).copied()) {
        (Some(a), Some(b)) => !(is_word_char(a) && is_word_char(b)),
        _ => true,
    }
}

/// Whether `text` starts (or, when `closed`, is) a whole-word span of `source`. A trailing
/// U+FFFD (a character still being decoded) matches a non-ASCII character whose UTF-8
/// encoding starts with `pending_bytes` (any, when those bytes are unknown).
fn copies(source: &[char], text: &str, closed: bool, pending_bytes: Option<&[u8]>) -> bool {
    let completes = |c: char| {
        let mut buf = [0u8; 4];
        let bytes = c.encode_utf8(&mut buf).as_bytes();
        !c.is_ascii() && pending_bytes.is_none_or(|p| bytes.starts_with(p))
    };
    let mut text: Vec<char> = text.chars().collect();
    let pending = text.last() == Some(&'\u{FFFD}');
    if pending {
        text.pop();
    }
    if text.is_empty() && !pending {
        return !closed;
    }
    // A span of words neither starts nor ends with whitespace.
    if text.first().is_some_and(|c| c.is_whitespace())
        || (closed && text.last().is_some_and(|c| c.is_whitespace()))
    {
        return false;
    }
    // An open span that ends in whitespace cannot close yet: its next character must be one
    // a copied value may hold (no quote, backslash or control character, which would need
    // an escape), or the reply could never be finished.
    let must_extend = !closed && !pending && text.last().is_some_and(|c| c.is_whitespace());
    let copyable = |c: char| c != '"' && c != '\\' && !c.is_control();
    (0..source.len()).any(|start| {
        let end = start + text.len();
        boundary(source, start)
            && source[start..].starts_with(&text)
            && (!pending || source.get(end).is_some_and(|&c| completes(c)))
            && (!must_extend || source.get(end).is_some_and(|&c| copyable(c)))
            && (!closed || boundary(source, end))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn grammar() -> CallGrammar {
        let tools = vec![
            ToolDef {
                name: "get_weather".into(),
                description: String::new(),
                parameters: json!({"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}),
            },
            ToolDef {
                name: "convert".into(),
                description: String::new(),
                parameters: json!({"type": "object", "properties": {
                    "value": {"type": "number"}, "from": {"type": "string"}, "to": {"type": "string", "enum": ["km", "mi"]}
                }, "required": ["value", "from", "to"]}),
            },
            ToolDef {
                name: "list".into(),
                description: String::new(),
                parameters: json!({"type": "object", "additionalProperties": false}),
            },
        ];
        let copy = HashMap::from([("get_weather".to_string(), vec!["location".to_string()])]);
        CallGrammar::new(
            &tools,
            &copy,
            "What's the weather in Buenos Aires and 北京? Or in \"Lima\"",
        )
    }

    #[test]
    fn every_prefix_of_a_valid_call_is_partial() {
        let g = grammar();
        for call in [
            "get_weather\n{\"location\": \"Buenos Aires\"}",
            "get_weather\n{\"location\": \"北京\"}",
            "convert\n{\"value\": -2.5e3, \"from\": \"miles\", \"to\": \"km\"}",
            "list\n{}",
        ] {
            let chars: Vec<char> = call.chars().collect();
            for cut in 0..chars.len() {
                let prefix: String = chars[..cut].iter().collect();
                assert_eq!(g.check(&prefix), Verdict::Partial, "{prefix:?}");
            }
            assert_eq!(g.check(call), Verdict::CompleteCall, "{call:?}");
        }
        assert_eq!(g.check("\nHello"), Verdict::Text);
        assert_eq!(g.requiring_call().check("\nHello"), Verdict::Invalid);
    }

    #[test]
    fn names_keys_types_and_copies_are_enforced() {
        let g = grammar();
        for bad in [
            "get_stock",
            "get_weather\n[",
            "get_weather\n{\"place\"",
            "get_weather\n{\"location\": 5",
            "get_weather\n{\"location\": \"Bueno\"",
            "get_weather\n{\"location\": \"Buenos \"",
            "get_weather\n{\"location\": \" Buenos",
            "get_weather\n{\"location\": \"Paris",
            "get_weather\n{\"location\": \"enos",
            "get_weather\n{}",
            "convert\n{\"value\": \"5\"",
            "convert\n{\"value\": 5, \"value\"",
            "convert\n{\"value\": 5, \"from\": \"x\", \"to\": \"yd\"",
            "get_weather\n{\"location\": \"北京\"} extra",
            // Only a quote follows "in ": the span could never be closed.
            "get_weather\n{\"location\": \"Or in ",
            "list\n{\"a\"",
        ] {
            assert_eq!(g.check(bad), Verdict::Invalid, "{bad:?}");
        }
    }

    /// A copied span may stop before a quote of the source but cannot swallow the space
    /// in front of it: it could then neither close nor go on.
    #[test]
    fn a_span_that_could_never_close_is_refused() {
        let g = grammar();
        assert_eq!(g.check("get_weather\n{\"location\": \"Or in"), Verdict::Partial);
        assert_eq!(g.check("get_weather\n{\"location\": \"Or in\"}"), Verdict::CompleteCall);
        assert_eq!(g.check("get_weather\n{\"location\": \"Or in "), Verdict::Invalid);
        assert_eq!(g.check("get_weather\n{\"location\": \"weather in "), Verdict::Partial);
        assert_eq!(g.check("get_weather\n{\"location\": \"Lima"), Verdict::Partial);
    }

    /// A copied character that arrives byte by byte (a vocabulary without it) is checked on
    /// the bytes it has so far: a wrong first byte is a dead end, refused at once.
    #[test]
    fn a_character_cut_by_a_token_must_be_one_the_source_has() {
        let g = grammar();
        let cut = "get_weather\n{\"location\": \"\u{FFFD}";
        let bei = "北".as_bytes();
        assert_eq!(g.check_pending(cut, Some(&bei[..1])), Verdict::Partial);
        assert_eq!(g.check_pending(cut, Some(&bei[..2])), Verdict::Partial);
        assert_eq!(g.check_pending(cut, Some(&"南".as_bytes()[..2])), Verdict::Invalid);
        assert_eq!(g.check_pending(cut, Some(&[0xF0])), Verdict::Invalid);
        let second = "get_weather\n{\"location\": \"北\u{FFFD}";
        assert_eq!(g.check_pending(second, Some(&"京".as_bytes()[..1])), Verdict::Partial);
        assert_eq!(g.check_pending(second, Some(&"北".as_bytes()[..1])), Verdict::Invalid);
        // A stray continuation byte never forms a character, in any field.
        assert_eq!(g.check_pending(cut, Some(&[])), Verdict::Invalid);
        // Without the bytes, any non-ASCII character of the source may follow.
        assert_eq!(g.check(cut), Verdict::Partial);
    }
}
