//! Chat prompts: the checkpoint's own Jinja `chat_template` when it ships one (rendered as
//! transformers and vLLM do), otherwise a built-in GLM-4 renderer that produces the same text.

use std::path::Path;

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, ErrorKind};
use serde::{Deserialize, Serialize};

use serde_json::json;

use crate::EngineError;
use crate::checkpoint::{Architecture, ToolsBlock};

/// Who speaks in a chat message, in GLM-4's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions that frame the conversation.
    System,
    /// The person asking.
    User,
    /// The model: an answer or a tool call.
    Assistant,
    /// A tool's result, fed back to the model (OpenAI calls this role `tool`).
    #[serde(alias = "tool")]
    Observation,
}

/// A tool call the model made (in history, or just parsed from its output).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The tool's name as offered to the model.
    pub name: String,
    /// The arguments, a JSON object.
    pub arguments: serde_json::Map<String, serde_json::Value>,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who speaks.
    pub role: Role,
    /// The text (empty for an assistant turn that only calls a tool).
    #[serde(default)]
    pub content: String,
    /// The tool the assistant called in this turn, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call: Option<ToolCall>,
}

impl ChatMessage {
    /// A message with text only.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into(), tool_call: None }
    }

    /// An assistant turn that calls a tool.
    pub fn tool_call(call: ToolCall) -> Self {
        Self { role: Role::Assistant, content: String::new(), tool_call: Some(call) }
    }
}

/// A tool offered to the model: an OpenAI-style function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDef {
    /// The name the model writes to call it.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON schema of the arguments.
    pub parameters: serde_json::Value,
}

/// The system text GLM-4-0414 puts before its tools.
const INTRO_0414: &str = "你是一个名为 ChatGLM 的人工智能助手。你是基于智谱 AI 公司训练的语言模型 GLM-4 模型开发的，你的任务是针对用户的问题和要求提供适当的答复和支持。";
/// The system text of glm-4-9b-chat(-hf).
const INTRO_9B_CHAT: &str = "你是一个名为 ChatGLM 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，你的任务是针对用户的问题和要求提供适当的答复和支持。";
const CALL_HINT: &str = "在调用上述函数时，请使用 Json 格式表示调用的参数。";

/// How a model's prompts are written.
pub struct ChatTemplate {
    kind: Kind,
}

enum Kind {
    /// A Jinja template and the texts of the `bos_token` and `eos_token` it may write.
    Jinja {
        env: Box<Environment<'static>>,
        bos: String,
        eos: String,
    },
    BuiltIn {
        intro: &'static str,
        tools_block: ToolsBlock,
    },
}

impl ChatTemplate {
    /// The template for the checkpoint in `dir`: `chat_template` from `tokenizer_config.json`
    /// (or `chat_template.jinja`) if present, else the built-in renderer for `arch`.
    pub fn for_checkpoint(
        dir: &Path,
        arch: Architecture,
        tools_block: ToolsBlock,
    ) -> Result<Self, EngineError> {
        match find_jinja(dir)? {
            Some(source) => Self::jinja(source),
            None => Ok(Self::built_in(arch, tools_block)),
        }
    }

    /// The template for a GGUF checkpoint in `dir`: the directory's own (as for
    /// [`ChatTemplate::for_checkpoint`]) over the one `embedded` in the file; without either,
    /// the built-in GLM-4 renderer, which only a GLM-4 vocabulary (`glm_vocabulary`) can
    /// read, writing tools as `tools_block` says. `bos` and `eos` are the texts a Jinja
    /// template may write for those tokens.
    pub fn for_gguf(
        dir: &Path,
        embedded: Option<String>,
        arch: Architecture,
        glm_vocabulary: bool,
        (bos, eos): (&str, &str),
        tools_block: ToolsBlock,
    ) -> Result<Option<Self>, EngineError> {
        Ok(match (find_jinja(dir)?.or(embedded), glm_vocabulary) {
            (Some(source), _) => Some(Self::jinja(source)?.with_special_texts(bos, eos)),
            (None, true) => Some(Self::built_in(arch, tools_block)),
            (None, false) => None,
        })
    }

    /// The built-in GLM-4 renderer with the system text of `arch`'s release.
    pub fn built_in(arch: Architecture, tools_block: ToolsBlock) -> Self {
        let intro = match arch {
            Architecture::Glm4 => INTRO_0414,
            Architecture::Glm => INTRO_9B_CHAT,
        };
        Self { kind: Kind::BuiltIn { intro, tools_block } }
    }

    /// A Jinja template with the Python/transformers conventions (`tojson`, `.get`, trimmed blocks).
    pub fn jinja(source: String) -> Result<Self, EngineError> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| EngineError::Template(e.to_string()))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", |message: String| -> Result<Value, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
        });
        env.add_template_owned("chat_template", source)
            .map_err(|e| EngineError::Template(e.to_string()))?;
        // GLM-4's: no BOS in its prompts, `<|endoftext|>` ends a text.
        let (bos, eos) = (String::new(), "<|endoftext|>".to_string());
        Ok(Self { kind: Kind::Jinja { env: Box::new(env), bos, eos } })
    }

    /// A Jinja template that writes `bos` and `eos` for `bos_token` and `eos_token`.
    pub fn with_special_texts(mut self, bos: &str, eos: &str) -> Self {
        if let Kind::Jinja { bos: b, eos: e, .. } = &mut self.kind {
            (*b, *e) = (bos.to_string(), eos.to_string());
        }
        self
    }

    /// Whether this is the checkpoint's own Jinja template.
    pub fn is_jinja(&self) -> bool {
        matches!(self.kind, Kind::Jinja { .. })
    }

    /// The prompt for `messages` with `tools` offered, ending where the assistant speaks next.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        tools: &[ToolDef],
    ) -> Result<String, EngineError> {
        match &self.kind {
            Kind::Jinja { env, bos, eos } => render_jinja(env, (bos, eos), messages, tools),
            Kind::BuiltIn { intro, tools_block } => {
                Ok(render_built_in(intro, *tools_block, messages, tools))
            }
        }
    }
}

fn find_jinja(dir: &Path) -> Result<Option<String>, EngineError> {
    let file = dir.join("chat_template.jinja");
    if file.is_file() {
        return std::fs::read_to_string(&file)
            .map(Some)
            .map_err(|e| EngineError::Template(format!("{}: {e}", file.display())));
    }
    let config = dir.join("tokenizer_config.json");
    let Ok(text) = std::fs::read_to_string(&config) else {
        return Ok(None);
    };
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| EngineError::Config { path: config.clone(), message: e.to_string() })?;
    Ok(match value.get("chat_template") {
        Some(serde_json::Value::String(source)) => Some(source.clone()),
        // transformers also accepts a list of named templates; "default" is the chat one.
        Some(serde_json::Value::Array(named)) => named
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template")?.as_str().map(String::from)),
        _ => None,
    })
}

fn render_jinja(
    env: &Environment<'static>,
    (bos, eos): (&str, &str),
    messages: &[ChatMessage],
    tools: &[ToolDef],
) -> Result<String, EngineError> {
    // GLM templates read a tool call from `metadata` (name) and `content` (arguments) and a
    // result from role `observation`; OpenAI-style `tool_calls` ride along for templates
    // written for that shape.
    let messages: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| match &m.tool_call {
            Some(call) => json!({
                "role": "assistant",
                "metadata": call.name,
                "content": python_json(&serde_json::Value::Object(call.arguments.clone()), None),
                "tool_calls": [{"type": "function", "function": {"name": call.name, "arguments": call.arguments}}],
            }),
            None => json!({"role": m.role, "content": m.content}),
        })
        .collect();
    let tools: Vec<serde_json::Value> =
        tools.iter().map(|t| json!({"type": "function", "function": t})).collect();
    let context = json!({
        "messages": messages,
        "tools": if tools.is_empty() { None } else { Some(tools) },
        "add_generation_prompt": true,
        "bos_token": bos,
        "eos_token": eos,
    });
    let context = Value::deserialize(context).map_err(|e| EngineError::Template(e.to_string()))?;
    env.get_template("chat_template")
        .and_then(|t| t.render(context))
        .map_err(|e| EngineError::Template(format!("{e:#}")))
}

fn render_built_in(
    intro: &str,
    tools_block: ToolsBlock,
    messages: &[ChatMessage],
    tools: &[ToolDef],
) -> String {
    let mut out = String::from("[gMASK]<sop>");
    if !tools.is_empty() {
        match tools_block {
            ToolsBlock::Official => {
                out.push_str("<|system|>\n");
                out.push_str(intro);
                out.push_str("\n\n# 可用工具");
                for tool in tools {
                    let function = json!({"name": tool.name, "description": tool.description, "parameters": tool.parameters});
                    // One newline before `##`: the official templates render with
                    // trim_blocks, which eats the first of the two they write.
                    out.push_str(&format!(
                        "\n## {}\n\n{}\n{CALL_HINT}",
                        tool.name,
                        python_json(&function, Some(4))
                    ));
                }
            }
            ToolsBlock::Compact => {
                out.push_str("<|system|>\n# Tools");
                for tool in tools {
                    out.push_str(&format!(
                        "\n{}({}): {}",
                        tool.name,
                        compact_parameters(&tool.parameters),
                        first_clause(&tool.description)
                    ));
                }
            }
            // The model knows its tools from training; the decoding grammar still holds
            // its calls to the tools actually offered.
            ToolsBlock::None => {}
        }
    }
    for message in messages.iter().filter(|m| m.role == Role::System) {
        out.push_str("<|system|>\n");
        out.push_str(&message.content);
    }
    for message in messages.iter().filter(|m| m.role != Role::System) {
        match (&message.role, &message.tool_call) {
            (Role::Assistant, Some(call)) => {
                out.push_str("<|assistant|>");
                out.push_str(&call.name);
                out.push('\n');
                out.push_str(&python_json(
                    &serde_json::Value::Object(call.arguments.clone()),
                    None,
                ));
            }
            (role, _) => {
                out.push_str(match role {
                    Role::User => "<|user|>\n",
                    Role::Observation => "<|observation|>\n",
                    _ => "<|assistant|>\n",
                });
                out.push_str(&message.content);
            }
        }
    }
    out.push_str("<|assistant|>");
    out
}

/// The start of a description: up to its first full stop, colon or parenthesis, at most
/// twelve words.
fn first_clause(description: &str) -> String {
    // A sentence's worth: a small model reads the whole phrase ("Count the words,
    // characters and lines of a text"), and what follows a parenthesis or a colon is detail.
    let clause = description.split(['(', ':', ';', '.', '\n']).next().unwrap_or_default();
    clause.split_whitespace().take(12).collect::<Vec<_>>().join(" ").trim_end_matches(',').into()
}

/// `name: type` for each property, `?` marking the optional ones.
fn compact_parameters(schema: &serde_json::Value) -> String {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(|r| r.as_array())
        .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let Some(properties) = schema.get("properties").and_then(|p| p.as_object()) else {
        return String::new();
    };
    properties
        .iter()
        .map(|(name, prop)| {
            let kind = prop.get("type").and_then(|t| t.as_str()).unwrap_or("any");
            let optional = if required.contains(&name.as_str()) { "" } else { "?" };
            format!("{name}{optional}: {kind}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// JSON as Python's `json.dumps(value, ensure_ascii=False, indent=indent)` writes it: the
/// exact text GLM checkpoints were trained on (`", "` and `": "` separators).
pub fn python_json(value: &serde_json::Value, indent: Option<usize>) -> String {
    let mut out = Vec::new();
    let written = match indent {
        Some(n) => {
            let spaces = vec![b' '; n];
            let mut ser = serde_json::Serializer::with_formatter(
                &mut out,
                serde_json::ser::PrettyFormatter::with_indent(&spaces),
            );
            value.serialize(&mut ser)
        }
        None => {
            value.serialize(&mut serde_json::Serializer::with_formatter(&mut out, PythonSeparators))
        }
    };
    written.expect("serialising a JSON value into memory cannot fail");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

struct PythonSeparators;

impl serde_json::ser::Formatter for PythonSeparators {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

/// transformers' `tojson`: `json.dumps` with `indent`, `ensure_ascii` (default off) and
/// `sort_keys`, and no HTML escaping (minijinja's own filter escapes `<` and `>`).
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let _: Option<Value> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let mut json = serde_json::to_value(&value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    if sort_keys == Some(true) {
        json.sort_all_objects();
    }
    let text = python_json(&json, indent);
    let text = if ensure_ascii == Some(true) {
        // Outside strings JSON is ASCII, so escaping every non-ASCII character is exact.
        text.chars()
            .flat_map(|c| {
                if c.is_ascii() {
                    vec![c.to_string()]
                } else {
                    let mut units = [0u16; 2];
                    c.encode_utf16(&mut units).iter().map(|u| format!("\\u{u:04x}")).collect()
                }
            })
            .collect()
    } else {
        text
    };
    Ok(Value::from_safe_string(text))
}
