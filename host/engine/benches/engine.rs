//! GLM engine throughput on this machine's CPU: prefill and decode tokens/s at batch 1 and
//! batch 8, for a tiny config and a ~1B-parameter GLM-4-0414-shaped config with random
//! weights (really materialised: zero weights would leave pages untouched and flatter us).
//! `--quick` (or AUTOGLM_BENCH_QUICK=1) leaves the 1B case out. Records the report's
//! `engine` section under `just bench`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use autoglm_bench::{Chart, Section, Series, Table, ratio, significant};
use autoglm_engine::tokenizer::GLM4_SPECIAL_TOKENS;
use autoglm_engine::weights::expected_tensors;
use autoglm_engine::{
    Architecture, BatchItem, DeviceChoice, Engine, GlmModel, KvCache, ModelConfig, SamplingParams,
};
use autoglm_test_support::checkpoint::{argmax, random_model, random_tensors};
use autoglm_test_support::gguf::{self, Arch, Vocabulary};
use candle_core::quantized::GgmlDType;
use serde_json::json;

struct Case {
    name: &'static str,
    config: serde_json::Value,
    prompt: usize,
    decode_steps: usize,
}

fn main() -> anyhow::Result<()> {
    let quick = autoglm_bench::quick();
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
                "partial_rotary_factor": 0.5, "rope_theta": 10000.0, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5}),
            prompt: 32,
            decode_steps: 8,
        });
    }
    let threads = candle_core::utils::get_num_threads();
    let mut table = Table::new(&[
        "model",
        "parameters",
        "prefill tok/s, batch 1",
        "prefill tok/s, batch 8",
        "decode tok/s, batch 1",
        "decode tok/s, batch 8",
        "decode gain (8 ÷ 1)",
    ]);
    let mut series = Series::named(&["decode, batch 1", "decode, batch 8"]);
    let mut notes = Vec::new();
    let mut peers = Vec::new();
    for case in &cases {
        let config: ModelConfig =
            serde_json::from_value(case.config.clone()).expect("valid config");
        let params: usize = expected_tensors(&config, Architecture::Glm4)
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        let vocab = config.vocab_size as u32;
        let f32_decode = {
            let model = random_model(&config, 7);
            let one = measure(&model, vocab, 1, case.prompt, case.decode_steps);
            let eight = measure(&model, vocab, 8, case.prompt, case.decode_steps);
            table.row(speed_row(case.name.to_string(), params, one, eight));
            series[0].values.push(one.1);
            series[1].values.push(eight.1);
            notes.push(format!(
                "{}: decoding 8 sequences in one batch gives {} the tokens/s of one at a time \
                 (prefill {}).",
                case.name,
                ratio(eight.1, one.1),
                ratio(eight.0, one.0)
            ));
            one.1
        };
        if case.name != "1B" {
            continue;
        }
        // The same weights as GGUF files, quantized: what memory bandwidth buys.
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_0] {
            let file = bench_gguf(case, &config, dtype)?;
            let engine = Engine::load(&file, DeviceChoice::Cpu, |_, _| {})?;
            let one = measure(engine.model(), vocab, 1, case.prompt, case.decode_steps);
            let eight = measure(engine.model(), vocab, 8, case.prompt, case.decode_steps);
            table.row(speed_row(format!("{} {dtype:?} GGUF", case.name), params, one, eight));
            notes.push(format!(
                "{} {dtype:?}: decode at batch 1 is {} our own f32's{}.",
                case.name,
                ratio(one.1, f32_decode),
                if dtype == GgmlDType::Q4_0 { " (goal ≥ 2x)" } else { "" }
            ));
            if dtype == GgmlDType::Q4_0 {
                peers.push((format!("GLM-4 {} shape, Q4_0, random", case.name), file, engine));
            }
        }
    }
    println!("engine (CPU, {threads} threads)\n{}", table.text());
    let mut section = Section::new(
        "engine",
        "Engine: prefill and decode tokens/s, batching gain",
        &format!(
            "The GLM-4 engine on this machine's CPU ({threads} threads), with random weights \
             really materialised: the demo model's shape (tiny) and{} a ~1B-parameter GLM-4-0414 \
             shape, in f32 and as the same weights in Q8_0 and Q4_0 GGUF files. Prefill: one pass over a 64-token (tiny) or 32-token (1B) prompt per \
             sequence; decode: one token per sequence per pass. The baseline of each batched figure is batch 1.",
            if quick { " (left out in quick mode)" } else { "" }
        ),
    );
    section.tables.push(table);
    section.notes = notes;
    let smollm2 = gguf::smollm2();
    let engine = Engine::load(&smollm2, DeviceChoice::Cpu, |_, _| {})?;
    let (prompt, steps) = (64, if quick { 16 } else { 64 });
    let (peer, peer_note) =
        beside_llama_cpp("SmolLM2-135M Q4_1", &smollm2, &engine, prompt, steps)?;
    section.tables.push(peer);
    section.notes.push(peer_note);
    section.notes.push(time_to_first_token(&engine)?);
    for (name, file, engine) in &peers {
        let (peer, peer_note) = beside_llama_cpp(name, file, engine, 32, 16)?;
        section.tables.push(peer);
        section.notes.push(peer_note);
    }
    section.notes.push(
        "Where the time goes in the GGUF rows: the block matrices meet unquantized f32 \
         activations (so a file computes what its dequantized weights compute), unpacked in \
         registers. Decoding one sequence streams the blocks (85 MB a token for SmolLM2, 0.67 GB \
         for the 1B shape in Q4_0) and unpacks each value once; 8 sequences and prefills are \
         bound by f32 multiply-adds, 8 values an instruction, where llama.cpp rounds the \
         activations to 8 bits and multiplies 32 values an instruction, hence its lead in \
         prefill and on the 1B shape. Above 32 rows (a prefill) tiles of the matrix are \
         expanded to f32 for candle's GEMM."
            .into(),
    );
    section.charts.push(Chart {
        file: "engine.png".into(),
        title: "Decode tokens/s, batch 1 vs batch 8 (log scale)".into(),
        unit: "tokens/s".into(),
        log_scale: true,
        groups: cases.iter().map(|c| c.name.to_string()).collect(),
        series,
    });
    section.record()
}

/// A row of the speed table.
fn speed_row(name: String, params: usize, one: (f64, f64), eight: (f64, f64)) -> Vec<String> {
    vec![
        name,
        format!("{}M", significant(params as f64 / 1e6)),
        significant(one.0),
        significant(eight.0),
        significant(one.1),
        significant(eight.1),
        ratio(eight.1, one.1),
    ]
}

/// The `case` model's random weights (the f32 rows' seed) as a glm4 GGUF of `dtype` with a
/// BPE vocabulary in its metadata, which llama.cpp loads too; written once into
/// target/bench-gguf.
fn bench_gguf(case: &Case, config: &ModelConfig, dtype: GgmlDType) -> anyhow::Result<PathBuf> {
    let dir = autoglm_test_support::target_dir().join("bench-gguf");
    let path = dir.join(format!("glm4-{}-{dtype:?}.gguf", case.name));
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir)?;
    eprintln!("writing {} (once) ...", path.display());
    let tensors = random_tensors(&expected_tensors(config, Architecture::Glm4), 7);
    // llama.cpp refuses a vocabulary without merges, so a small BPE is trained on the
    // prompt it measures with, then padded to the model's vocabulary.
    let corpus = ["The quick brown fox jumps over the lazy dog while the engine counts tokens."];
    let mut vocabulary = Vocabulary::trained(&corpus, 300, &GLM4_SPECIAL_TOKENS);
    vocabulary.pad_to(config.vocab_size);
    let mut metadata = gguf::model_metadata(Arch::Glm4, &case.config);
    metadata.extend(vocabulary.metadata("<|endoftext|>", Some("<|user|>")));
    // Written aside and renamed, so an interrupted run leaves no half file to be taken.
    let partial = path.with_extension("partial");
    gguf::write(&partial, &metadata, &gguf::gguf_tensors(Arch::Glm4, &tensors, dtype));
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

/// `engine` (holding `file`) beside llama.cpp on the same file: prefill and decode tokens/s,
/// greedy, a `prompt`-token prompt, `steps` new tokens, end of text ignored.
fn beside_llama_cpp(
    name: &str,
    file: &Path,
    engine: &Engine,
    prompt: usize,
    steps: usize,
) -> anyhow::Result<(Table, String)> {
    let threads = candle_core::utils::get_num_threads();
    let vocab = engine.tokenizer().vocab_size() as u32;
    let one = measure(engine.model(), vocab, 1, prompt, steps);
    let eight = measure(engine.model(), vocab, 8, prompt, steps);
    let peer = llama_cpp(file, threads, prompt, steps)?;
    let mut table = Table::new(&[
        name,
        "prefill tok/s",
        "decode tok/s, batch 1",
        "decode tok/s, batch 8",
        "batch 1 ÷ llama.cpp (goal ≥ 0.5x)",
        "batch 8 ÷ llama.cpp batch 1 (goal ≥ 1.5x)",
    ]);
    table.row(vec![
        format!("llama.cpp (node-llama-cpp 3.21.1, {threads} threads)"),
        significant(peer.0),
        significant(peer.1),
        String::new(),
        String::new(),
        String::new(),
    ]);
    table.row(vec![
        format!("this engine ({})", engine.info().format),
        significant(one.0),
        significant(one.1),
        significant(eight.1),
        ratio(one.1, peer.1),
        ratio(eight.1, peer.1),
    ]);
    println!("{name} on this engine and on llama.cpp\n{}", table.text());
    let note = format!(
        "{name}: decode at batch 1 is {} llama.cpp's on the same file and threads, and 8 \
         sequences together {} llama.cpp's batch 1 (greedy, a {prompt}-token prompt, {steps} \
         new tokens, end of text ignored); prefill {} llama.cpp's.",
        ratio(one.1, peer.1),
        ratio(eight.1, peer.1),
        ratio(one.0, peer.0),
    );
    Ok((table, note))
}

/// Time to the first token behind a ~1,000-token tools block: the first request prefills
/// it, the next reuses it from the prefix cache.
fn time_to_first_token(engine: &Engine) -> anyhow::Result<String> {
    let tools = (0..40)
        .map(|i| format!("tool_{i}(city: string, units: string): looks up item {i} for a city. "))
        .collect::<String>();
    let ask = |question: &str| {
        let prompt = format!(
            "<|im_start|>system\nYou can call these tools: {tools}<|im_end|>\n<|im_start|>user\n\
             {question}<|im_end|>\n<|im_start|>assistant\n"
        );
        let started = Instant::now();
        let made = engine.generate(&prompt, &SamplingParams::greedy(1), |_| {});
        made.map(|g| (started.elapsed(), g.prompt_tokens))
    };
    let (cold, tokens) = ask("What is the weather in Paris?")?;
    let (warm, _) = ask("What is the weather in Oslo?")?;
    Ok(format!(
        "Time to the first token behind a {tokens}-token prompt (a tools block of 40 tools): \
         {} cold, {} with the prefix cache holding the tools block from an earlier question \
         ({}; goal ≤ 0.1x).",
        autoglm_bench::duration(cold),
        autoglm_bench::duration(warm),
        ratio(warm.as_secs_f64(), cold.as_secs_f64()),
    ))
}

/// llama.cpp's prefill and decode tokens/s on `file` (bench/llama-cpp/measure.mjs, installed
/// into target/llama-cpp by `just bench`).
fn llama_cpp(
    file: &Path,
    threads: usize,
    prompt: usize,
    steps: usize,
) -> anyhow::Result<(f64, f64)> {
    let dir = autoglm_test_support::target_dir().join("llama-cpp");
    let out = std::process::Command::new("node")
        .current_dir(&dir)
        .arg("measure.mjs")
        .arg(file)
        .args([threads.to_string(), prompt.to_string(), steps.to_string()])
        .output()
        .map_err(|e| anyhow::anyhow!("node runs llama.cpp's measurement: {e}"))?;
    anyhow::ensure!(
        out.status.success(),
        "llama.cpp's measurement failed (run `bench/llama-cpp/ensure target/llama-cpp`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let measured: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let rate = |key: &str| measured[key].as_f64().ok_or_else(|| anyhow::anyhow!("no {key}"));
    Ok((rate("prefill_tok_s")?, rate("decode_tok_s")?))
}

/// Tokens/s for prefilling `batch` prompts of `prompt` tokens in one pass, then decoding
/// `steps` tokens for each, one pass per step.
fn measure(model: &GlmModel, vocab: u32, batch: usize, prompt: usize, steps: usize) -> (f64, f64) {
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
