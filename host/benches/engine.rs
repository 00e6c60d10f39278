//! GLM engine throughput on this machine's CPU: prefill and decode tokens/s at batch 1 and
//! batch 8, for a tiny config and a ~1B-parameter GLM-4-0414-shaped config with random
//! weights (really materialised: zero weights would leave pages untouched and flatter us).
//! `--quick` (or AUTOGLM_BENCH_QUICK=1) leaves the 1B case out.

use std::collections::HashMap;
use std::time::Instant;

use autoglm_host::engine::weights::expected_tensors;
use autoglm_host::engine::{Architecture, BatchItem, GlmModel, Kernels, KvCache, ModelConfig};
use candle_core::{DType, Device, Tensor};
use serde_json::json;

struct Case {
    name: &'static str,
    config: serde_json::Value,
    prompt: usize,
    decode_steps: usize,
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var_os("AUTOGLM_BENCH_QUICK").is_some();
    let mut cases = vec![Case {
        name: "tiny",
        config: json!({"architectures": ["Glm4ForCausalLM"], "vocab_size": 512, "hidden_size": 192, "intermediate_size": 512,
            "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
            "max_position_embeddings": 2048, "rms_norm_eps": 1e-5}),
        prompt: 64,
        decode_steps: 64,
    }];
    if !quick {
        cases.push(Case {
            name: "1B",
            config: json!({"architectures": ["Glm4ForCausalLM"], "vocab_size": 151552, "hidden_size": 2048, "intermediate_size": 6144,
                "num_hidden_layers": 12, "num_attention_heads": 16, "num_key_value_heads": 2, "head_dim": 128,
                "max_position_embeddings": 4096, "rms_norm_eps": 1e-5}),
            prompt: 32,
            decode_steps: 8,
        });
    }
    println!("engine (CPU, f32, {} threads)", candle_core::utils::get_num_threads());
    println!(
        "{:<6} {:>8} {:>7} {:>14} {:>14}",
        "model", "params", "batch", "prefill tok/s", "decode tok/s"
    );
    for case in cases {
        let config: ModelConfig =
            serde_json::from_value(case.config.clone()).expect("valid config");
        let model = random_model(&config);
        let params: usize = expected_tensors(&config, Architecture::Glm4)
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        let mut rates = Vec::new();
        for batch in [1, 8] {
            let (prefill, decode) = measure(&model, &config, batch, case.prompt, case.decode_steps);
            println!(
                "{:<6} {:>7.1}M {:>7} {:>14.1} {:>14.1}",
                case.name,
                params as f64 / 1e6,
                batch,
                prefill,
                decode
            );
            rates.push((prefill, decode));
        }
        println!(
            "{:<6} batching gain (batch 8 / batch 1): prefill {:.2}x, decode {:.2}x",
            case.name,
            rates[1].0 / rates[0].0,
            rates[1].1 / rates[0].1
        );
    }
}

fn random_model(config: &ModelConfig) -> GlmModel {
    let tensors: HashMap<String, Tensor> = expected_tensors(config, Architecture::Glm4)
        .into_iter()
        .map(|(name, shape)| {
            let norm = name.ends_with("norm.weight");
            let t = if norm {
                Tensor::ones(shape.as_slice(), DType::F32, &Device::Cpu)
            } else {
                Tensor::randn(0f32, 0.02, shape.as_slice(), &Device::Cpu)
            };
            (name, t.expect("allocating a weight"))
        })
        .collect();
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    GlmModel::new(config, Architecture::Glm4, vb, Kernels::Fused, |_, _| {}).expect("random model")
}

/// Tokens/s for prefilling `batch` prompts of `prompt` tokens in one pass, then decoding
/// `steps` tokens for each, one pass per step.
fn measure(
    model: &GlmModel,
    config: &ModelConfig,
    batch: usize,
    prompt: usize,
    steps: usize,
) -> (f64, f64) {
    let vocab = config.vocab_size as u32;
    let prompts: Vec<Vec<u32>> = (0..batch)
        .map(|b| (0..prompt).map(|t| ((b * 7919 + t * 104_729) as u32) % vocab).collect())
        .collect();
    let mut caches: Vec<KvCache> = (0..batch).map(|_| model.new_cache()).collect();
    let started = Instant::now();
    let mut next = {
        let mut items: Vec<BatchItem> = prompts
            .iter()
            .zip(caches.iter_mut())
            .map(|(p, cache)| BatchItem { tokens: p, cache })
            .collect();
        argmax(&model.forward(&mut items).expect("prefill"))
    };
    let prefill = (batch * prompt) as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for _ in 0..steps {
        let tokens: Vec<[u32; 1]> = next.iter().map(|&t| [t]).collect();
        let mut items: Vec<BatchItem> = tokens
            .iter()
            .zip(caches.iter_mut())
            .map(|(t, cache)| BatchItem { tokens: t, cache })
            .collect();
        next = argmax(&model.forward(&mut items).expect("decode"));
    }
    let decode = (batch * steps) as f64 / started.elapsed().as_secs_f64();
    (prefill, decode)
}

fn argmax(logits: &Tensor) -> Vec<u32> {
    logits.argmax(1).and_then(|t| t.to_vec1()).expect("argmax")
}
