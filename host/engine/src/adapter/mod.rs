//! LoRA adapters in PEFT's format: a directory of `adapter_config.json` and
//! `adapter_model.safetensors`, applied at inference as a low-rank side path
//! `y = W x + scale · B (A x)` beside each adapted matrix ([`Matrix::LowRank`]), so a
//! quantized base stays quantized. `scale` is `lora_alpha / r` (`lora_alpha / sqrt(r)` with
//! `use_rslora`).
//!
//! Every tensor is checked against the base model before anything is loaded, and all
//! problems are listed at once: a missing or mis-shaped pair, a rank that is not `r`, an
//! unknown target module, a tensor that matches no targeted module.
//!
//! Tokens are added with a format of this project's own, beside PEFT's files:
//! `added_tokens.json`, a JSON list of the new tokens' strings, and in
//! `adapter_model.safetensors` the tensor `added_embeddings` `[n, hidden]` (and
//! `added_lm_head` `[n, hidden]` where the base's head is not tied to its embedding). The
//! new tokens take ids from the base's embedding rows on, so the base's rows stay as they
//! are; where the base's tokenizer has fewer tokens than embedding rows, unused
//! placeholders fill the gap ([`GlmTokenizer::with_added_tokens`]).
//!
//! A PEFT adapter is trained on the Hugging Face model, so its `q_proj` and `k_proj` output
//! rows are in Hugging Face's order. llama.cpp's converter reorders those rows in a `llama`
//! GGUF ([`QkRows::LlamaCpp`]), and the engine runs the file's matrices as stored, so the
//! adapter's B rows are reordered the same way before they meet such a base.

pub mod config;
mod source;

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::EngineError;
use crate::checkpoint::ModelConfig;
use crate::model::{LayerWeight, Matrix, Weight};
use crate::tokenizer::GlmTokenizer;
use config::AdapterConfig;
pub use source::Adapted;

/// The adapter's settings.
const CONFIG: &str = "adapter_config.json";
/// The adapter's tensors.
const WEIGHTS: &str = "adapter_model.safetensors";
/// The strings of the tokens the adapter adds.
const ADDED_TOKENS: &str = "added_tokens.json";
/// The added tokens' embedding rows `[n, hidden]`.
const ADDED_EMBEDDINGS: &str = "added_embeddings";
/// The added tokens' head rows `[n, hidden]`, for a base whose head is its own matrix.
const ADDED_HEAD: &str = "added_lm_head";

/// The order of the base's Q and K rows, which the adapter's B rows must follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkRows {
    /// Hugging Face's, as the adapter was trained on: safetensors checkpoints and `glm4`
    /// GGUFs.
    Hf,
    /// llama.cpp's for a `llama` GGUF (convert_hf_to_gguf.py, `LlamaModel.permute`): within
    /// each head, channel `c` of the first half moves to row `2c` and of the second half to
    /// `2c + 1`, over the query heads for Q and the key/value heads for K.
    LlamaCpp,
}

/// Where a target module lands in the model: the weight it adds to, the rows of that
/// weight's output it adds to, the widths of its input and of the weight's whole output, and
/// the heads its B rows are reordered over ([`QkRows::LlamaCpp`]).
#[derive(Debug, Clone)]
struct Landing {
    weight: Weight,
    rows: Range<usize>,
    inputs: usize,
    outputs: usize,
    permute_heads: Option<usize>,
}

/// The widths a module's shape is made of, the vocabulary with the added tokens, and the
/// base's row order.
struct Dims {
    hidden: usize,
    inner: usize,
    heads: usize,
    kv_heads: usize,
    queries: usize,
    keys: usize,
    vocab: usize,
    qk_rows: QkRows,
}

/// Where `module` of `layer` lands; None for a name no module of this model has. The fused
/// `gate_up` matrix holds gate rows first, so `gate_proj` and `up_proj` add to its halves.
fn landing(module: &str, layer: usize, d: &Dims) -> Option<Landing> {
    use LayerWeight::*;
    let (h, i) = (d.hidden, d.inner);
    let permuted = |heads| (d.qk_rows == QkRows::LlamaCpp).then_some(heads);
    let mut permute_heads = None;
    let (part, rows, inputs, outputs) = match module {
        "lm_head" => {
            return Some(Landing {
                weight: Weight::Head,
                rows: 0..d.vocab,
                inputs: h,
                outputs: d.vocab,
                permute_heads,
            });
        }
        "q_proj" => {
            permute_heads = permuted(d.heads);
            (Q, 0..d.queries, h, d.queries)
        }
        "k_proj" => {
            permute_heads = permuted(d.kv_heads);
            (K, 0..d.keys, h, d.keys)
        }
        "v_proj" => (V, 0..d.keys, h, d.keys),
        "o_proj" => (O, 0..h, d.queries, h),
        "gate_proj" => (GateUp, 0..i, h, 2 * i),
        "up_proj" => (GateUp, i..2 * i, h, 2 * i),
        "gate_up_proj" => (GateUp, 0..2 * i, h, 2 * i),
        "down_proj" => (Down, 0..h, i, h),
        _ => return None,
    };
    Some(Landing { weight: Weight::Layer(layer, part), rows, inputs, outputs, permute_heads })
}

/// PEFT's name of `module`'s tensors, without `.lora_A.weight` / `.lora_B.weight`.
fn peft_name(module: &str, layer: usize) -> String {
    let block = match module {
        "lm_head" => return "base_model.model.lm_head".into(),
        "q_proj" | "k_proj" | "v_proj" | "o_proj" => "self_attn",
        _ => "mlp",
    };
    format!("base_model.model.model.layers.{layer}.{block}.{module}")
}

/// One targeted module: its pair's tensor names and where it lands.
struct Site {
    a: String,
    b: String,
    landing: Landing,
}

/// The tokens an adapter adds, with their rows.
struct AddedTokens {
    tokens: Vec<String>,
    embeddings: Tensor,
    /// Head rows, where the base's head is its own matrix.
    head: Option<Tensor>,
}

/// A LoRA adapter checked against a base model and loaded, ready to wrap its weights.
pub struct Adapter {
    dir: PathBuf,
    config: AdapterConfig,
    /// Per adapted weight, all its pairs as one: `down` `[Σr, in]` and the scaled `up`
    /// `[out, Σr]`, each pair's rows in its part of the output and zero elsewhere.
    low_rank: HashMap<Weight, (Tensor, Tensor)>,
    added: Option<AddedTokens>,
    base_vocab: usize,
    parameters: usize,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter")
            .field("dir", &self.dir)
            .field("matrices", &self.low_rank.len())
            .field("added_tokens", &self.added_tokens().len())
            .finish()
    }
}

impl Adapter {
    /// Read the adapter in `dir`, check every tensor against a model of `base` whose Q and K
    /// rows are in the order `qk_rows`, and load the tensors as `dtype` on `device`.
    pub fn open(
        dir: &Path,
        base: &ModelConfig,
        qk_rows: QkRows,
        device: &Device,
        dtype: DType,
    ) -> Result<Self, EngineError> {
        let config = read_config(dir)?;
        let tokens = read_added_tokens(dir)?;
        let weights = dir.join(WEIGHTS);
        if !present(&weights, "the adapter's weights (adapter_model.safetensors)")? {
            let why = if present(&dir.join("adapter_model.bin"), "adapter_model.bin")? {
                "the adapter's weights: adapter_model.bin is a pickle, which is not read; save \
                 the adapter with safe_serialization=True"
            } else {
                "the adapter's weights (adapter_model.safetensors)"
            };
            return Err(EngineError::MissingFile {
                path: weights,
                what: why,
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        let fail = |problems| EngineError::Adapter { path: dir.to_path_buf(), problems };
        // SAFETY: mapped read-only, as the base's safetensors are (see `weights::open`).
        let mapped = unsafe { MmapedSafetensors::new(&weights) }
            .map_err(|e| fail(vec![format!("cannot read {WEIGHTS}: {e}")]))?;
        let added = tokens.as_ref().map_or(0, Vec::len);
        // The grown vocabulary goes through the same caps as the base's, so that no width
        // below wraps.
        let mut grown = base.clone();
        grown.vocab_size = base.vocab_size.saturating_add(added);
        grown.check().map_err(|e| fail(vec![format!("the base with the added tokens: {e}")]))?;
        let dims = Dims {
            hidden: base.hidden_size,
            inner: base.intermediate_size,
            heads: base.num_attention_heads,
            kv_heads: base.kv_heads(),
            queries: base.num_attention_heads * base.head_dim(),
            keys: base.kv_heads() * base.head_dim(),
            vocab: grown.vocab_size,
            qk_rows,
        };
        let layers = base.num_hidden_layers;
        let mut problems = config.problems(|m| landing(m, 0, &dims).is_some(), layers);
        let sites = sites(&config, &dims, layers);

        let found: HashMap<String, (Vec<usize>, safetensors::Dtype)> = mapped
            .tensors()
            .into_iter()
            .map(|(name, view)| (name, (view.shape().to_vec(), view.dtype())))
            .collect();
        let r = config.r;
        let mut expected: Vec<(String, Vec<usize>)> = Vec::new();
        for site in &sites {
            expected.push((site.a.clone(), vec![r, site.landing.inputs]));
            expected.push((site.b.clone(), vec![site.landing.rows.len(), r]));
        }
        if tokens.is_some() {
            expected.push((ADDED_EMBEDDINGS.into(), vec![added, dims.hidden]));
            if !base.tie_word_embeddings {
                expected.push((ADDED_HEAD.into(), vec![added, dims.hidden]));
            }
        }
        for (name, shape) in &expected {
            problems.extend(check_tensor(name, shape, found.get(name), r));
        }
        let known: HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
        let mut unmatched: Vec<&String> =
            found.keys().filter(|n| !known.contains(n.as_str())).collect();
        unmatched.sort();
        for name in unmatched {
            problems.push(unmatched_problem(name, &config, tokens.is_some(), base));
        }
        if !problems.is_empty() {
            return Err(fail(problems));
        }

        let load_as = |name: &str, dtype: DType| -> Result<Tensor, EngineError> {
            let tensor = mapped.load(name, device).and_then(|t| t.to_dtype(dtype));
            tensor.map_err(|e| fail(vec![format!("{name}: cannot load it: {e}")]))
        };
        let load = |name: &str| load_as(name, dtype);
        let scale = config.scale();
        let mut pairs: HashMap<Weight, Vec<(Landing, Tensor, Tensor)>> = HashMap::new();
        for site in &sites {
            // Scaled in f32 and only then rounded to the load dtype: scaling a half-precision
            // B would round twice, and could overflow where B times the scale still fits.
            let mut b = load_as(&site.b, DType::F32)?;
            if let Some(heads) = site.landing.permute_heads {
                b = llama_cpp_rows(&b, heads)
                    .map_err(|e| fail(vec![format!("{}: cannot reorder its rows: {e}", site.b)]))?;
            }
            let b = (b * scale)?.to_dtype(dtype)?;
            let entry = pairs.entry(site.landing.weight).or_default();
            entry.push((site.landing.clone(), load(&site.a)?, b));
        }
        let parameters = expected.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        let mut low_rank = HashMap::new();
        for (weight, parts) in pairs {
            low_rank.insert(weight, combine(&parts)?);
        }
        let added = match tokens {
            None => None,
            Some(tokens) => Some(AddedTokens {
                tokens,
                embeddings: load(ADDED_EMBEDDINGS)?,
                head: if base.tie_word_embeddings { None } else { Some(load(ADDED_HEAD)?) },
            }),
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            low_rank,
            added,
            base_vocab: base.vocab_size,
            parameters,
        })
    }

    /// The strings of the tokens the adapter adds, in id order.
    pub fn added_tokens(&self) -> &[String] {
        self.added.as_ref().map_or(&[], |a| a.tokens.as_slice())
    }

    /// Parameters in the adapter's tensors.
    pub fn parameters(&self) -> usize {
        self.parameters
    }

    /// The configuration of the adapted model: the base's, its vocabulary grown by the
    /// added tokens.
    pub fn model_config(&self, base: &ModelConfig) -> ModelConfig {
        let mut config = base.clone();
        config.vocab_size = self.base_vocab + self.added_tokens().len();
        config
    }

    /// `tokenizer` (the base's) with the added tokens at the ids after the base's rows.
    pub fn tokenizer(&self, tokenizer: GlmTokenizer) -> Result<GlmTokenizer, EngineError> {
        if self.added_tokens().is_empty() {
            return Ok(tokenizer);
        }
        tokenizer.with_added_tokens(self.added_tokens(), self.base_vocab)
    }

    /// The base's weights from `inner`, with the adapter's pairs and rows added.
    pub fn source<S>(&self, inner: S) -> Adapted<'_, S> {
        Adapted::new(inner, self)
    }

    /// For logs and [`crate::ModelInfo::format`]: where the adapter is and what it adapts.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "LoRA {} (r={}, scale {}) on {} matrices",
            self.dir.display(),
            self.config.r,
            self.config.scale(),
            self.low_rank.len()
        );
        if let Some(base) = &self.config.base_model_name_or_path {
            text.push_str(&format!(", trained on {base:?}"));
        }
        if !self.added_tokens().is_empty() {
            text.push_str(&format!(", {} added tokens", self.added_tokens().len()));
        }
        text
    }

    /// `base` with the side path of `weight`'s pairs, if the adapter has any.
    fn wrap(&self, weight: Weight, base: Matrix) -> Matrix {
        match self.low_rank.get(&weight) {
            Some((down, up)) => {
                Matrix::LowRank { base: Box::new(base), down: down.clone(), up: up.clone() }
            }
            None => base,
        }
    }
}

fn read_config(dir: &Path) -> Result<AdapterConfig, EngineError> {
    let path = dir.join(CONFIG);
    let text = std::fs::read_to_string(&path).map_err(|e| EngineError::MissingFile {
        path: path.clone(),
        what: "the adapter's configuration (a PEFT adapter directory holds adapter_config.json)",
        source: e,
    })?;
    serde_json::from_str(&text).map_err(|e| EngineError::Config { path, message: e.to_string() })
}

/// Whether something is at `path`. A symbolic link to nothing is not taken for an absent file
/// (which would skip it, or blame the link): it is reported with the missing target, as
/// `what`.
fn present(path: &Path, what: &'static str) -> Result<bool, EngineError> {
    match path.symlink_metadata() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(EngineError::MissingFile { path: path.to_path_buf(), what, source }),
        Ok(_) => match path.metadata() {
            Ok(_) => Ok(true),
            Err(source) => {
                let target = std::fs::read_link(path).ok();
                let target = target.map(|t| path.parent().unwrap_or(Path::new("")).join(t));
                Err(EngineError::MissingFile {
                    path: target.unwrap_or_else(|| path.to_path_buf()),
                    what,
                    source,
                })
            }
        },
    }
}

/// The strings of `added_tokens.json`, if the adapter has one.
fn read_added_tokens(dir: &Path) -> Result<Option<Vec<String>>, EngineError> {
    let path = dir.join(ADDED_TOKENS);
    if !present(&path, "the adapter's added tokens")? {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| EngineError::MissingFile {
        path: path.clone(),
        what: "the adapter's added tokens",
        source: e,
    })?;
    let invalid = |message: String| EngineError::Config { path: path.clone(), message };
    let tokens: Vec<String> = serde_json::from_str(&text)
        .map_err(|e| invalid(format!("expected a JSON list of token strings: {e}")))?;
    if tokens.is_empty() {
        return Err(invalid("the list is empty; remove the file to add no tokens".into()));
    }
    let mut seen = HashSet::new();
    if let Some(token) = tokens.iter().find(|t| t.is_empty() || !seen.insert(t.as_str())) {
        return Err(invalid(format!("{token:?} is empty or listed twice")));
    }
    Ok(Some(tokens))
}

/// Every pair the configuration targets, in the order of its modules and the layers.
fn sites(config: &AdapterConfig, dims: &Dims, layers: usize) -> Vec<Site> {
    let mut sites = Vec::new();
    for module in config.targets() {
        let each: Vec<usize> = if module == "lm_head" {
            // PEFT adapts no module outside the layers when layers_to_transform is set, which
            // AdapterConfig::problems refuses beside lm_head.
            if config.layers_to_transform.is_some() { vec![] } else { vec![0] }
        } else {
            config.layers(layers).into_iter().filter(|&n| n < layers).collect()
        };
        for n in each {
            let Some(landing) = landing(module, n, dims) else { continue };
            let name = peft_name(module, n);
            sites.push(Site {
                a: format!("{name}.lora_A.weight"),
                b: format!("{name}.lora_B.weight"),
                landing,
            });
        }
    }
    sites
}

/// What is wrong with tensor `name` (of `shape`, in a rank-`r` adapter) as found, if anything.
fn check_tensor(
    name: &str,
    shape: &[usize],
    found: Option<&(Vec<usize>, safetensors::Dtype)>,
    r: usize,
) -> Option<String> {
    use safetensors::Dtype::*;
    let Some((got, dtype)) = found else { return Some(format!("{name}: missing")) };
    if got.as_slice() != shape {
        // A's rank is its rows, B's its columns: say so when only the rank differs.
        let rank = match (name.ends_with("lora_A.weight"), got.as_slice()) {
            (true, [rank, inputs]) if *inputs == shape[1] => Some(*rank),
            (false, [outputs, rank]) if *outputs == shape[0] && name.contains(".lora_B.") => {
                Some(*rank)
            }
            _ => None,
        };
        let mut problem = format!("{name}: expected shape {shape:?}, found {got:?}");
        if let Some(rank) = rank {
            problem.push_str(&format!(" (rank {rank}, but adapter_config.json says r = {r})"));
        }
        return Some(problem);
    }
    (!matches!(dtype, F16 | BF16 | F32 | F64))
        .then(|| format!("{name}: dtype {dtype:?} is not a float type"))
}

/// Why tensor `name` of the file fits nothing the configuration names.
fn unmatched_problem(
    name: &str,
    config: &AdapterConfig,
    has_added_tokens: bool,
    base: &ModelConfig,
) -> String {
    let why = match name {
        ADDED_EMBEDDINGS if !has_added_tokens => {
            "added token rows, but the adapter has no added_tokens.json naming the tokens".into()
        }
        ADDED_HEAD if base.tie_word_embeddings => "added head rows, but the base ties its head \
            to its embedding, so the added tokens' head rows are their embedding rows"
            .into(),
        _ if name.ends_with("embed_tokens.weight") || name.ends_with("lm_head.weight") => {
            "a whole embedding or head matrix, as PEFT saves it for a resized vocabulary \
             (save_embedding_layers), which this engine does not load: keep the base's rows and \
             save the new tokens' rows alone as added_embeddings [n, hidden] (and added_lm_head \
             where the head is untied), their strings in added_tokens.json"
                .into()
        }
        _ => format!(
            "matches no module of this model that target_modules ([{}]) names, in the layers \
             the adapter covers",
            config.targets().join(", ")
        ),
    };
    format!("{name}: {why}")
}

/// `b`'s rows in llama.cpp's order over `heads` heads ([`QkRows::LlamaCpp`]).
fn llama_cpp_rows(b: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, columns) = b.dims2()?;
    let half = rows / heads.max(1) / 2;
    // A shape whose heads do not split in halves fails in reshape, which checks the count.
    b.reshape((heads, 2, half, columns))?.transpose(1, 2)?.contiguous()?.reshape((rows, columns))
}

/// The pairs of one weight as one pair: `down`s stacked, and each scaled `up` in its rows
/// and its pair's columns of one `[out, Σr]` matrix, zero elsewhere.
fn combine(parts: &[(Landing, Tensor, Tensor)]) -> candle_core::Result<(Tensor, Tensor)> {
    let downs: Vec<&Tensor> = parts.iter().map(|(_, a, _)| a).collect();
    let ups: Vec<Tensor> = parts
        .iter()
        .map(|(landing, _, b)| {
            let after = landing.outputs - landing.rows.end;
            b.pad_with_zeros(0, landing.rows.start, after)
        })
        .collect::<candle_core::Result<_>>()?;
    Ok((Tensor::cat(&downs, 0)?, Tensor::cat(&ups, 1)?))
}
