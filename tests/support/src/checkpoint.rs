//! Random-weight GLM checkpoints: tiny ones written into a directory (config.json,
//! model.safetensors and a byte-level tokenizer.json with GLM-4's special tokens), models
//! of any shape built in memory for benchmarks, and the logits comparisons the tests make.

use std::collections::HashMap;
use std::path::Path;

use autoglm_engine::tokenizer::GLM4_SPECIAL_TOKENS;
use autoglm_engine::weights::expected_tensors;
use autoglm_engine::{Architecture, ModelConfig};
use autoglm_engine::{BatchItem, GlmModel, Kernels};
use candle_core::{DType, Device, IndexOp, Tensor};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// A small config of `architecture` (a Hugging Face class name).
pub fn tiny_config(architecture: &str) -> Value {
    json!({
        "architectures": [architecture],
        "vocab_size": 272,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "partial_rotary_factor": 0.5,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 256,
        "attention_bias": true,
        "tie_word_embeddings": false,
        "hidden_act": "silu",
        "eos_token_id": [256, 263, 265],
    })
}

/// Write a checkpoint for `config` with weights drawn from `seed` into `dir`.
pub fn write_model(dir: &Path, config: &Value, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(config).unwrap()).unwrap();
    write_tokenizer(dir);
    let parsed: ModelConfig = serde_json::from_value(config.clone()).unwrap();
    let arch = parsed.architecture().unwrap_or(Architecture::Glm4);
    save(&random_tensors(&expected_tensors(&parsed, arch), seed), &dir.join("model.safetensors"));
}

/// Random tensors of the given names and shapes: norms near 1, embeddings near unit scale,
/// projections small, so activations stay in a useful range through the layers.
pub fn random_tensors(specs: &[(String, Vec<usize>)], seed: u64) -> HashMap<String, Tensor> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    specs
        .iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let (center, spread) =
                if name.ends_with("layernorm.weight") || name == "model.norm.weight" {
                    (1.0, 0.2)
                } else if name.contains("embed_tokens") {
                    (0.0, 1.0)
                } else {
                    (0.0, 0.5 / (shape.last().copied().unwrap_or(1) as f32).sqrt() * 1.7)
                };
            let values: Vec<f32> =
                (0..n).map(|_| center + spread * rng.random_range(-1.0f32..1.0)).collect();
            (name.clone(), Tensor::from_vec(values, shape.as_slice(), &Device::Cpu).unwrap())
        })
        .collect()
}

/// Write `tensors` as safetensors.
pub fn save(tensors: &HashMap<String, Tensor>, path: &Path) {
    candle_core::safetensors::save(tensors, path).unwrap();
}

/// A byte-level BPE without merges (one token per byte) plus GLM-4's special tokens at
/// ids 256..266.
pub fn write_tokenizer(dir: &Path) {
    use tokenizers::models::bpe::BPE;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    let mut alphabet: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    alphabet.sort_unstable();
    let vocab: tokenizers::models::bpe::Vocab =
        alphabet.iter().enumerate().map(|(i, c)| (c.to_string(), i as u32)).collect();
    let bpe = BPE::builder().vocab_and_merges(vocab, vec![]).build().unwrap();
    let mut tokenizer = tokenizers::Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    let specials: Vec<tokenizers::AddedToken> =
        GLM4_SPECIAL_TOKENS.iter().map(|s| tokenizers::AddedToken::from(*s, true)).collect();
    tokenizer.add_special_tokens(specials).unwrap();
    tokenizer.save(dir.join("tokenizer.json"), false).unwrap();
}

/// A GLM-4 model of `config`'s shape with random weights from `seed`, built in memory.
pub fn random_model(config: &ModelConfig, seed: u64) -> GlmModel {
    let tensors = random_tensors(&expected_tensors(config, Architecture::Glm4), seed);
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    GlmModel::new(config, Architecture::Glm4, vb, Kernels::Fused, |_, _| {}).expect("random model")
}

/// The most likely token of each row of `logits` (`[rows, vocab]`).
pub fn argmax(logits: &Tensor) -> Vec<u32> {
    logits.argmax(candle_core::D::Minus1).and_then(|t| t.to_vec1()).expect("argmax")
}

/// Next-token logits after `tokens`, then after each of `more` in turn (through the cache).
pub fn logits(model: &GlmModel, tokens: &[u32], more: &[u32]) -> Vec<Tensor> {
    let mut cache = model.new_cache();
    let mut out =
        vec![model.forward(&mut [BatchItem { tokens, cache: &mut cache }]).unwrap().i(0).unwrap()];
    for &token in more {
        let step = model.forward(&mut [BatchItem { tokens: &[token], cache: &mut cache }]);
        out.push(step.unwrap().i(0).unwrap());
    }
    out
}

/// The largest absolute difference between two tensors of one shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

/// The largest absolute value in a tensor.
pub fn max_abs(a: &Tensor) -> f32 {
    a.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

/// Panic, naming `what` and the step, where logits `a` and `b` differ by more than `tolerance`.
pub fn assert_close(what: &str, a: &[Tensor], b: &[Tensor], tolerance: f32) {
    for (step, (a, b)) in a.iter().zip(b).enumerate() {
        let diff = max_abs_diff(a, b);
        assert!(diff <= tolerance, "{what}, step {step}: logits differ by {diff} (> {tolerance})");
    }
}

/// The largest logit difference from `reference` as a fraction of the largest logit.
pub fn relative_error(reference: &[Tensor], other: &[Tensor]) -> f32 {
    reference.iter().zip(other).map(|(r, o)| max_abs_diff(r, o) / max_abs(r)).fold(0.0, f32::max)
}
