//! Conversations as token segments: the prompt the engine renders (compact tools block),
//! the model's turns (trained on), and tool results obtained by calling the real plugins.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use autoglm_engine::checkpoint::ToolsBlock;
use autoglm_engine::template::python_json;
use autoglm_engine::{Architecture, ChatMessage, ChatTemplate, Role, ToolCall, ToolDef};
use autoglm_host::app::{Host, Settings};
use autoglm_host::config::{Config, DirGrant, DirMode, PluginGrants};
use rand::Rng;
use serde_json::{Value, json};

use crate::data::{Generator, Split, answer_from_error, answer_from_result, direct_answer};

/// The sample plugins' tools as the model sees them, and the plugins to call.
pub struct Tools {
    /// Offered to the model, in the registry's order.
    pub defs: Vec<ToolDef>,
    /// Prompt name -> canonical id (`plugin.tool`).
    pub ids: HashMap<String, String>,
    host: Host,
    notes: tempfile::TempDir,
}

impl Tools {
    /// Load the plugins in `dir`, granting `notes` a scratch directory.
    pub async fn load(dir: &Path) -> anyhow::Result<Self> {
        let notes = tempfile::tempdir()?;
        let mut config = Config::default();
        config.plugins.insert(
            "notes".into(),
            PluginGrants {
                dirs: vec![DirGrant {
                    host: notes.path().to_path_buf(),
                    guest: "/notes".into(),
                    mode: DirMode::ReadWrite,
                    quota_mib: None,
                }],
                ..Default::default()
            },
        );
        let (host, errors) = Host::open(&Settings::new(config, dir)).await?;
        if let Some(e) = errors.first() {
            anyhow::bail!("plugin {} failed to load: {e}", e.plugin);
        }
        let pairs = host.invoker.router().tool_defs();
        anyhow::ensure!(
            !pairs.is_empty(),
            "no tools in {}; run `just plugins` first",
            dir.display()
        );
        let ids = pairs.iter().map(|(target, def)| (def.name.clone(), target.id())).collect();
        Ok(Self { defs: pairs.into_iter().map(|(_, d)| d).collect(), ids, host, notes })
    }
}

/// One training conversation: text segments, each trained on (the model's turns) or not.
pub type Conversation = Vec<(String, bool)>;

/// The renderer the demo model's config asks for.
pub fn template() -> ChatTemplate {
    ChatTemplate::built_in(Architecture::Glm4, ToolsBlock::None)
}

/// `count` conversations of `split`: a call, a call with its result and an answer, or a
/// direct answer.
pub async fn conversations(
    tools: &Tools,
    split: Split,
    seed: u64,
    count: usize,
) -> anyhow::Result<Vec<Conversation>> {
    let template = template();
    let mut generator = Generator::new(split, seed);
    let mut out = Vec::with_capacity(count);
    let bar = indicatif::ProgressBar::new(count as u64);
    for _ in 0..count {
        bar.inc(1);
        let request = generator.request();
        let user = ChatMessage::new(Role::User, request.text.clone());
        let prompt = template.render(std::slice::from_ref(&user), &tools.defs)?;
        let Some((name, arguments)) = request.call else {
            out.push(vec![
                (prompt, false),
                (format!("\n{}<|user|>", direct_answer(request.chinese)), true),
            ]);
            continue;
        };
        let call_text = format!(
            "{name}\n{}<|observation|>",
            python_json(&Value::Object(arguments.clone()), None)
        );
        if !generator.rng.random_bool(0.15) {
            out.push(vec![(prompt, false), (call_text, true)]);
            continue;
        }
        let id =
            tools.ids.get(&name).with_context(|| format!("no tool {name} among the plugins"))?;
        // Keep a handful of notes at most, so listing them gives a short result.
        if std::fs::read_dir(tools.notes.path())?.count() > 4 {
            for entry in std::fs::read_dir(tools.notes.path())? {
                std::fs::remove_file(entry?.path())?;
            }
        }
        let (observation, answer) =
            match tools.host.call(id, &Value::Object(arguments.clone())).await.outcome {
                Ok(result) => {
                    let answer = answer_from_result(&name, &arguments, &result, request.chinese);
                    (python_json(&result, None), answer)
                }
                Err(e) => {
                    let error =
                        json!({"error": {"kind": e.kind.to_string(), "message": e.message}});
                    (
                        python_json(&error, None),
                        answer_from_error(&name, &e.kind.to_string(), request.chinese),
                    )
                }
            };
        let history = [
            user,
            ChatMessage::tool_call(ToolCall { name, arguments }),
            ChatMessage::new(Role::Observation, observation),
        ];
        let full = template.render(&history, &tools.defs)?;
        // The history's rendering is the prompt, the call, then the observation turn.
        let observed = full
            .strip_prefix(&prompt)
            .and_then(|rest| rest.split_once("<|observation|>"))
            .map(|(_, o)| o);
        let observed = observed.context("the rendered history does not extend the prompt")?;
        out.push(vec![
            (prompt, false),
            (call_text, true),
            (observed.to_string(), false),
            (format!("\n{answer}<|user|>"), true),
        ]);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Write `count` held-out cases as JSON lines: `{"messages": [...], "expected": {...} | null}`.
pub fn write_heldout(tools: &Tools, path: &Path, seed: u64, count: usize) -> anyhow::Result<()> {
    let mut generator = Generator::new(Split::Heldout, seed);
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    for _ in 0..count {
        let request = generator.request();
        let expected = match request.call {
            Some((name, arguments)) => {
                let id = tools.ids.get(&name).with_context(|| format!("no tool {name}"))?;
                json!({"name": id, "arguments": arguments})
            }
            None => Value::Null,
        };
        let case =
            json!({"messages": [{"role": "user", "content": request.text}], "expected": expected});
        writeln!(file, "{}", serde_json::to_string(&case)?)?;
    }
    file.flush()?;
    Ok(())
}
