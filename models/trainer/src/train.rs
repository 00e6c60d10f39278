//! The tokenizer (byte-level BPE with a pre-tokenizer that gives a word the same tokens in a
//! request and in a JSON value) and the training loop (AdamW, warm-up then cosine decay,
//! loss on the model's turns only).

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use autoglm_engine::tokenizer::GLM4_SPECIAL_TOKENS;
use autoglm_engine::{Architecture, GlmModel, Kernels, ModelConfig};
use candle_core::{D, DType, Device, Tensor};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokenizers::Tokenizer;

use crate::Args;
use crate::corpus::Conversation;

/// Letters, one Han character, up to three digits, punctuation, or whitespace: each its own
/// piece, so "Nairobi" is the same tokens after a space as after a quote.
const PIECES: &str = r"\p{Han}|[\p{L}\p{M}]+|\p{N}{1,3}|[^\s\p{L}\p{N}]+|\s+";

const VOCAB: usize = 1024;

/// Train the tokenizer on the conversations and save it to `path`.
pub fn train_tokenizer(conversations: &[Conversation], path: &Path) -> anyhow::Result<Tokenizer> {
    use tokenizers::models::TrainerWrapper;
    use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::pre_tokenizers::sequence::Sequence;
    use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
    use tokenizers::{AddedToken, SplitDelimiterBehavior};

    let specials: Vec<AddedToken> =
        GLM4_SPECIAL_TOKENS.iter().map(|s| AddedToken::from(*s, true)).collect();
    let split =
        Split::new(SplitPattern::Regex(PIECES.into()), SplitDelimiterBehavior::Isolated, false)
            .map_err(anyhow::Error::msg)?;
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
        split.into(),
        ByteLevel::new(false, false, false).into(),
    ])));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    let mut trainer = TrainerWrapper::BpeTrainer(
        BpeTrainerBuilder::new()
            .vocab_size(VOCAB)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(specials.clone())
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build(),
    );
    let texts: Vec<String> = conversations
        .iter()
        .take(20_000)
        .map(|c| {
            let text: String = c.iter().map(|(s, _)| s.as_str()).collect();
            GLM4_SPECIAL_TOKENS.iter().fold(text, |t, s| t.replace(s, "\n"))
        })
        .collect();
    tokenizer.train(&mut trainer, texts.iter()).map_err(anyhow::Error::msg)?;
    tokenizer.add_special_tokens(specials).map_err(anyhow::Error::msg)?;
    tokenizer.save(path, false).map_err(anyhow::Error::msg)?;
    Ok(tokenizer)
}

/// The demo model's shape.
fn model_config(vocab: usize, eos: Vec<u32>) -> serde_json::Value {
    json!({
        "architectures": ["Glm4ForCausalLM"],
        "model_type": "glm4",
        "vocab_size": vocab,
        "hidden_size": 192,
        "intermediate_size": 512,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "partial_rotary_factor": 0.5,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 512,
        "attention_bias": true,
        "tie_word_embeddings": false,
        "hidden_act": "silu",
        "eos_token_id": eos,
        "torch_dtype": "float32",
        "autoglm": {
            "tools_block": "none",
            "copy_arguments": {
                "get_weather": ["location"],
                "evaluate": ["expression"],
                "convert": ["from", "to"],
                "write": ["name", "text"],
                "read": ["name"],
                "delete": ["name"],
                "word_count": ["text"],
                "slugify": ["text"],
                "base64_encode": ["text"],
                "base64_decode": ["data"],
                "sha256": ["text"],
                "get": ["url"]
            }
        }
    })
}

/// A conversation as token ids with a flag per token: trained on or not.
fn encode(
    tokenizer: &Tokenizer,
    conversation: &Conversation,
) -> anyhow::Result<(Vec<u32>, Vec<f32>)> {
    let mut ids = Vec::new();
    let mut weights = Vec::new();
    for (text, trained) in conversation {
        let encoding = tokenizer.encode(text.as_str(), false).map_err(anyhow::Error::msg)?;
        ids.extend_from_slice(encoding.get_ids());
        weights.extend(std::iter::repeat_n(if *trained { 1.0 } else { 0.0 }, encoding.len()));
    }
    Ok((ids, weights))
}

/// Train and save the model into `args.out`.
pub fn train_model(
    args: &Args,
    conversations: &[Conversation],
    tokenizer: &Tokenizer,
) -> anyhow::Result<()> {
    let id = |t: &str| tokenizer.token_to_id(t).with_context(|| format!("the tokenizer lacks {t}"));
    let (eot, user, observation) = (id("<|endoftext|>")?, id("<|user|>")?, id("<|observation|>")?);
    let config_json = model_config(tokenizer.get_vocab_size(true), vec![eot, user, observation]);
    let config: ModelConfig = serde_json::from_value(config_json.clone())?;
    let encoded: Vec<(Vec<u32>, Vec<f32>)> =
        conversations.iter().map(|c| encode(tokenizer, c)).collect::<anyhow::Result<_>>()?;
    // Every conversation starts with the same prompt head (the tools block): train it once per
    // step as a shared prefix. The last shared token stays in each suffix so that it predicts
    // the suffix's first token.
    let shared = common_prefix(&encoded);
    let prefix = encoded[0].0[..shared.saturating_sub(1)].to_vec();
    let encoded: Vec<(Vec<u32>, Vec<f32>)> = encoded
        .into_iter()
        .map(|(ids, w)| (ids[prefix.len()..].to_vec(), w[prefix.len()..].to_vec()))
        .collect();
    eprintln!("shared prompt head: {} tokens", prefix.len());
    let longest = prefix.len() + encoded.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
    let mean = encoded.iter().map(|(ids, _)| ids.len()).sum::<usize>() as f64
        / encoded.len().max(1) as f64;
    eprintln!("{} conversations, {mean:.0} tokens on average, longest {longest}", encoded.len());
    anyhow::ensure!(
        longest <= config.max_position_embeddings,
        "a conversation of {longest} tokens exceeds the context"
    );

    let device = Device::Cpu;
    let varmap = VarMap::new();
    let model = GlmModel::new(
        &config,
        Architecture::Glm4,
        VarBuilder::from_varmap(&varmap, DType::F32, &device),
        Kernels::Differentiable,
        |_, _| {},
    )?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    seeded_init(&varmap, &mut rng)?;
    let params: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
    eprintln!(
        "model: {:.2}M parameters; {} steps of {} conversations",
        params as f64 / 1e6,
        args.steps,
        args.batch
    );

    let mut optimiser = candle_nn::AdamW::new(
        varmap.all_vars(),
        candle_nn::ParamsAdamW {
            lr: args.lr,
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-8,
            weight_decay: 0.01,
        },
    )?;
    let warmup = (args.steps / 50).max(1);
    let started = Instant::now();
    let bar = indicatif::ProgressBar::new(args.steps as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps, {msg} [{elapsed} < {eta}]",
        )
        .expect("valid template"),
    );
    let mut recent = Vec::new();
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut log = String::new();
    for step in 0..args.steps {
        let lr = if step < warmup {
            args.lr * (step + 1) as f64 / warmup as f64
        } else {
            let progress = (step - warmup) as f64 / (args.steps - warmup).max(1) as f64;
            args.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
        };
        optimiser.set_learning_rate(lr);
        if batches.is_empty() {
            batches = length_buckets(&encoded, args.batch, &mut rng);
        }
        let batch: Vec<&(Vec<u32>, Vec<f32>)> =
            batches.pop().unwrap_or_default().into_iter().map(|i| &encoded[i]).collect();
        let loss = batch_loss(&model, &prefix, &batch, eot, &device)?;
        optimiser.backward_step(&loss)?;
        recent.push(loss.to_scalar::<f32>()?);
        if recent.len() == 100 || step + 1 == args.steps {
            let mean = recent.iter().sum::<f32>() / recent.len() as f32;
            let line = format!(
                "step {} loss {mean:.4} lr {lr:.2e} elapsed {:.0}s",
                step + 1,
                started.elapsed().as_secs_f64()
            );
            bar.set_message(format!("loss {mean:.4}"));
            bar.suspend(|| eprintln!("{line}"));
            log.push_str(&line);
            log.push('\n');
            recent.clear();
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    eprintln!("trained in {:.0} s", started.elapsed().as_secs_f64());

    varmap.save(args.out.join("model.safetensors"))?;
    std::fs::write(
        args.out.join("config.json"),
        serde_json::to_string_pretty(&config_json)? + "\n",
    )?;
    let generation = json!({"do_sample": false, "temperature": 0.0, "max_new_tokens": 128});
    std::fs::write(
        args.out.join("generation_config.json"),
        serde_json::to_string_pretty(&generation)? + "\n",
    )?;
    std::fs::write(args.out.join("train-log.txt"), log)?;
    Ok(())
}

/// Mean cross-entropy of the trained tokens of a right-padded batch of conversations that
/// continue `prefix` (their first token follows its last).
fn batch_loss(
    model: &GlmModel,
    prefix: &[u32],
    batch: &[&(Vec<u32>, Vec<f32>)],
    pad: u32,
    device: &Device,
) -> anyhow::Result<Tensor> {
    let width = batch.iter().map(|(ids, _)| ids.len() - 1).max().unwrap_or(1);
    let (mut inputs, mut targets, mut weights) = (Vec::new(), Vec::new(), Vec::new());
    for (ids, w) in batch {
        let n = ids.len() - 1;
        inputs.extend(ids[..n].iter().copied().chain(std::iter::repeat_n(pad, width - n)));
        targets.extend(ids[1..].iter().copied().chain(std::iter::repeat_n(pad, width - n)));
        weights.extend(w[1..].iter().copied().chain(std::iter::repeat_n(0.0, width - n)));
    }
    let b = batch.len();
    let inputs = Tensor::from_vec(inputs, (b, width), device)?;
    let targets = Tensor::from_vec(targets, (b * width, 1), device)?;
    let count: f32 = weights.iter().sum();
    let weights = Tensor::from_vec(weights, b * width, device)?;
    let logits = model.forward_train(prefix, &inputs)?;
    let vocab = logits.dim(D::Minus1)?;
    let logp = candle_nn::ops::log_softmax(&logits.reshape((b * width, vocab))?, D::Minus1)?;
    let picked = logp.gather(&targets, 1)?.squeeze(1)?;
    Ok(((picked * weights)?.sum_all()? / f64::from(count.max(1.0)))?.neg()?)
}

/// One epoch of batches in random order, each of conversations of similar length (so little
/// of a batch is padding).
fn length_buckets(
    encoded: &[(Vec<u32>, Vec<f32>)],
    size: usize,
    rng: &mut rand::rngs::StdRng,
) -> Vec<Vec<usize>> {
    use rand::seq::SliceRandom;
    let mut order: Vec<usize> = (0..encoded.len()).collect();
    order.shuffle(rng);
    order.sort_by_key(|&i| encoded[i].0.len());
    let mut batches: Vec<Vec<usize>> = order.chunks(size).map(<[usize]>::to_vec).collect();
    batches.shuffle(rng);
    batches
}

/// Length of the longest token prefix all conversations share.
fn common_prefix(encoded: &[(Vec<u32>, Vec<f32>)]) -> usize {
    let first = &encoded[0].0;
    encoded.iter().fold(first.len(), |n, (ids, _)| {
        ids.iter().zip(first).take(n).take_while(|(a, b)| a == b).count()
    })
}

/// Reproducible initial weights: normal(0, 1/sqrt(fan_in)) for matrices, 0.02 for the
/// embedding, zero biases, unit norms.
fn seeded_init(varmap: &VarMap, rng: &mut rand::rngs::StdRng) -> anyhow::Result<()> {
    let data = varmap.data().lock().map_err(|_| anyhow::anyhow!("the variable map is poisoned"))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let values: Vec<f32> = if name.ends_with("norm.weight") {
            vec![1.0; n]
        } else if name.ends_with(".bias") {
            vec![0.0; n]
        } else {
            let std =
                if name.contains("embed_tokens") { 0.02 } else { 1.0 / (dims[1] as f32).sqrt() };
            (0..n).map(|_| std * normal(rng)).collect()
        };
        var.set(&Tensor::from_vec(values, dims.as_slice(), var.device())?)?;
    }
    Ok(())
}

/// A standard normal sample (Box-Muller).
fn normal(rng: &mut rand::rngs::StdRng) -> f32 {
    let u: f32 = rng.random_range(f32::EPSILON..1.0);
    let v: f32 = rng.random_range(0.0..1.0);
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f32::consts::PI * v).cos()
}
