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
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::data::{
    Generator, Invented, Request, Split, answer_from_error, answer_from_result, direct_answer,
};

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
        config.plugins.grants.insert(
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

/// The plugin kept out of training altogether: the held-out split asks for its tool, which
/// the model has then only read about in the tools block.
pub const HELD_OUT_PLUGIN: &str = "http";

impl Tools {
    /// The tools training offers: all but the held-out plugin's.
    fn trained(&self) -> Vec<ToolDef> {
        let held = format!("{HELD_OUT_PLUGIN}.");
        self.defs.iter().filter(|d| !self.ids[&d.name].starts_with(&held)).cloned().collect()
    }
}

/// One training conversation: text segments, each trained on (the model's turns) or not.
pub type Conversation = Vec<(String, bool)>;

/// The renderer the demo model's config asks for: GLM-4's, with the compact tools block.
pub fn template() -> ChatTemplate {
    ChatTemplate::built_in(Architecture::Glm4, ToolsBlock::Compact)
}

/// The tools offered with one training request: the trained tools in a random order, often
/// a random subset and a few invented ones, always `needed` (a tool the request calls).
fn offer(
    tools: &[ToolDef],
    needed: Option<&ToolDef>,
    rng: &mut StdRng,
    generator: &mut Generator,
) -> Vec<ToolDef> {
    let mut offered: Vec<ToolDef> = if rng.random_bool(0.3) {
        tools.iter().filter(|_| rng.random_bool(0.5)).cloned().collect()
    } else {
        tools.to_vec()
    };
    if rng.random_bool(0.5) {
        for _ in 0..rng.random_range(1..=3) {
            let (decoy, _) = generator.invented();
            offered.push(invented_def(&decoy));
        }
    }
    if let Some(needed) = needed {
        offered.retain(|d| d.name != needed.name);
        offered.push(needed.clone());
    }
    offered.shuffle(rng);
    offered
}

fn invented_def(tool: &Invented) -> ToolDef {
    ToolDef {
        name: tool.name.clone(),
        description: tool.description.clone(),
        parameters: json!({
            "type": "object",
            "properties": {&tool.param: {"type": "string"}},
            "required": [&tool.param],
        }),
    }
}

/// The base model's own answers to the questions that need no tool (English), so that
/// training keeps its voice: generated once with its own chat template, greedy, and cached
/// in `cache`.
pub fn distill(
    base: &Path,
    prompts: &[&str],
    cache: &Path,
) -> anyhow::Result<HashMap<String, String>> {
    let mut answers: HashMap<String, String> = std::fs::read_to_string(cache)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    let missing: Vec<&str> =
        prompts.iter().copied().filter(|p| !answers.contains_key(*p)).collect();
    if !missing.is_empty() {
        eprintln!("self-distillation: the base answers {} questions", missing.len());
        let engine =
            autoglm_engine::Engine::load(base, autoglm_engine::DeviceChoice::Cpu, |_, _| {})?;
        let params = autoglm_engine::SamplingParams::greedy(96);
        let bar = indicatif::ProgressBar::new(missing.len() as u64);
        for prompt in missing {
            let rendered =
                engine.render(&[ChatMessage::new(Role::User, prompt.to_string())], &[])?;
            let text = engine.generate(&rendered, &params, |_| {})?.text;
            answers.insert(prompt.to_string(), text);
            bar.inc(1);
        }
        bar.finish_and_clear();
        std::fs::write(cache, serde_json::to_string_pretty(&answers)?)?;
    }
    Ok(answers.into_iter().map(|(prompt, answer)| (prompt, whole_sentences(&answer))).collect())
}

/// The first two sentences of the first paragraph of `text`: short answers, cut where the
/// length limit did not, and before the small base starts to repeat itself.
fn whole_sentences(text: &str) -> String {
    let paragraph = text.split("\n\n").next().unwrap_or_default().trim();
    let mut end = 0;
    for (n, (i, _)) in paragraph.match_indices(['.', '!', '?']).enumerate() {
        end = i + 1;
        if n == 1 {
            break;
        }
    }
    if end == 0 { paragraph.to_string() } else { paragraph[..end].to_string() }
}

/// `count` conversations of the training split: a call, a call with its result and an
/// answer, or a direct answer (the base's own where `distilled` has it).
pub async fn conversations(
    tools: &Tools,
    distilled: &HashMap<String, String>,
    seed: u64,
    count: usize,
) -> anyhow::Result<Vec<Conversation>> {
    let template = template();
    let trained = tools.trained();
    let mut generator = Generator::new(Split::Train, seed);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x7001);
    let mut out = Vec::with_capacity(count);
    let bar = indicatif::ProgressBar::new(count as u64);
    for _ in 0..count {
        bar.inc(1);
        let (request, invented) = if rng.random_bool(0.18) {
            let (tool, (text, call)) = generator.invented();
            (Request { text, call, chinese: false }, Some(invented_def(&tool)))
        } else {
            (generator.request(), None)
        };
        let needed = match (&invented, &request.call) {
            (Some(def), _) => Some(def.clone()),
            (None, Some((name, _))) => trained.iter().find(|d| &d.name == name).cloned(),
            (None, None) => None,
        };
        let offered = offer(&trained, needed.as_ref(), &mut rng, &mut generator);
        let user = ChatMessage::new(Role::User, request.text.clone());
        let prompt = template.render(std::slice::from_ref(&user), &offered)?;
        let Some((name, arguments)) = request.call else {
            let answer =
                distilled.get(&request.text).map_or(direct_answer(request.chinese), String::as_str);
            out.push(vec![(prompt, false), (format!("\n{answer}<|user|>"), true)]);
            continue;
        };
        let call_text = format!(
            "{name}\n{}<|observation|>",
            python_json(&Value::Object(arguments.clone()), None)
        );
        if invented.is_some() || !rng.random_bool(0.35) {
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
                Err(e) => (
                    python_json(&e.observation(), None),
                    answer_from_error(&name, e.kind.as_str(), request.chinese),
                ),
            };
        let history = [
            user,
            ChatMessage::tool_call(ToolCall { name, arguments }),
            ChatMessage::new(Role::Observation, observation),
        ];
        let full = template.render(&history, &offered)?;
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
        let mut unseen = false;
        let expected = match request.call {
            Some((name, arguments)) => {
                let id = tools.ids.get(&name).with_context(|| format!("no tool {name}"))?;
                unseen = id.starts_with(&format!("{HELD_OUT_PLUGIN}."));
                json!({"name": id, "arguments": arguments})
            }
            None => Value::Null,
        };
        let language = if request.chinese { "zh" } else { "en" };
        let case = json!({
            "messages": [{"role": "user", "content": request.text}],
            "expected": expected,
            "language": language,
            "unseen": unseen,
        });
        writeln!(file, "{}", serde_json::to_string(&case)?)?;
    }
    file.flush()?;
    Ok(())
}
