//! `config.json` of a GLM-4 family checkpoint: the architecture and the shapes it implies.

use std::path::Path;

use serde::Deserialize;

use crate::EngineError;

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
