//! The GLM engine against tiny random-weight checkpoints written by the test: agreement with
//! candle-transformers' reference model, batching and KV-cache equivalence, prompts,
//! and loading errors.

use std::path::Path;

use autoglm_engine::weights::{expected_tensors, open};
use autoglm_engine::{
    Architecture, BatchItem, ChatMessage, ChatTemplate, DeviceChoice, Engine, EngineError,
    FinishReason, GlmModel, Kernels, ModelConfig, Role, SamplingParams, ToolCall, ToolDef,
};
use autoglm_test_support::checkpoint::{argmax, tiny_config, write_model};
use candle_core::{DType, Device, IndexOp, Tensor};
use serde_json::json;

fn model_dir(architecture: &str, seed: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), &tiny_config(architecture), seed);
    dir
}

fn load_model(dir: &Path) -> GlmModel {
    load_model_with(dir, Kernels::Fused)
}

fn load_model_with(dir: &Path, kernels: Kernels) -> GlmModel {
    let config = ModelConfig::load(dir).unwrap();
    let arch = config.architecture().unwrap();
    let vb = open(
        &[dir.join("model.safetensors")],
        &expected_tensors(&config, arch),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    GlmModel::new(&config, arch, vb, kernels, |_, _| {}).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn logits(model: &GlmModel, tokens: &[u32], cache: &mut autoglm_engine::KvCache) -> Tensor {
    model.forward(&mut [BatchItem { tokens, cache }]).unwrap().i(0).unwrap()
}

/// The most likely token of one position's logits.
fn top(logits: &Tensor) -> u32 {
    argmax(&logits.unsqueeze(0).unwrap())[0]
}

#[test]
fn logits_match_candle_transformers_glm4_new() {
    use candle_transformers::models::glm4_new;
    let dir = model_dir("Glm4ForCausalLM", 1);
    let ours = load_model(dir.path());
    let config: glm4_new::Config =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(
            &[dir.path().join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
    }
    .unwrap();
    let mut reference = glm4_new::ModelForCausalLM::new(&config, vb).unwrap();

    let prompt = [258u32, 260, 263, 72, 101, 108, 108, 111, 264];
    let mut cache = ours.new_cache();
    let mut ours_logits = logits(&ours, &prompt, &mut cache);
    let input = Tensor::new(&prompt[..], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let mut ref_logits = reference.forward(&input, 0).unwrap().flatten_all().unwrap();
    for (step, offset) in (0..6).zip(prompt.len()..) {
        let diff = max_abs_diff(&ours_logits, &ref_logits);
        assert!(diff <= 1e-4, "step {step}: logits differ by {diff}");
        assert!(
            ours_logits.abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap() > 1e-2,
            "logits are all near zero"
        );
        let next = top(&ours_logits);
        ours_logits = logits(&ours, &[next], &mut cache);
        let input = Tensor::new(&[next], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        ref_logits = reference.forward(&input, offset).unwrap().flatten_all().unwrap();
    }
}

#[test]
fn kv_cache_decode_equals_full_recompute() {
    for arch in ["Glm4ForCausalLM", "GlmForCausalLM"] {
        let dir = model_dir(arch, 2);
        let model = load_model(dir.path());
        let mut tokens = vec![258u32, 260, 263, 87, 104, 97, 116, 264];
        let mut cache = model.new_cache();
        let mut cached = logits(&model, &tokens, &mut cache);
        for step in 0..8 {
            let full = logits(&model, &tokens, &mut model.new_cache());
            let diff = max_abs_diff(&cached, &full);
            assert!(
                diff <= 1e-4,
                "{arch} step {step}: cached decode differs from recompute by {diff}"
            );
            let next = top(&cached);
            tokens.push(next);
            cached = logits(&model, &[next], &mut cache);
        }
        assert_eq!(cache.len(), tokens.len());
    }
}

#[test]
fn batched_decode_equals_decoding_each_alone() {
    let dir = model_dir("Glm4ForCausalLM", 3);
    let model = load_model(dir.path());
    let prompts: [&[u32]; 4] = [
        &[258, 260, 263, 65],
        &[258, 260, 263, 66, 67, 68, 69, 70, 71, 72, 264],
        &[258, 260, 264],
        &[258, 260, 263, 73, 74, 75, 264],
    ];
    let steps = 10;
    let alone: Vec<Vec<Tensor>> = prompts
        .iter()
        .map(|prompt| {
            let mut cache = model.new_cache();
            let mut out = vec![logits(&model, prompt, &mut cache)];
            for _ in 1..steps {
                let next = top(out.last().unwrap());
                out.push(logits(&model, &[next], &mut cache));
            }
            out
        })
        .collect();

    // Sequences 0 and 1 start together; 2 joins after two steps and 3 after five, so
    // prefill and decode share passes (continuous batching).
    let joins = [0, 0, 2, 5];
    let mut caches: Vec<_> = prompts.iter().map(|_| model.new_cache()).collect();
    let mut pending: Vec<Vec<u32>> = prompts.iter().map(|p| p.to_vec()).collect();
    let mut done = [0usize; 4];
    for tick in 0..steps + 5 {
        let members: Vec<usize> = (0..4).filter(|&i| joins[i] <= tick && done[i] < steps).collect();
        if members.is_empty() {
            break;
        }
        let mut batch: Vec<BatchItem> = Vec::new();
        for (i, cache) in caches.iter_mut().enumerate() {
            if members.contains(&i) {
                batch.push(BatchItem { tokens: &pending[i], cache });
            }
        }
        let out = model.forward(&mut batch).unwrap();
        drop(batch);
        for (row, &i) in members.iter().enumerate() {
            let got = out.i(row).unwrap();
            let diff = max_abs_diff(&got, &alone[i][done[i]]);
            assert!(diff <= 1e-4, "sequence {i} step {}: batched logits differ by {diff}", done[i]);
            pending[i] = vec![top(&got)];
            done[i] += 1;
        }
    }
    assert_eq!(done, [steps; 4], "every sequence ran to the end");
}

#[test]
fn engine_steps_many_sequences_to_the_same_tokens_as_one_at_a_time() {
    let dir = model_dir("Glm4ForCausalLM", 4);
    let engine = Engine::load(dir.path(), DeviceChoice::Cpu, |_, _| {}).unwrap();
    let prompts = [
        "[gMASK]<sop><|user|>\nhi<|assistant|>",
        "[gMASK]<sop><|user|>\nweather in Paris?<|assistant|>",
        "[gMASK]<sop><|user|>\n你好<|assistant|>",
    ];
    let params = SamplingParams::greedy(12);
    let alone: Vec<Vec<u32>> =
        prompts.iter().map(|p| engine.generate(p, &params, |_| {}).unwrap().tokens).collect();
    let mut seqs: Vec<_> = prompts.iter().map(|p| engine.start(p, &params).unwrap()).collect();
    while seqs.iter().any(|s| s.finish_reason().is_none()) {
        let mut refs: Vec<&mut _> = seqs.iter_mut().collect();
        engine.step(&mut refs).unwrap();
    }
    for (seq, expected) in seqs.iter().zip(&alone) {
        assert_eq!(seq.generated(), expected.as_slice());
        assert!(seq.finish_reason().is_some());
    }

    // Sampling with a seed repeats itself; different seeds may differ but stay in the vocabulary.
    let sampled = SamplingParams {
        max_new_tokens: 16,
        temperature: 1.0,
        top_k: 20,
        top_p: 0.9,
        seed: Some(7),
        ..Default::default()
    };
    let a = engine.generate(prompts[0], &sampled, |_| {}).unwrap();
    let b = engine.generate(prompts[0], &sampled, |_| {}).unwrap();
    assert_eq!(a.tokens, b.tokens);
    assert!(a.tokens.iter().all(|&t| t < 272));
}

#[test]
fn generation_stops_on_stop_tokens_and_length() {
    let dir = model_dir("Glm4ForCausalLM", 5);
    let engine = Engine::load(dir.path(), DeviceChoice::Cpu, |_, _| {}).unwrap();
    let g = engine
        .generate("[gMASK]<sop><|user|>\nx<|assistant|>", &SamplingParams::greedy(5), |_| {})
        .unwrap();
    match g.finish {
        FinishReason::Length => assert_eq!(g.tokens.len(), 5),
        FinishReason::Stop(token) => {
            assert!([256, 263, 265].contains(&token), "stopped on {token}")
        }
        FinishReason::Aborted => panic!("nothing aborted the generation"),
    }
    // Streamed text pieces add up to the decoded text.
    let mut streamed = String::new();
    let g = engine
        .generate("[gMASK]<sop><|user|>\ny<|assistant|>", &SamplingParams::greedy(30), |t| {
            streamed.push_str(t)
        })
        .unwrap();
    assert_eq!(streamed, g.text);

    let bad = SamplingParams { top_p: 0.0, ..SamplingParams::greedy(4) };
    let err = engine.start("hi", &bad).err().expect("top_p 0 is rejected");
    assert!(err.to_string().contains("top_p"), "{err}");
    let long = "a".repeat(300);
    let err = engine
        .start(&long, &SamplingParams::greedy(4))
        .err()
        .expect("too long a prompt is rejected");
    assert!(matches!(err, EngineError::ContextOverflow { tokens: 300, limit: 256 }), "{err}");
}

fn weather_tool() -> ToolDef {
    ToolDef {
        name: "get_weather".into(),
        description: "查询城市天气 (current weather)".into(),
        parameters: json!({
            "type": "object",
            "properties": {"location": {"type": "string", "description": "City <name>"}},
            "required": ["location"]
        }),
    }
}

const TOOLS_BLOCK: &str = "<|system|>\n你是一个名为 ChatGLM 的人工智能助手。你是基于智谱 AI 公司训练的语言模型 GLM-4 模型开发的，你的任务是针对用户的问题和要求提供适当的答复和支持。\n\n# 可用工具\n## get_weather\n\n{\n    \"name\": \"get_weather\",\n    \"description\": \"查询城市天气 (current weather)\",\n    \"parameters\": {\n        \"type\": \"object\",\n        \"properties\": {\n            \"location\": {\n                \"type\": \"string\",\n                \"description\": \"City <name>\"\n            }\n        },\n        \"required\": [\n            \"location\"\n        ]\n    }\n}\n在调用上述函数时，请使用 Json 格式表示调用的参数。";

fn conversation() -> Vec<ChatMessage> {
    let arguments = json!({"location": "北京"}).as_object().unwrap().clone();
    vec![
        ChatMessage::new(Role::System, "Be brief."),
        ChatMessage::new(Role::User, "What's the weather in 北京?"),
        ChatMessage::tool_call(ToolCall { name: "get_weather".into(), arguments }),
        ChatMessage::new(Role::Observation, "{\"temperature\": 25, \"condition\": \"sunny\"}"),
        ChatMessage::new(Role::Assistant, "It is 25°C and sunny in 北京."),
        ChatMessage::new(Role::User, "And in Paris?"),
    ]
}

/// Golden prompts, written by hand from GLM-4-0414's official chat template (as transformers
/// renders it: trim_blocks, lstrip_blocks); the checkpoint's own template rendered by the
/// engine and the built-in renderer must both produce them exactly.
#[test]
fn prompts_equal_the_official_template_golden_strings() {
    let official = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/glm-4-0414.chat_template.jinja"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        json!({"chat_template": official}).to_string(),
    )
    .unwrap();
    let from_checkpoint =
        ChatTemplate::for_checkpoint(dir.path(), Architecture::Glm4, Default::default()).unwrap();
    assert!(from_checkpoint.is_jinja());
    let built_in = ChatTemplate::built_in(Architecture::Glm4, Default::default());

    let cases: Vec<(Vec<ChatMessage>, Vec<ToolDef>, String)> = vec![
        (
            vec![ChatMessage::new(Role::User, "Hello")],
            vec![],
            "[gMASK]<sop><|user|>\nHello<|assistant|>".into(),
        ),
        (
            vec![
                ChatMessage::new(Role::System, "Be brief."),
                ChatMessage::new(Role::User, "What's the weather in 北京?"),
            ],
            vec![weather_tool()],
            format!(
                "[gMASK]<sop>{TOOLS_BLOCK}<|system|>\nBe brief.<|user|>\nWhat's the weather in 北京?<|assistant|>"
            ),
        ),
        (
            conversation(),
            vec![weather_tool()],
            format!(
                "[gMASK]<sop>{TOOLS_BLOCK}<|system|>\nBe brief.<|user|>\nWhat's the weather in 北京?<|assistant|>get_weather\n\
                 {{\"location\": \"北京\"}}<|observation|>\n{{\"temperature\": 25, \"condition\": \"sunny\"}}<|assistant|>\n\
                 It is 25°C and sunny in 北京.<|user|>\nAnd in Paris?<|assistant|>"
            ),
        ),
    ];
    for (messages, tools, golden) in cases {
        assert_eq!(
            from_checkpoint.render(&messages, &tools).unwrap(),
            golden,
            "checkpoint template"
        );
        assert_eq!(built_in.render(&messages, &tools).unwrap(), golden, "built-in renderer");
    }
}

#[test]
fn a_broken_template_is_a_clear_error() {
    let err = ChatTemplate::jinja("{% for m in messages %}".into()).err().expect("unclosed for");
    assert!(err.to_string().starts_with("chat template:"), "{err}");
    let raising =
        ChatTemplate::jinja("{{ raise_exception('only user and assistant roles') }}".into())
            .unwrap();
    let err = raising.render(&[], &[]).unwrap_err();
    assert!(err.to_string().contains("only user and assistant roles"), "{err}");
}

fn load_error(dir: &Path) -> String {
    match Engine::load(dir, DeviceChoice::Cpu, |_, _| {}) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn loading_errors_say_what_is_wrong() {
    let dir = model_dir("Glm4ForCausalLM", 6);
    let path = dir.path();

    std::fs::remove_file(path.join("model.safetensors")).unwrap();
    let err = load_error(path);
    assert!(err.contains("weights") && err.contains("model.safetensors"), "{err}");

    // Weights of a different shape than config.json describes: every bad tensor is named.
    let mut wider = tiny_config("Glm4ForCausalLM");
    wider["hidden_size"] = json!(32);
    write_model(path, &wider, 6);
    std::fs::write(path.join("config.json"), tiny_config("Glm4ForCausalLM").to_string()).unwrap();
    let err = load_error(path);
    assert!(
        err.contains("model.embed_tokens.weight: expected shape [272, 64], found [272, 32]"),
        "{err}"
    );
    assert!(err.contains("model.layers.1.mlp.down_proj.weight"), "{err}");

    // GlmForCausalLM weights loaded as Glm4ForCausalLM lack the extra norms.
    write_model(path, &tiny_config("GlmForCausalLM"), 6);
    std::fs::write(path.join("config.json"), tiny_config("Glm4ForCausalLM").to_string()).unwrap();
    let err = load_error(path);
    assert!(err.contains("model.layers.0.post_self_attn_layernorm.weight: missing"), "{err}");

    std::fs::write(path.join("config.json"), tiny_config("ChatGLMModel").to_string()).unwrap();
    let err = load_error(path);
    assert!(
        err.contains("unsupported model architecture ChatGLMModel")
            && err.contains("Glm4ForCausalLM"),
        "{err}"
    );

    let mut bad = tiny_config("GlmForCausalLM");
    bad["num_key_value_heads"] = json!(3);
    std::fs::write(path.join("config.json"), bad.to_string()).unwrap();
    let err = load_error(path);
    assert!(
        err.contains("config.json") && err.contains("multiple of num_key_value_heads"),
        "{err}"
    );

    std::fs::write(path.join("config.json"), "{\"architectures\": [\"GlmForCausalLM\"]").unwrap();
    assert!(load_error(path).contains("config.json"));

    std::fs::remove_file(path.join("config.json")).unwrap();
    let err = load_error(path);
    assert!(err.contains("model configuration is missing") && err.contains("config.json"), "{err}");

    write_model(path, &tiny_config("GlmForCausalLM"), 6);
    std::fs::remove_file(path.join("tokenizer.json")).unwrap();
    assert!(load_error(path).contains("tokenizer.json"));

    // A tokenizer without GLM-4's special tokens.
    std::fs::write(
        path.join("tokenizer.json"),
        r#"{"version":"1.0","model":{"type":"BPE","vocab":{"a":0},"merges":[]}}"#,
    )
    .unwrap();
    let err = load_error(path);
    assert!(err.contains("no <|endoftext|> token"), "{err}");

    // A shard index naming a file that is not there.
    write_model(path, &tiny_config("GlmForCausalLM"), 6);
    std::fs::write(
        path.join("model.safetensors.index.json"),
        json!({"weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}).to_string(),
    )
    .unwrap();
    let err = load_error(path);
    assert!(err.contains("model-00002-of-00002.safetensors"), "{err}");
}

#[test]
fn sharded_checkpoints_load() {
    use autoglm_test_support::checkpoint::{random_tensors, save};
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), &tiny_config("GlmForCausalLM"), 8);
    let whole = load_model(dir.path());
    let config = ModelConfig::load(dir.path()).unwrap();
    let tensors = random_tensors(&expected_tensors(&config, Architecture::Glm), 8);
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let (mut first, mut second) =
        (std::collections::HashMap::new(), std::collections::HashMap::new());
    let mut map = serde_json::Map::new();
    for (name, tensor) in tensors {
        let (shard, file) = if name.contains("layers.1") || name.starts_with("lm_head") {
            (&mut second, "model-00002-of-00002.safetensors")
        } else {
            (&mut first, "model-00001-of-00002.safetensors")
        };
        map.insert(name.clone(), json!(file));
        shard.insert(name, tensor);
    }
    save(&first, &dir.path().join("model-00001-of-00002.safetensors"));
    save(&second, &dir.path().join("model-00002-of-00002.safetensors"));
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        json!({"weight_map": map}).to_string(),
    )
    .unwrap();
    let engine = Engine::load(dir.path(), DeviceChoice::Cpu, |_, _| {}).unwrap();
    let tokens = [258u32, 260, 263, 65];
    let a = logits(&whole, &tokens, &mut whole.new_cache());
    let b = logits(engine.model(), &tokens, &mut engine.model().new_cache());
    assert!(max_abs_diff(&a, &b) == 0.0, "the shards hold the same weights");
}

#[test]
fn differentiable_kernels_compute_the_same_logits() {
    let dir = model_dir("Glm4ForCausalLM", 9);
    let (fused, plain) =
        (load_model(dir.path()), load_model_with(dir.path(), Kernels::Differentiable));
    let prompts: [&[u32]; 2] = [&[258, 260, 263, 65, 66], &[258, 260, 264]];
    let run = |model: &GlmModel| {
        let mut caches = [model.new_cache(), model.new_cache()];
        let [a, b] = &mut caches;
        model
            .forward(&mut [
                BatchItem { tokens: prompts[0], cache: a },
                BatchItem { tokens: prompts[1], cache: b },
            ])
            .unwrap()
    };
    let diff = max_abs_diff(&run(&fused), &run(&plain));
    assert!(diff <= 1e-4, "fused and differentiable kernels differ by {diff}");
}

#[test]
fn device_names_parse_and_cuda_needs_the_feature() {
    assert_eq!("cpu".parse::<DeviceChoice>(), Ok(DeviceChoice::Cpu));
    assert_eq!("cuda:1".parse::<DeviceChoice>(), Ok(DeviceChoice::Cuda(1)));
    assert!("tpu".parse::<DeviceChoice>().unwrap_err().contains("cpu, cuda or cuda:N"));
    if !cfg!(feature = "cuda") {
        let dir = model_dir("GlmForCausalLM", 10);
        let err = Engine::load(dir.path(), DeviceChoice::Cuda(0), |_, _| {})
            .err()
            .expect("no cuda in this build");
        assert!(err.to_string().contains("--features cuda"), "{err}");
    }
}

#[test]
fn constrained_decoding_turns_a_random_model_into_valid_calls() {
    let mut config = tiny_config("Glm4ForCausalLM");
    config["autoglm"] =
        json!({"copy_arguments": {"get_weather": ["location"]}, "tools_block": "compact"});
    config["max_position_embeddings"] = json!(1024);
    let convert = ToolDef {
        name: "convert".into(),
        description: "Convert units".into(),
        parameters: json!({"type": "object", "properties": {
            "value": {"type": "number"}, "from": {"type": "string"}, "to": {"type": "string", "enum": ["km", "mi"]}
        }, "required": ["value", "from", "to"]}),
    };
    let tools = [weather_tool(), convert];
    let names = ["get_weather", "convert"];
    // The Han characters have no tokens of their own here: they arrive byte by byte.
    let request = "What's the weather in Buenos Aires or 北京, or 5 miles in km?";
    let params = SamplingParams { require_tool_call: true, ..SamplingParams::greedy(200) };
    let (mut calls, mut unconstrained_valid) = (0, 0);
    for seed in 0..6 {
        let dir = tempfile::tempdir().unwrap();
        write_model(dir.path(), &config, 100 + seed);
        let engine = Engine::load(dir.path(), DeviceChoice::Cpu, |_, _| {}).unwrap();
        let messages = [ChatMessage::new(Role::User, request)];
        let mut seq = engine.start_chat(&messages, &tools, &params).unwrap();
        while seq.finish_reason().is_none() {
            engine.step(&mut [&mut seq]).unwrap();
        }
        let text = engine.tokenizer().decode(seq.generated()).unwrap();
        if seq.finish_reason() == Some(FinishReason::Length) {
            continue; // a random model may ramble inside a string until the token limit
        }
        let reply = autoglm_engine::parse_reply(&text, &names);
        let autoglm_engine::Reply::Call(call) = reply else {
            panic!("seed {seed}: not a call: {text:?}");
        };
        calls += 1;
        match call.name.as_str() {
            "get_weather" => {
                let location = call.arguments["location"].as_str().unwrap();
                assert!(
                    request.contains(location) && !location.is_empty(),
                    "{location:?} is not copied from the request"
                );
            }
            _ => {
                assert!(call.arguments["value"].is_number(), "{text}");
                assert!(["km", "mi"].contains(&call.arguments["to"].as_str().unwrap()), "{text}");
            }
        }
        // The same model without the grammar rarely writes a valid call.
        let free = SamplingParams { constrain_calls: false, ..SamplingParams::greedy(60) };
        let g = engine.generate(&engine.render(&messages, &tools).unwrap(), &free, |_| {}).unwrap();
        if matches!(autoglm_engine::parse_reply(&g.text, &names), autoglm_engine::Reply::Call(_)) {
            unconstrained_valid += 1;
        }
    }
    assert!(calls >= 2, "only {calls} of 6 random models finished a call");
    assert_eq!(unconstrained_valid, 0, "random models wrote valid calls without the grammar");
}

/// A byte-level vocabulary without a character's token cuts it across tokens; the engine
/// knows which bytes a cut character has so far (for constrained copying).
#[test]
fn a_character_cut_by_the_last_token_is_known_by_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    autoglm_test_support::checkpoint::write_tokenizer(dir.path());
    let tokenizer = autoglm_engine::tokenizer::GlmTokenizer::load(dir.path()).unwrap();
    let ids = tokenizer.encode("北京").unwrap();
    assert_eq!(ids.len(), 6, "one token per byte in this vocabulary");
    let bytes = "北京".as_bytes();
    for cut in 1..=ids.len() {
        let expected = match cut % 3 {
            0 => Some(Vec::new()),
            partial => Some(bytes[cut - partial..cut].to_vec()),
        };
        assert_eq!(tokenizer.pending_bytes(&ids[..cut]), expected, "after {cut} tokens");
    }
    assert_eq!(tokenizer.decode(&ids[..4]).unwrap(), "北\u{FFFD}");
    // A stray continuation byte is no character's beginning.
    let stray = tokenizer.encode("a").unwrap().into_iter().chain([ids[1]]).collect::<Vec<_>>();
    assert_eq!(tokenizer.pending_bytes(&stray), Some(Vec::new()));
}

#[test]
fn the_training_pass_with_a_shared_prefix_matches_inference() {
    let dir = model_dir("Glm4ForCausalLM", 12);
    let model = load_model_with(dir.path(), Kernels::Differentiable);
    let prefix = [258u32, 260, 262, 35, 32, 84];
    let suffixes: [[u32; 4]; 2] = [[263, 104, 105, 264], [263, 121, 111, 264]];
    let ids = Tensor::new(&suffixes, &Device::Cpu).unwrap();
    let shared = model.forward_train(&prefix, &ids).unwrap();
    let whole = [&prefix[..], &suffixes[0][..]].concat();
    let unshared = model
        .forward_train(
            &[],
            &Tensor::new(whole.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap(),
        )
        .unwrap();
    for (row, suffix) in suffixes.iter().enumerate() {
        let full = [&prefix[..], &suffix[..]].concat();
        for pos in 0..suffix.len() {
            let expected = logits(&model, &full[..prefix.len() + pos + 1], &mut model.new_cache());
            let diff = max_abs_diff(&shared.i((row, pos)).unwrap(), &expected);
            assert!(diff <= 1e-4, "suffix {row} position {pos}: differs by {diff}");
        }
    }
    let diff = max_abs_diff(&shared.i(0).unwrap(), &unshared.i((0, prefix.len()..)).unwrap());
    assert!(diff <= 1e-4, "shared and unshared training passes differ by {diff}");
}

#[test]
fn a_shared_prompt_beginning_is_prefilled_once_and_changes_nothing() {
    let dir = model_dir("Glm4ForCausalLM", 6);
    let cached = Engine::load(dir.path(), DeviceChoice::Cpu, |_, _| {}).unwrap();
    let mut plain = Engine::load(dir.path(), DeviceChoice::Cpu, |_, _| {}).unwrap();
    plain.set_prefix_cache_budget(0);
    // The system text and tools block every request to one tool set begins with.
    let system = format!(
        "[gMASK]<sop><|system|>\n{}",
        "Tools: weather(city), calculator(expression), units(value, from, to). ".repeat(3)
    );
    let questions =
        ["what is the weather in Paris?", "add 2 and 3", "what is the weather in Paris?"];
    let params = SamplingParams::greedy(12);
    for question in questions {
        let prompt = format!("{system}<|user|>\n{question}<|assistant|>");
        let with = cached.generate(&prompt, &params, |_| {}).unwrap();
        let without = plain.generate(&prompt, &params, |_| {}).unwrap();
        assert_eq!(with.tokens, without.tokens, "{question}: the cache changed the answer");
    }
    let stats = cached.prefix_cache().stats();
    assert_eq!((stats.misses, stats.hits), (1, 2), "{stats:?}");
    // The second prompt skips the whole blocks it shares with the first (the system text);
    // the third, the first again, every whole block but the one holding its last token.
    let block = autoglm_engine::prefix::BLOCK;
    let tokens: Vec<Vec<u32>> = questions
        .iter()
        .map(|q| cached.tokenizer().encode(&format!("{system}<|user|>\n{q}<|assistant|>")).unwrap())
        .collect();
    let common = tokens[0].iter().zip(&tokens[1]).take_while(|(a, b)| a == b).count();
    let shared = (common / block).min((tokens[1].len() - 1) / block);
    let again = (tokens[2].len() - 1) / block;
    assert!(shared >= 2, "the test's system text spans several blocks");
    assert_eq!(stats.reused_tokens as usize, (shared + again) * block, "{stats:?}");
    assert!(stats.bytes > 0);
    assert_eq!(plain.prefix_cache().stats(), autoglm_engine::PrefixStats::default());
    cached.prefix_cache().clear();
    assert_eq!(cached.prefix_cache().stats().bytes, 0);
}
