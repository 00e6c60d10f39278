//! The shipped demo model (SmolLM2-135M-Instruct with our adapter) through the engine on a
//! fixed sample of its held-out split, every call made for real: a regression guard at the
//! scores its model card records (models/autoglm-demo/README.md; `just eval-demo` scores
//! the whole split).

use autoglm_engine::{DeviceChoice, Engine, SamplingParams};
use autoglm_host::eval::{evaluate, load_cases};
use autoglm_test_support::host::{AGENT_PLUGINS, demo_model, host, notes_config, plugins_dir};
use serde_json::Value;

/// Cases scored: the split's first, which mix most tools, both languages, the unseen
/// plugin and requests that need no tool (about 1.5 minutes).
const SAMPLE: usize = 24;

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_model_keeps_its_recorded_scores_on_a_sample_of_the_heldout_split() {
    let plugins = plugins_dir(AGENT_PLUGINS);
    let notes = tempfile::tempdir().unwrap();
    let host = std::sync::Arc::new(host(&notes_config(notes.path()), plugins.path()).await);
    let tools: Vec<_> = (host.invoker.router().tool_defs().into_iter())
        .map(|(target, def)| (target.id(), def))
        .collect();
    let dir = demo_model();
    let mut cases = load_cases(&dir.join("heldout.jsonl")).unwrap();
    assert!(cases.len() >= 400, "the held-out split has {} cases", cases.len());
    cases.truncate(SAMPLE);
    assert!(cases.iter().any(|c| c.unseen), "the sample asks for no unseen tool");
    let engine = Engine::load(&dir, DeviceChoice::Cpu, |_, _| {}).unwrap();
    let runtime = tokio::runtime::Handle::current();
    let report = tokio::task::spawn_blocking(move || {
        let call = |tool: &str, args: &Value| -> Result<Value, Value> {
            let outcome = runtime.block_on(host.call(tool, args)).outcome;
            outcome.map_err(|e| e.observation())
        };
        let params = SamplingParams::greedy(128);
        evaluate(&engine, &tools, &cases, &params, 16, &call, |_| {}).unwrap()
    })
    .await
    .unwrap();
    eprintln!("{}", report.table());
    // Measured on this sample: selection 19/24, equivalent calls 14/21, faithful answers
    // 21/21, every no-tool request answered without one. A case less is slack; more is a
    // regression.
    let table = report.table();
    assert!(report.tool_selection_accuracy >= 18.0 / 24.0 - 1e-9, "{table}");
    assert!(report.equivalent_call_accuracy >= 13.0 / 21.0 - 1e-9, "{table}");
    assert!(report.valid_json_rate >= 0.99, "{table}");
    assert!(report.faithful_answer_rate >= 20.0 / 21.0 - 1e-9, "{table}");
    assert!(report.no_tool_recall >= 0.99, "{table}");
}

#[test]
fn the_demo_model_loads_by_its_built_in_name() {
    // The tests run in host/, where no file is named "demo".
    let engine = Engine::load(std::path::Path::new("demo"), DeviceChoice::Cpu, |_, _| {}).unwrap();
    assert_eq!(engine.info().name, "autoglm-demo");
    assert!(engine.info().format.contains("LoRA"), "{}", engine.info().format);
}
