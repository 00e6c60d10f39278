//! GGUF checkpoints, llama.cpp's single-file format: the metadata read into a [`ModelConfig`],
//! every tensor checked before any is loaded (all problems listed at once, as for
//! safetensors), matrices kept in their block formats for candle's quantized kernels, and the
//! tokenizer built from the vocabulary the file carries ([`vocab`]).
//!
//! Two layouts run, both on [`GlmModel`]'s forward pass:
//! - `glm4` (GLM-4-0414 as llama.cpp's converter writes it): `Glm4ForCausalLM`, rotating
//!   `glm4.rope.dimension_count` channels of each head;
//! - `llama` (SmolLM2 and the like): `GlmForCausalLM` with the rotary over the whole head. The
//!   converter permutes Q and K rows so that ggml's rope turns adjacent pairs, which is the
//!   pairing GLM's interleaved rotary uses, so the matrices run as stored.
//!
//! [`GlmModel`]: crate::GlmModel

pub mod vocab;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, TensorInfo, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Result as CandleResult, Tensor};

use crate::EngineError;
use crate::adapter::QkRows;
use crate::blocks::FloatInputMatrix;
use crate::checkpoint::{Architecture, AutoglmSettings, MAX_CONTEXT, MAX_DIMENSION, ModelConfig};
use crate::model::{LayerWeight, Matrix, Weight, WeightSource};

/// What `general.architecture` a GGUF must state for the engine to run it.
pub const SUPPORTED: &str = "glm4 (GLM-4-0414) and llama (e.g. SmolLM2)";

/// The GGUF layouts the engine runs, by `general.architecture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `glm4`: GLM-4-0414 (`Glm4ForCausalLM`).
    Glm4,
    /// `llama`: run as `GlmForCausalLM` with the rotary over the whole head.
    Llama,
}

impl Layout {
    /// The prefix of the file's model keys (`glm4.block_count`, ...).
    pub fn key_prefix(self) -> &'static str {
        match self {
            Self::Glm4 => "glm4",
            Self::Llama => "llama",
        }
    }

    /// The order of its Q and K rows, which an adapter's must follow.
    pub fn qk_rows(self) -> QkRows {
        match self {
            Self::Glm4 => QkRows::Hf,
            Self::Llama => QkRows::LlamaCpp,
        }
    }

    /// The engine's architecture that runs it.
    pub fn architecture(self) -> Architecture {
        match self {
            Self::Glm4 => Architecture::Glm4,
            Self::Llama => Architecture::Glm,
        }
    }
}

/// How the file's matrices are held for the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Matrices {
    /// As stored; on the CPU the 32-value block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) are
    /// multiplied with unquantized activations ([`crate::blocks`]), so the result is the
    /// file's exact values at work. The K types go to candle's kernels.
    #[default]
    Exact,
    /// Every matrix as stored, multiplied by candle's kernels, which round activations to 8
    /// bits a block (as llama.cpp does).
    AsStored,
    /// Every matrix dequantized to f32: the same arithmetic as [`Matrices::Exact`] with 4 to
    /// 8 times the memory.
    Dense,
}

/// An opened GGUF file: its header read and checked, no tensor loaded yet.
pub struct GgufFile {
    path: PathBuf,
    content: Content,
    layout: Layout,
    config: ModelConfig,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("layout", &self.layout)
            .field("tensors", &self.content.tensor_infos.len())
            .finish()
    }
}

impl GgufFile {
    /// Read the header of the GGUF at `path`, derive the model's configuration from its
    /// metadata and check every tensor the configuration implies (names, shapes, types, and
    /// that the file holds their data), so a file the engine cannot run fails here, whole.
    pub fn open(path: &Path) -> Result<Self, EngineError> {
        let file = File::open(path).map_err(|e| EngineError::MissingFile {
            path: path.to_path_buf(),
            what: "the GGUF checkpoint",
            source: e,
        })?;
        let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader).map_err(|e| EngineError::Gguf {
            path: path.to_path_buf(),
            message: header_problem(&e),
        })?;
        let metadata = Metadata { path, map: &content.metadata };
        let layout = match metadata.string("general.architecture")? {
            Some("glm4") => Layout::Glm4,
            Some("llama") => Layout::Llama,
            found => {
                return Err(EngineError::GgufArchitecture {
                    path: path.to_path_buf(),
                    found: found.unwrap_or("(none)").to_string(),
                });
            }
        };
        let config = read_config(&metadata, layout, &content.tensor_infos)?;
        let gguf = Self { path: path.to_path_buf(), content, layout, config };
        gguf.check_tensors(file_len)?;
        Ok(gguf)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Which layout the file has.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The model's configuration, as the metadata states it.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn metadata(&self) -> Metadata<'_> {
        Metadata { path: &self.path, map: &self.content.metadata }
    }

    /// The tokenizer the file's `tokenizer.ggml.*` metadata describes.
    pub fn tokenizer(&self) -> Result<tokenizers::Tokenizer, EngineError> {
        vocab::build(&self.metadata())
    }

    /// The tokens that end a turn (`tokenizer.ggml.eos_token_id`, then the end-of-turn and
    /// end-of-message ids where the file names them).
    pub fn stop_tokens(&self) -> Result<Vec<u32>, EngineError> {
        let md = self.metadata();
        let mut stops = Vec::new();
        for key in [
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
        ] {
            if let Some(id) = md.uint(key)? {
                if id >= self.config.vocab_size {
                    return Err(md.invalid(
                        key,
                        format!(
                            "token {id} is outside the vocabulary of {}",
                            self.config.vocab_size
                        ),
                    ));
                }
                stops.push(id as u32);
            }
        }
        Ok(stops)
    }

    /// The token id the file names under `tokenizer.ggml.{which}_token_id`.
    pub fn token_id(&self, which: &str) -> Result<Option<u32>, EngineError> {
        Ok(self.metadata().uint(&format!("tokenizer.ggml.{which}_token_id"))?.map(|id| id as u32))
    }

    /// The Jinja chat template the file carries (`tokenizer.chat_template`).
    pub fn chat_template(&self) -> Result<Option<String>, EngineError> {
        Ok(self.metadata().string("tokenizer.chat_template")?.map(String::from))
    }

    /// Parameters in the tensors the model uses.
    pub fn parameters(&self) -> usize {
        self.expected().iter().map(|(_, shape)| shape.iter().product::<usize>()).sum()
    }

    /// How many tensors the file stores in each type, e.g. `{Q4_1: 210, F32: 61, Q8_0: 1}`.
    pub fn tensor_types(&self) -> BTreeMap<String, usize> {
        let mut types = BTreeMap::new();
        for info in self.content.tensor_infos.values() {
            *types.entry(format!("{:?}", info.ggml_dtype)).or_default() += 1;
        }
        types
    }

    /// A source of the model's weights on `device`, read from the file as the model asks.
    pub fn weights(
        &self,
        device: &Device,
        matrices: Matrices,
    ) -> Result<GgufWeights<'_>, EngineError> {
        let file = File::open(&self.path).map_err(|e| EngineError::MissingFile {
            path: self.path.clone(),
            what: "the GGUF checkpoint",
            source: e,
        })?;
        Ok(GgufWeights {
            file: self,
            reader: BufReader::new(file),
            device: device.clone(),
            matrices,
            head: None,
            float_input: 0,
        })
    }

    /// The file's names for `weight`: llama's gate and up projections are two tensors.
    fn names(&self, weight: Weight) -> Vec<String> {
        use LayerWeight::*;
        let (n, part) = match weight {
            Weight::Embedding => return vec!["token_embd.weight".into()],
            Weight::FinalNorm => return vec!["output_norm.weight".into()],
            Weight::Head => return vec!["output.weight".into()],
            Weight::Layer(n, part) => (n, part),
        };
        let names: &[&str] = match (part, self.layout) {
            (InputNorm, _) => &["attn_norm.weight"],
            (PostAttentionNorm, _) => &["post_attention_norm.weight"],
            (PreMlpNorm, _) => &["ffn_norm.weight"],
            (PostMlpNorm, _) => &["post_ffw_norm.weight"],
            (Q, _) => &["attn_q.weight"],
            (K, _) => &["attn_k.weight"],
            (V, _) => &["attn_v.weight"],
            (QBias, _) => &["attn_q.bias"],
            (KBias, _) => &["attn_k.bias"],
            (VBias, _) => &["attn_v.bias"],
            (O, _) => &["attn_output.weight"],
            (GateUp, Layout::Glm4) => &["ffn_up.weight"],
            (GateUp, Layout::Llama) => &["ffn_gate.weight", "ffn_up.weight"],
            (Down, _) => &["ffn_down.weight"],
        };
        names.iter().map(|name| format!("blk.{n}.{name}")).collect()
    }

    /// Every tensor the model needs, by the file's names, with its shape (rows first).
    fn expected(&self) -> Vec<(String, Vec<usize>)> {
        let arch = self.layout.architecture();
        let mut tensors = Vec::new();
        for (weight, shape) in Weight::all(&self.config, arch) {
            let names = self.names(weight);
            let mut shape = shape;
            // Separate gate and up halves are half the rows of the fused matrix each.
            shape[0] /= names.len();
            tensors.extend(names.into_iter().map(|name| (name, shape.clone())));
        }
        tensors
    }

    fn check_tensors(&self, file_len: u64) -> Result<(), EngineError> {
        let infos = &self.content.tensor_infos;
        let expected = self.expected();
        let mut problems = Vec::new();
        for (name, shape) in &expected {
            let Some(info) = infos.get(name) else {
                problems.push(format!("{name}: missing"));
                continue;
            };
            let found = info.shape.dims();
            if found != shape.as_slice() {
                problems.push(format!("{name}: expected shape {shape:?}, found {found:?}"));
                continue;
            }
            let dtype = info.ggml_dtype;
            if matches!(dtype, GgmlDType::Q8_1 | GgmlDType::Q8K) {
                problems.push(format!(
                    "{name}: type {dtype:?} is an intermediate format of ggml's kernels that \
                     candle cannot multiply; requantize the file (e.g. to Q8_0)"
                ));
                continue;
            }
            let row = shape.last().copied().unwrap_or(1);
            if !row.is_multiple_of(dtype.block_size()) {
                problems.push(format!(
                    "{name}: type {dtype:?} stores rows in blocks of {} values but the rows \
                     have {row}",
                    dtype.block_size()
                ));
                continue;
            }
            let bytes = shape.iter().product::<usize>() / dtype.block_size() * dtype.type_size();
            let end = self
                .content
                .tensor_data_offset
                .saturating_add(info.offset)
                .saturating_add(bytes as u64);
            if end > file_len {
                problems.push(format!(
                    "{name}: its data would end at byte {end} but the file has {file_len} \
                     (a truncated download?)"
                ));
            }
        }
        let known: HashSet<&str> = expected.iter().map(|(name, _)| name.as_str()).collect();
        let mut unexpected: Vec<&String> =
            infos.keys().filter(|name| !known.contains(name.as_str())).collect();
        unexpected.sort();
        for name in unexpected {
            problems.push(if name == "rope_freqs.weight" {
                format!("{name}: per-frequency rope scaling (Llama 3.1 style) is not implemented")
            } else {
                format!(
                    "{name}: not part of the {} layout this engine runs; ignoring it would \
                     compute a different model",
                    self.layout.key_prefix()
                )
            });
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(EngineError::GgufTensors { path: self.path.clone(), problems })
        }
    }
}

/// The words for a header candle could not read.
fn header_problem(error: &candle_core::Error) -> String {
    let text = error.to_string();
    if text.contains("unknown magic") {
        format!("it does not start with the GGUF magic ({text})")
    } else if text.contains("fill whole buffer") || text.contains("remaining") {
        format!("its header ends early; the file is truncated ({text})")
    } else {
        format!("its header cannot be read: {text}")
    }
}

/// The model's configuration from the metadata of a `layout` file.
fn read_config(
    md: &Metadata,
    layout: Layout,
    tensors: &HashMap<String, TensorInfo>,
) -> Result<ModelConfig, EngineError> {
    let arch = layout.key_prefix();
    let key = |name: &str| format!("{arch}.{name}");
    let dimension = |name: &str| -> Result<Option<usize>, EngineError> {
        let k = key(name);
        match md.uint(&k)? {
            Some(0) => Err(md.invalid(&k, "must be at least 1".into())),
            Some(v) if v > MAX_DIMENSION => {
                Err(md.invalid(&k, format!("{v} is implausibly large")))
            }
            v => Ok(v),
        }
    };
    let required = |name: &str| dimension(name)?.ok_or_else(|| md.missing(&key(name)));

    if md.uint(&key("expert_count"))?.unwrap_or(0) > 0 {
        return Err(md.unsupported(
            &key("expert_count"),
            "mixture-of-experts layers are not implemented; serve this model with llama.cpp \
             or vLLM and use it through --upstream",
        ));
    }
    check_rope_scaling(md, arch)?;

    let layers = required("block_count")?;
    // Each layer has at least nine tensors: a larger count is a corrupt header.
    if layers.saturating_mul(9) > tensors.len() {
        return Err(md.invalid(
            &key("block_count"),
            format!("{layers} layers but the file holds only {} tensors", tensors.len()),
        ));
    }
    let hidden = required("embedding_length")?;
    let heads = required("attention.head_count")?;
    let kv_heads = dimension("attention.head_count_kv")?.unwrap_or(heads);
    let head_dim = match dimension("attention.key_length")? {
        Some(k) => k,
        None if hidden.is_multiple_of(heads) => hidden / heads,
        None => {
            return Err(md.invalid(
                &key("attention.head_count"),
                format!("{heads} heads do not divide embedding_length {hidden}"),
            ));
        }
    };
    if let Some(v) = dimension("attention.value_length")?
        && v != head_dim
    {
        return Err(md.unsupported(
            &key("attention.value_length"),
            &format!(
                "value heads of {v} channels beside key heads of {head_dim} are not implemented"
            ),
        ));
    }
    let rotary = match (dimension("rope.dimension_count")?, layout) {
        (Some(r), _) => r,
        // llama.cpp's default: the whole head.
        (None, Layout::Llama) => head_dim,
        // GLM-4 rotates part of each head; guessing how much would compute another model.
        (None, Layout::Glm4) => return Err(md.missing(&key("rope.dimension_count"))),
    };
    if rotary > head_dim || !rotary.is_multiple_of(2) {
        return Err(md.invalid(
            &key("rope.dimension_count"),
            format!("{rotary} must be an even number of channels up to the head's {head_dim}"),
        ));
    }
    let context =
        md.uint(&key("context_length"))?.ok_or_else(|| md.missing(&key("context_length")))?;
    if context == 0 || context > MAX_CONTEXT {
        return Err(
            md.invalid(&key("context_length"), format!("{context} is outside 1..={MAX_CONTEXT}"))
        );
    }
    let eps = md
        .float(&key("attention.layer_norm_rms_epsilon"))?
        .ok_or_else(|| md.missing(&key("attention.layer_norm_rms_epsilon")))?;
    let vocab = match dimension("vocab_size")? {
        Some(v) => v,
        None => match md.array_len("tokenizer.ggml.tokens")? {
            Some(n) if n > 0 => n,
            _ => tensors
                .get("token_embd.weight")
                .and_then(|t| t.shape.dims().first().copied())
                .ok_or_else(|| md.missing(&key("vocab_size")))?,
        },
    };
    let config = ModelConfig {
        architectures: vec![layout.architecture().hf_name().to_string()],
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: required("feed_forward_length")?,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: Some(kv_heads),
        head_dim: Some(head_dim),
        partial_rotary_factor: rotary as f64 / head_dim as f64,
        rotary_channels: Some(rotary),
        rope_theta: md.float(&key("rope.freq_base"))?.unwrap_or(10_000.0),
        rms_norm_eps: eps,
        max_position_embeddings: context,
        attention_bias: tensors.contains_key("blk.0.attn_q.bias"),
        tie_word_embeddings: !tensors.contains_key("output.weight"),
        hidden_act: "silu".into(),
        eos_token_id: None,
        autoglm: AutoglmSettings::default(),
    };
    config.check().map_err(|message| EngineError::Gguf { path: md.path.to_path_buf(), message })?;
    Ok(config)
}

/// Rope scaling changes every rotation; the engine implements none, so a file that asks for
/// one is refused rather than run as another model.
fn check_rope_scaling(md: &Metadata, arch: &str) -> Result<(), EngineError> {
    let prefix = format!("{arch}.rope.scaling.");
    let mut keys: Vec<&String> = md.map.keys().filter(|k| k.starts_with(&prefix)).collect();
    keys.sort();
    for key in keys {
        let inert = match &key[prefix.len()..] {
            "type" => md.string(key)? == Some("none"),
            "factor" => md.float(key)? == Some(1.0),
            _ => false,
        };
        if !inert {
            return Err(md.unsupported(
                key,
                "rope scaling (linear, yarn, longrope...) is not implemented; use the model \
                 without it or serve it with llama.cpp through --upstream",
            ));
        }
    }
    Ok(())
}

/// Typed reads of GGUF metadata; every error names the key.
pub(crate) struct Metadata<'a> {
    path: &'a Path,
    map: &'a HashMap<String, Value>,
}

impl Metadata<'_> {
    fn missing(&self, key: &str) -> EngineError {
        EngineError::Gguf { path: self.path.to_path_buf(), message: format!("{key} is missing") }
    }

    fn invalid(&self, key: &str, why: String) -> EngineError {
        EngineError::Gguf { path: self.path.to_path_buf(), message: format!("{key}: {why}") }
    }

    fn unsupported(&self, key: &str, why: &str) -> EngineError {
        EngineError::GgufUnsupported {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            why: why.to_string(),
        }
    }

    fn wrong_type(&self, key: &str, want: &str, found: &Value) -> EngineError {
        self.invalid(key, format!("expected {want}, found a {:?} value", found.value_type()))
    }

    fn string(&self, key: &str) -> Result<Option<&str>, EngineError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong_type(key, "a string", other)),
        }
    }

    fn uint(&self, key: &str) -> Result<Option<usize>, EngineError> {
        self.map
            .get(key)
            .map(|v| as_uint(v).ok_or_else(|| self.wrong_type(key, "a count", v)))
            .transpose()
    }

    fn float(&self, key: &str) -> Result<Option<f64>, EngineError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::F32(v)) => Ok(Some(f64::from(*v))),
            Some(Value::F64(v)) => Ok(Some(*v)),
            Some(other) => Err(self.wrong_type(key, "a float", other)),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, EngineError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Bool(v)) => Ok(Some(*v)),
            Some(other) => Err(self.wrong_type(key, "a boolean", other)),
        }
    }

    fn array(&self, key: &str) -> Result<Option<&[Value]>, EngineError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(other) => Err(self.wrong_type(key, "an array", other)),
        }
    }

    fn array_len(&self, key: &str) -> Result<Option<usize>, EngineError> {
        Ok(self.array(key)?.map(<[Value]>::len))
    }

    fn strings(&self, key: &str) -> Result<Option<Vec<&str>>, EngineError> {
        let Some(items) = self.array(key)? else { return Ok(None) };
        items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.as_str()),
                other => Err(self.wrong_type(key, "an array of strings", other)),
            })
            .collect::<Result<_, _>>()
            .map(Some)
    }

    fn ints(&self, key: &str) -> Result<Option<Vec<i64>>, EngineError> {
        let Some(items) = self.array(key)? else { return Ok(None) };
        items
            .iter()
            .map(|v| as_int(v).ok_or_else(|| self.wrong_type(key, "an array of integers", v)))
            .collect::<Result<_, _>>()
            .map(Some)
    }
}

fn as_int(value: &Value) -> Option<i64> {
    Some(match *value {
        Value::U8(v) => v.into(),
        Value::I8(v) => v.into(),
        Value::U16(v) => v.into(),
        Value::I16(v) => v.into(),
        Value::U32(v) => v.into(),
        Value::I32(v) => v.into(),
        Value::U64(v) => i64::try_from(v).ok()?,
        Value::I64(v) => v,
        _ => return None,
    })
}

fn as_uint(value: &Value) -> Option<usize> {
    usize::try_from(as_int(value)?).ok()
}

/// The weights of a [`GgufFile`], read from the file as [`crate::GlmModel::new`] asks.
pub struct GgufWeights<'a> {
    file: &'a GgufFile,
    reader: BufReader<File>,
    device: Device,
    matrices: Matrices,
    /// The embedding as a quantized matrix, for a tied output head.
    head: Option<Matrix>,
    float_input: usize,
}

impl GgufWeights<'_> {
    /// How many matrices are multiplied with unquantized activations ([`Matrices::Exact`]).
    pub fn float_input(&self) -> usize {
        self.float_input
    }

    fn read(&mut self, name: &str) -> CandleResult<QTensor> {
        self.file.content.tensor(&mut self.reader, name, &self.device)
    }

    /// `tensor` as the model should hold it.
    fn prepare(&mut self, tensor: QTensor) -> CandleResult<Matrix> {
        match self.matrices {
            Matrices::Dense => {
                Ok(Matrix::Dense(candle_nn::Linear::new(tensor.dequantize(&self.device)?, None)))
            }
            Matrices::Exact
                if self.device.is_cpu() && FloatInputMatrix::handles(tensor.dtype()) =>
            {
                self.float_input += 1;
                Matrix::float_input(&tensor)
            }
            _ => Matrix::quantized(Arc::new(tensor)),
        }
    }
}

impl WeightSource for GgufWeights<'_> {
    /// Activations stay f32 on every device: candle's quantized kernels take f32 input.
    fn dtype(&self) -> DType {
        DType::F32
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn tensor(&mut self, weight: Weight, _shape: &[usize]) -> CandleResult<Tensor> {
        let name = self.file.names(weight).remove(0);
        let tensor = self.read(&name)?;
        let dense = tensor.dequantize(&self.device)?;
        let quantized =
            !matches!(tensor.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
        if weight == Weight::Embedding
            && self.file.config.tie_word_embeddings
            && quantized
            && self.matrices != Matrices::Dense
        {
            self.head = Some(self.prepare(tensor)?);
        }
        Ok(dense)
    }

    fn matrix(&mut self, weight: Weight, _shape: (usize, usize)) -> CandleResult<Matrix> {
        let mut parts: Vec<Matrix> = self
            .file
            .names(weight)
            .iter()
            .map(|name| {
                let tensor = self.read(name)?;
                self.prepare(tensor)
            })
            .collect::<CandleResult<_>>()?;
        Ok(if parts.len() == 1 { parts.remove(0) } else { Matrix::Stacked(parts) })
    }

    /// The quantized embedding where the file stores it quantized, so the largest matrix of
    /// a small model stays small; the dense embedding itself otherwise.
    fn tied_head(&mut self, embedding: &Tensor) -> CandleResult<Matrix> {
        match self.head.take() {
            Some(quantized) => Ok(quantized),
            None => Ok(Matrix::Dense(candle_nn::Linear::new(embedding.clone(), None))),
        }
    }
}
