//! `autoglm generate` on a tiny random checkpoint: streamed text, speed on stderr, and the
//! error a missing checkpoint gets.

use autoglm_engine::{ChatMessage, DeviceChoice, Engine, Role, SamplingParams};
use autoglm_test_support::checkpoint::{tiny_config, write_model};

#[test]
fn autoglm_generate_streams_and_reports_speed() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), &tiny_config("Glm4ForCausalLM"), 11);
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_autoglm"))
            .arg("generate")
            .args(args)
            .output()
            .unwrap()
    };
    let model = dir.path().to_str().unwrap();
    let out = run(&["--model", model, "--max-tokens", "8", "--temperature", "0", "What is 2+2?"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Glm4ForCausalLM") && stderr.contains("built-in GLM-4 prompt template"),
        "{stderr}"
    );
    assert!(stderr.contains("prefill: ") && stderr.contains("tokens/s); decode: "), "{stderr}");
    // Greedy decoding is repeatable, and the CLI prints what the engine generates.
    let engine = Engine::load(dir.path(), DeviceChoice::Cpu, |_, _| {}).unwrap();
    let prompt = engine.render(&[ChatMessage::new(Role::User, "What is 2+2?")], &[]).unwrap();
    let expected = engine.generate(&prompt, &SamplingParams::greedy(8), |_| {}).unwrap().text;
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{expected}\n"));

    let out = run(&["--model", "/nonexistent/model", "hi"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot load the model in /nonexistent/model")
            && stderr.contains("config.json"),
        "{stderr}"
    );
}
