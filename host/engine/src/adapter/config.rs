//! `adapter_config.json` as PEFT writes it for a LoRA adapter. The keys that change what the
//! adapter computes are read and checked; a key asking for something this engine does not
//! compute (DoRA, per-module ranks, trained biases, whole-module copies) is refused by name,
//! since ignoring it would run a different model. Keys that only describe training
//! (`lora_dropout`, `task_type`, `inference_mode`, ...) are ignored.

use serde::Deserialize;
use serde_json::Value;

/// The modules a LoRA may target here, by their Hugging Face names.
pub const MODULES: &str =
    "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, gate_up_proj, down_proj and lm_head";

/// The parts of `adapter_config.json` the engine reads.
#[derive(Debug, Clone, Deserialize)]
pub struct AdapterConfig {
    /// PEFT's adapter kind; only `LORA` is applied.
    #[serde(default)]
    pub peft_type: Option<String>,
    /// The rank of every A/B pair.
    #[serde(default = "default_rank")]
    pub r: usize,
    /// The numerator of the scale.
    #[serde(default = "default_alpha")]
    pub lora_alpha: f64,
    /// Which modules carry a LoRA: a list of names, or (refused) a regular expression.
    #[serde(default)]
    pub target_modules: Option<TargetModules>,
    /// Scale by alpha/sqrt(r) instead of alpha/r.
    #[serde(default)]
    pub use_rslora: bool,
    /// Whether the base stores weights `[in, out]` (GPT-2's Conv1D); GLM's are `[out, in]`.
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// Which biases were trained: only `none` is applied.
    #[serde(default = "default_bias")]
    pub bias: String,
    /// Modules saved whole beside the LoRA pairs.
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    /// The model the adapter was trained on, for the log.
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// The layers that carry the LoRA pairs (all when absent).
    #[serde(default)]
    pub layers_to_transform: Option<Layers>,
    #[serde(default)]
    use_dora: Value,
    #[serde(default)]
    lora_bias: Value,
    #[serde(default)]
    rank_pattern: Value,
    #[serde(default)]
    alpha_pattern: Value,
    #[serde(default)]
    layer_replication: Value,
    #[serde(default)]
    exclude_modules: Value,
    #[serde(default)]
    target_parameters: Value,
    #[serde(default)]
    trainable_token_indices: Value,
}

/// `target_modules`: PEFT takes a list of module names or one regular expression.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    /// Module names, matched against the last part of each module's path.
    List(Vec<String>),
    /// A regular expression over whole module paths (or `all-linear`).
    Pattern(String),
}

/// `layers_to_transform`: one layer index or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Layers {
    /// One layer.
    One(usize),
    /// Several layers.
    Many(Vec<usize>),
}

fn default_rank() -> usize {
    8
}
fn default_alpha() -> f64 {
    8.0
}
fn default_bias() -> String {
    "none".into()
}

/// Whether a JSON value leaves its option at PEFT's default (absent, null, false, empty).
fn inert(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

impl AdapterConfig {
    /// The factor the side path `B A x` is multiplied by.
    pub fn scale(&self) -> f64 {
        let rank = self.r as f64;
        if self.use_rslora { self.lora_alpha / rank.sqrt() } else { self.lora_alpha / rank }
    }

    /// The target module names, once [`AdapterConfig::problems`] found none.
    pub fn targets(&self) -> &[String] {
        match &self.target_modules {
            Some(TargetModules::List(names)) => names,
            _ => &[],
        }
    }

    /// The layers the pairs are in, of `layers` in the model.
    pub fn layers(&self, layers: usize) -> Vec<usize> {
        match &self.layers_to_transform {
            None => (0..layers).collect(),
            Some(Layers::One(n)) => vec![*n],
            Some(Layers::Many(ns)) => ns.clone(),
        }
    }

    /// Everything in the file this engine cannot apply, one line each.
    pub fn problems(&self, known: impl Fn(&str) -> bool, layers: usize) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(kind) = self.peft_type.as_deref().filter(|k| *k != "LORA") {
            problems.push(format!("peft_type is {kind:?}; this engine applies LORA adapters only"));
        }
        if self.r == 0 {
            problems.push("r must be at least 1".into());
        }
        if !self.lora_alpha.is_finite() {
            problems.push(format!("lora_alpha {} is not a number", self.lora_alpha));
        }
        match &self.target_modules {
            None => {
                problems.push(format!("target_modules is missing; list the modules ({MODULES})"))
            }
            Some(TargetModules::Pattern(pattern)) => problems.push(format!(
                "target_modules is the pattern {pattern:?}; this engine takes a list of module \
                 names (of {MODULES}): write the modules it matches out as a list"
            )),
            Some(TargetModules::List(names)) => {
                if names.is_empty() {
                    problems.push("target_modules is empty".into());
                }
                for name in names.iter().filter(|n| !known(n)) {
                    problems.push(format!(
                        "target_modules: unknown module {name:?}; this engine applies LoRA to \
                         {MODULES}"
                    ));
                }
            }
        }
        for n in self.layers(layers).into_iter().filter(|&n| n >= layers) {
            problems.push(format!(
                "layers_to_transform names layer {n} but the model has {layers} layers"
            ));
        }
        if self.fan_in_fan_out {
            problems.push(
                "fan_in_fan_out is true, which is for GPT-2's Conv1D layers; GLM's layers are \
                 Linear: train with fan_in_fan_out=false"
                    .into(),
            );
        }
        if self.bias != "none" {
            problems.push(format!(
                "bias is {:?}: the adapter carries trained biases, which this engine does not \
                 add; train with bias=\"none\"",
                self.bias
            ));
        }
        if let Some(modules) = self.modules_to_save.as_ref().filter(|m| !m.is_empty()) {
            problems.push(format!(
                "modules_to_save ({}) replaces whole modules with trained copies, which this \
                 engine does not load; merge the adapter into the model instead (PEFT's \
                 merge_and_unload), or add tokens with added_tokens.json",
                modules.join(", ")
            ));
        }
        let unsupported = [
            ("use_dora", &self.use_dora, "DoRA's magnitude vectors are not applied"),
            ("lora_bias", &self.lora_bias, "LoRA B biases are not applied"),
            ("rank_pattern", &self.rank_pattern, "per-module ranks are not implemented"),
            ("alpha_pattern", &self.alpha_pattern, "per-module alphas are not implemented"),
            ("layer_replication", &self.layer_replication, "layer replication is not implemented"),
            ("exclude_modules", &self.exclude_modules, "module exclusion is not implemented"),
            ("target_parameters", &self.target_parameters, "parameter targets are not implemented"),
            (
                "trainable_token_indices",
                &self.trainable_token_indices,
                "PEFT's trainable tokens are not read; add tokens with added_tokens.json and \
                 an added_embeddings tensor",
            ),
        ];
        for (key, value, why) in unsupported {
            if !inert(value) {
                problems.push(format!("{key} is set ({value}): {why}"));
            }
        }
        problems
    }
}
