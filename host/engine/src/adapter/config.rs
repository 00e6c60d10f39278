//! `adapter_config.json` as PEFT writes it for a LoRA adapter. The keys that change what the
//! adapter computes are read and checked; a key asking for something this engine does not
//! compute (DoRA, per-module ranks, trained biases, whole-module copies) is refused by name,
//! since ignoring it would run a different model. Keys that only describe training
//! ([`HARMLESS`]) are ignored; any other key is refused by name unless it is left at PEFT's
//! default (null, false or empty), since a PEFT newer than this engine may add an option
//! that changes what the adapter computes.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;
use serde_json::Value;

/// The modules a LoRA may target here, by their Hugging Face names.
pub const MODULES: &str =
    "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, gate_up_proj, down_proj and lm_head";

/// Keys of `adapter_config.json` (PEFT 0.13 to 0.18) that do not change what a saved adapter
/// computes, whatever their value: training, initialisation and provenance settings.
/// `init_lora_weights` is among them except for the initialisations that rewrite the base
/// ([`init_rewrites_base`]).
const HARMLESS: [&str; 16] = [
    "task_type",
    "base_model_name_or_path",
    "revision",
    "peft_version",
    "inference_mode",
    "auto_mapping",
    "lora_dropout",
    "init_lora_weights",
    "layers_pattern",
    "megatron_config",
    "megatron_core",
    "loftq_config",
    "eva_config",
    "corda_config",
    // Read only with use_qalora, which is refused when set.
    "qalora_group_size",
    "runtime_config",
];

/// Keys PEFT writes whose non-default values ask for computation this engine lacks, and why.
const UNSUPPORTED: [(&str, &str); 11] = [
    ("use_dora", "DoRA's magnitude vectors are not applied"),
    ("lora_bias", "LoRA B biases are not applied"),
    ("rank_pattern", "per-module ranks are not implemented"),
    ("alpha_pattern", "per-module alphas are not implemented"),
    ("layer_replication", "layer replication is not implemented"),
    ("exclude_modules", "module exclusion is not implemented"),
    ("target_parameters", "parameter targets are not implemented"),
    (
        "trainable_token_indices",
        "PEFT's trainable tokens are not read; add tokens with added_tokens.json and an \
         added_embeddings tensor",
    ),
    ("use_qalora", "QA-LoRA's pooled inputs are not implemented"),
    (
        "alora_invocation_tokens",
        "activated LoRA (applied after invocation tokens) is not implemented",
    ),
    ("arrow_config", "Arrow routing between adapters is not implemented"),
];

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
    /// Every other key, checked against [`HARMLESS`] and [`UNSUPPORTED`].
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

/// `target_modules`: PEFT takes a list of module names or one regular expression.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "target_modules must be a list of module names, such as [\"q_proj\", \"v_proj\"]"
)]
pub enum TargetModules {
    /// Module names, matched against the last part of each module's path.
    List(Vec<String>),
    /// A regular expression over whole module paths (or `all-linear`).
    Pattern(String),
}

/// `layers_to_transform`: one layer index or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "layers_to_transform must be a layer index or a list of them, such as [0, 1]"
)]
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

/// The largest scale taken as meant: past it, half-precision side paths overflow and the
/// adapter would drown the base.
const MAX_SCALE: f64 = 1e4;

/// Whether `init_lora_weights` names an initialisation that subtracts the first A/B product
/// from the base weights (PiSSA, OLoRA, CorDA) or replaces them (LoftQ): such an adapter fits
/// only the base saved with it, unless PEFT converted it when saving (which writes `true`).
fn init_rewrites_base(value: &Value) -> bool {
    let Some(name) = value.as_str() else { return false };
    name.starts_with("pissa") || ["olora", "corda", "loftq"].contains(&name)
}

/// The values listed more than once in `items`, each once, in order.
fn repeated<T: std::hash::Hash + Eq + Clone>(items: &[T]) -> Vec<T> {
    let (mut seen, mut twice) = (HashSet::new(), Vec::new());
    for item in items {
        if !seen.insert(item) && !twice.contains(item) {
            twice.push(item.clone());
        }
    }
    twice
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
        let scale = self.scale();
        if self.r > 0 && !(scale.is_finite() && scale.abs() <= MAX_SCALE) {
            problems.push(format!(
                "lora_alpha {} gives a scale of {scale} (lora_alpha / {}r); it must be a finite \
                 number that keeps the scale within ±{MAX_SCALE}",
                self.lora_alpha,
                if self.use_rslora { "sqrt " } else { "" }
            ));
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
                for name in repeated(names) {
                    problems.push(format!(
                        "target_modules lists {name:?} more than once, which would add its \
                         pairs twice; list it once"
                    ));
                }
                let has = |name: &str| names.iter().any(|n| n == name);
                if has("gate_up_proj") && (has("gate_proj") || has("up_proj")) {
                    problems.push(
                        "target_modules lists gate_up_proj beside gate_proj or up_proj, which \
                         are its halves, so their rows would be adapted twice"
                            .into(),
                    );
                }
                if has("lm_head") && self.layers_to_transform.is_some() {
                    problems.push(
                        "target_modules lists lm_head but layers_to_transform is set: the two \
                         conflict, since PEFT then adapts only modules inside the listed layers \
                         and lm_head is in none; remove one of them"
                            .into(),
                    );
                }
            }
        }
        let chosen = self.layers(layers);
        for n in chosen.iter().filter(|&&n| n >= layers) {
            problems.push(format!(
                "layers_to_transform names layer {n} but the model has {layers} layers"
            ));
        }
        for n in repeated(&chosen) {
            problems.push(format!(
                "layers_to_transform lists layer {n} more than once, which would add its pairs \
                 twice; list it once"
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
        if let Some(init) = self.other.get("init_lora_weights").filter(|v| init_rewrites_base(v)) {
            problems.push(format!(
                "init_lora_weights is {init}: that initialisation rewrites the base weights, so \
                 the adapter fits only the base saved with it; save it with PEFT's \
                 path_initial_model_for_weight_conversion to get an adapter of the original base"
            ));
        }
        for (key, value) in &self.other {
            if HARMLESS.contains(&key.as_str()) || inert(value) {
                continue;
            }
            let why = UNSUPPORTED.iter().find(|(k, _)| k == key).map_or(
                "this engine does not know the option, and applying the adapter without it \
                 could compute another model; remove the key if it does not change inference",
                |(_, why)| why,
            );
            problems.push(format!("{key} is set ({value}): {why}"));
        }
        problems
    }
}
