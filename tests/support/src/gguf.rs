//! GGUF checkpoints for the tests, written with candle's GGUF writer: the tensors of a
//! random safetensors-layout model renamed and laid out as llama.cpp's converter writes the
//! `glm4` and `llama` architectures, in any GGML type; tokenizer metadata for byte-level
//! vocabularies (one token per byte, or BPE trained here on a small mixed-script corpus);
//! [`Tiny`] random models written as GGUF and as their safetensors twins; and the SmolLM2
//! file `just smollm2` fetches.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use autoglm_engine::tokenizer::GLM4_SPECIAL_TOKENS;
use autoglm_engine::weights::expected_tensors;
use autoglm_engine::{Architecture, ModelConfig};
use candle_core::Tensor;
use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use serde_json::{Value as Json, json};

use crate::checkpoint::{random_tensors, save, tiny_config, write_tokenizer};

/// SmolLM2's ChatML template, as its GGUF carries it.
pub const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
/// SmolLM2's special tokens.
pub const CHATML_SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// A tiny random model: its `config.json` value and Hugging Face-named tensors.
pub struct Tiny {
    /// The `config.json` value.
    pub config: Json,
    /// The weights by their Hugging Face names.
    pub tensors: HashMap<String, Tensor>,
}

impl Tiny {
    /// GLM-4-0414-shaped: half-head rotary, q/k/v biases, its own output head.
    pub fn glm4(seed: u64) -> Self {
        Self::new(tiny_config("Glm4ForCausalLM"), Architecture::Glm4, seed)
    }

    /// llama-shaped, as SmolLM2: whole-head rotary, no biases, tied embeddings.
    pub fn llama(seed: u64) -> Self {
        let mut config = tiny_config("GlmForCausalLM");
        config["partial_rotary_factor"] = json!(1.0);
        config["attention_bias"] = json!(false);
        config["tie_word_embeddings"] = json!(true);
        Self::new(config, Architecture::Glm, seed)
    }

    /// A model of `config` (a `config.json` value) for `arch`, weights drawn from `seed`.
    pub fn new(config: Json, arch: Architecture, seed: u64) -> Self {
        let parsed: ModelConfig = serde_json::from_value(config.clone()).unwrap();
        Self { tensors: random_tensors(&expected_tensors(&parsed, arch), seed), config }
    }

    /// The model as llama.cpp's converter writes it into a GGUF: for `llama`, every layer's
    /// Q and K rows reordered by [`permute`] (over the query heads for Q, the key/value heads
    /// for K); `glm4` is converted as it is. [`Tiny::write_gguf`] writes the tensors as they
    /// are, so a GGUF of this model is the Hugging Face model's real conversion.
    pub fn converted(&self) -> Self {
        let mut tensors = self.tensors.clone();
        if self.arch() == Arch::Llama {
            let n = |key: &str| self.config[key].as_u64().unwrap() as usize;
            let (heads, kv_heads) = (n("num_attention_heads"), n("num_key_value_heads"));
            for (name, tensor) in tensors.iter_mut() {
                if name.ends_with("self_attn.q_proj.weight") {
                    *tensor = permute(tensor, heads);
                } else if name.ends_with("self_attn.k_proj.weight") {
                    *tensor = permute(tensor, kv_heads);
                }
            }
        }
        Self { config: self.config.clone(), tensors }
    }

    /// The llama.cpp architecture its GGUF declares.
    pub fn arch(&self) -> Arch {
        if self.config["architectures"][0] == "Glm4ForCausalLM" { Arch::Glm4 } else { Arch::Llama }
    }

    /// A byte-level vocabulary of its size with its architecture's special tokens.
    pub fn vocabulary(&self) -> Vocabulary {
        let size = self.config["vocab_size"].as_u64().unwrap() as usize;
        match self.arch() {
            Arch::Glm4 => Vocabulary::bytes(&GLM4_SPECIAL_TOKENS, size, "glm4"),
            Arch::Llama => Vocabulary::bytes(&CHATML_SPECIALS, size, "smollm"),
        }
    }

    /// The metadata of this model's GGUF: model keys, its vocabulary (GLM-4's specials for
    /// glm4, SmolLM2's ChatML ones and template for llama).
    pub fn metadata(&self) -> Vec<(String, Value)> {
        let vocabulary = self.vocabulary();
        let mut metadata = model_metadata(self.arch(), &self.config);
        match self.arch() {
            Arch::Glm4 => metadata.extend(vocabulary.metadata("<|endoftext|>", Some("<|user|>"))),
            Arch::Llama => {
                metadata.extend(vocabulary.metadata("<|im_end|>", None));
                metadata.push(("tokenizer.chat_template".into(), Value::String(CHATML.into())));
            }
        }
        metadata
    }

    /// Write the model as a GGUF with matrices of `dtype` into a new directory.
    pub fn write_gguf(&self, dtype: GgmlDType) -> (tempfile::TempDir, PathBuf) {
        self.write_gguf_with(dtype, |_, _| {})
    }

    /// The same, after `edit` changed the metadata or tensors.
    pub fn write_gguf_with(
        &self,
        dtype: GgmlDType,
        edit: impl FnOnce(&mut Vec<(String, Value)>, &mut Vec<(String, QTensor)>),
    ) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("tiny-{}.gguf", self.arch().name()));
        let mut metadata = self.metadata();
        let mut tensors = gguf_tensors(self.arch(), &self.tensors, dtype);
        edit(&mut metadata, &mut tensors);
        write(&path, &metadata, &tensors);
        (dir, path)
    }

    /// The same weights as a safetensors checkpoint of `config` (with `extra` tensors).
    pub fn write_safetensors(
        &self,
        config: &Json,
        extra: HashMap<String, Tensor>,
    ) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        write_tokenizer(dir.path());
        let mut tensors = self.tensors.clone();
        tensors.extend(extra);
        save(&tensors, &dir.path().join("model.safetensors"));
        dir
    }
}

/// The llama.cpp architecture a test file declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// `glm4`: GLM-4-0414's layout, one fused `ffn_up` (gate rows first), sandwich norms.
    Glm4,
    /// `llama`: separate `ffn_gate` and `ffn_up`, no sandwich norms.
    Llama,
}

impl Arch {
    /// The `general.architecture` string.
    pub fn name(self) -> &'static str {
        match self {
            Self::Glm4 => "glm4",
            Self::Llama => "llama",
        }
    }
}

/// A byte-level vocabulary as GGUF metadata states it.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    /// Every token, in the byte alphabet, by id.
    pub tokens: Vec<String>,
    /// Merges, `"a b"`, best first.
    pub merges: Vec<String>,
    /// llama.cpp token types: 1 normal, 3 control, 5 unused.
    pub types: Vec<i32>,
    /// `tokenizer.ggml.pre`.
    pub pre: String,
}

impl Vocabulary {
    /// One token per byte (ids in the order of the byte alphabet, as
    /// [`crate::checkpoint::write_tokenizer`] has them), then `specials` as control tokens,
    /// padded with unused tokens to `size`.
    pub fn bytes(specials: &[&str], size: usize, pre: &str) -> Self {
        let mut alphabet: Vec<char> =
            tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet().into_iter().collect();
        alphabet.sort_unstable();
        let mut vocabulary = Self {
            tokens: alphabet.iter().map(|c| c.to_string()).collect(),
            merges: Vec::new(),
            types: vec![1; alphabet.len()],
            pre: pre.into(),
        };
        vocabulary.add_specials(specials, size);
        vocabulary
    }

    /// A BPE of `size` tokens trained on `corpus` with GLM-4's split regex (as its
    /// `tokenizer.json` states it), then `specials` as control tokens.
    pub fn trained(corpus: &[&str], size: usize, specials: &[&str]) -> Self {
        use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        use tokenizers::pre_tokenizers::sequence::Sequence;
        use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
        use tokenizers::{SplitDelimiterBehavior, TokenizerBuilder};
        let glm4_split = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
        let split = Split::new(
            SplitPattern::Regex(glm4_split.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .unwrap();
        let pre = Sequence::new(vec![split.into(), ByteLevel::new(false, true, false).into()]);
        let mut tokenizer: tokenizers::TokenizerImpl<
            BPE,
            tokenizers::NormalizerWrapper,
            Sequence,
            tokenizers::PostProcessorWrapper,
            ByteLevel,
        > = TokenizerBuilder::new()
            .with_model(BPE::default())
            .with_pre_tokenizer(Some(pre))
            .with_decoder(Some(ByteLevel::default()))
            .build()
            .unwrap();
        let mut trainer = BpeTrainerBuilder::new()
            .vocab_size(size)
            .min_frequency(1)
            .show_progress(false)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        tokenizer.train(&mut trainer, corpus.iter()).unwrap();
        let json: Json = serde_json::from_str(&tokenizer.to_string(false).unwrap()).unwrap();
        let vocab = json["model"]["vocab"].as_object().unwrap();
        let mut tokens = vec![String::new(); vocab.len()];
        for (token, id) in vocab {
            tokens[id.as_u64().unwrap() as usize] = token.clone();
        }
        let merges = json["model"]["merges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|merge| match merge {
                Json::String(pair) => pair.clone(),
                pair => format!("{} {}", pair[0].as_str().unwrap(), pair[1].as_str().unwrap()),
            })
            .collect();
        let types = vec![1; tokens.len()];
        let mut vocabulary = Self { tokens, merges, types, pre: "glm4".into() };
        let size = vocabulary.tokens.len() + specials.len();
        vocabulary.add_specials(specials, size);
        vocabulary
    }

    fn add_specials(&mut self, specials: &[&str], size: usize) {
        self.tokens.extend(specials.iter().map(|s| s.to_string()));
        self.types.extend(specials.iter().map(|_| 3));
        self.pad_to(size);
    }

    /// Unused tokens appended up to `size`, for a model whose vocabulary is larger.
    pub fn pad_to(&mut self, size: usize) {
        while self.tokens.len() < size {
            self.tokens.push(format!("[PAD{}]", self.tokens.len()));
            self.types.push(5);
        }
    }

    /// The id of `token`.
    pub fn id(&self, token: &str) -> u32 {
        self.tokens.iter().position(|t| t == token).unwrap_or_else(|| panic!("no {token}")) as u32
    }

    /// The `tokenizer.ggml.*` keys, with `eos` (and `eot` if given) named by their text.
    pub fn metadata(&self, eos: &str, eot: Option<&str>) -> Vec<(String, Value)> {
        let strings =
            |items: &[String]| Value::Array(items.iter().cloned().map(Value::String).collect());
        let mut metadata = vec![
            ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
            ("tokenizer.ggml.pre".into(), Value::String(self.pre.clone())),
            ("tokenizer.ggml.tokens".into(), strings(&self.tokens)),
            ("tokenizer.ggml.merges".into(), strings(&self.merges)),
            (
                "tokenizer.ggml.token_type".into(),
                Value::Array(self.types.iter().map(|t| Value::I32(*t)).collect()),
            ),
            ("tokenizer.ggml.eos_token_id".into(), Value::U32(self.id(eos))),
            ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
        ];
        if let Some(eot) = eot {
            metadata.push(("tokenizer.ggml.eot_token_id".into(), Value::U32(self.id(eot))));
        }
        metadata
    }
}

/// The `{arch}.*` model keys for a model shaped like `config` (a `config.json` value).
pub fn model_metadata(arch: Arch, config: &Json) -> Vec<(String, Value)> {
    let n = |key: &str| config[key].as_u64().unwrap() as u32;
    let head_dim = n("head_dim");
    let rotary = (config["partial_rotary_factor"].as_f64().unwrap() * f64::from(head_dim)) as u32;
    let a = arch.name();
    vec![
        ("general.architecture".into(), Value::String(a.into())),
        (format!("{a}.block_count"), Value::U32(n("num_hidden_layers"))),
        (format!("{a}.context_length"), Value::U32(n("max_position_embeddings"))),
        (format!("{a}.embedding_length"), Value::U32(n("hidden_size"))),
        (format!("{a}.feed_forward_length"), Value::U32(n("intermediate_size"))),
        (format!("{a}.attention.head_count"), Value::U32(n("num_attention_heads"))),
        (format!("{a}.attention.head_count_kv"), Value::U32(n("num_key_value_heads"))),
        (format!("{a}.attention.key_length"), Value::U32(head_dim)),
        (format!("{a}.attention.value_length"), Value::U32(head_dim)),
        (format!("{a}.rope.dimension_count"), Value::U32(rotary)),
        (format!("{a}.rope.freq_base"), Value::F32(config["rope_theta"].as_f64().unwrap() as f32)),
        (
            format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(config["rms_norm_eps"].as_f64().unwrap() as f32),
        ),
    ]
}

/// The GGUF tensors of a model whose Hugging Face-named `tensors` are given: renamed as
/// llama.cpp names them, matrices stored as `matrix_type`, norms and biases as F32.
pub fn gguf_tensors(
    arch: Arch,
    tensors: &HashMap<String, Tensor>,
    matrix_type: GgmlDType,
) -> Vec<(String, QTensor)> {
    let mut out = Vec::new();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        let tensor = &tensors[name];
        let renamed = gguf_name(name);
        let dtype = if tensor.rank() == 2 { matrix_type } else { GgmlDType::F32 };
        let quantize = |t: &Tensor| QTensor::quantize(t, dtype).unwrap();
        if arch == Arch::Llama && name.ends_with("mlp.gate_up_proj.weight") {
            // Copied out: candle 0.11 quantizes a narrowed tensor's whole storage.
            let half = |start: usize| {
                let rows = tensor.dim(0).unwrap() / 2;
                let part = tensor.narrow(0, start * rows, rows).unwrap();
                let values = part.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                quantize(&Tensor::from_vec(values, part.shape(), part.device()).unwrap())
            };
            let prefix = renamed.trim_end_matches("ffn_up.weight");
            out.push((format!("{prefix}ffn_gate.weight"), half(0)));
            out.push((renamed, half(1)));
        } else {
            out.push((renamed, quantize(tensor)));
        }
    }
    out
}

/// The rows of `w` (`[rows, columns]`) as llama.cpp's converter reorders a Q or K matrix of
/// `heads` heads for a `llama` GGUF (convert_hf_to_gguf.py, `LlamaModel.permute`):
/// `w.reshape(heads, 2, rows // heads // 2, columns).swapaxes(1, 2).reshape(rows, columns)`.
/// Written out index by index, so that it checks the engine's tensor version of it.
pub fn permute(w: &Tensor, heads: usize) -> Tensor {
    let rows: Vec<Vec<f32>> = w.to_vec2().unwrap();
    let half = rows.len() / heads / 2;
    let mut out: Vec<f32> = Vec::with_capacity(w.elem_count());
    // Output row (head, i, side) of the swapped axes reads input row (head, side, i).
    for head in 0..heads {
        for i in 0..half {
            for side in 0..2 {
                out.extend(&rows[(head * 2 + side) * half + i]);
            }
        }
    }
    Tensor::from_vec(out, w.shape(), w.device()).unwrap()
}

/// llama.cpp's name for a Hugging Face tensor name of the GLM families.
pub fn gguf_name(hf: &str) -> String {
    let fixed = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    if let Some((_, name)) = fixed.iter().find(|(from, _)| *from == hf) {
        return name.to_string();
    }
    let rest = hf.strip_prefix("model.layers.").unwrap_or_else(|| panic!("unexpected {hf}"));
    let (layer, part) = rest.split_once('.').unwrap();
    let part = [
        ("input_layernorm", "attn_norm"),
        ("post_self_attn_layernorm", "post_attention_norm"),
        ("post_attention_layernorm", "ffn_norm"),
        ("post_mlp_layernorm", "post_ffw_norm"),
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("mlp.gate_up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
    ]
    .iter()
    .find_map(|(from, to)| part.strip_prefix(from).map(|suffix| format!("{to}{suffix}")))
    .unwrap_or_else(|| panic!("unexpected {hf}"));
    format!("blk.{layer}.{part}")
}

/// Write a GGUF of `metadata` and `tensors` to `path`.
pub fn write(path: &Path, metadata: &[(String, Value)], tensors: &[(String, QTensor)]) {
    let mut file = std::fs::File::create(path).unwrap();
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    candle_core::quantized::gguf_file::write(&mut file, &metadata, &tensors).unwrap();
}

/// SmolLM2-135M-Instruct, Q4_1, as `just smollm2` fetches it (a prerequisite of `just test`).
pub fn smollm2() -> PathBuf {
    made("models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "just smollm2", "fetch it")
}

/// The Python of the pinned GGUF tokenizer environment `just python-env` makes.
pub fn gguf_python() -> PathBuf {
    made("py/gguf/bin/python", "just python-env", "make it")
}

/// `target/<relative>`, which `recipe` (a prerequisite of `just test`) makes.
fn made(relative: &str, recipe: &str, what: &str) -> PathBuf {
    let path = crate::target_dir().join(relative);
    assert!(
        path.is_file(),
        "{} is missing: run `{recipe}` (a prerequisite of `just test`) to {what}",
        path.display()
    );
    path
}

/// The repository's `tests/python` directory.
pub fn python_tests() -> PathBuf {
    crate::workspace_dir().join("tests/python")
}
