//! The shipped demo model through the engine on its held-out split: a regression guard at
//! the scores its model card records (see models/autoglm-demo/README.md).

use autoglm_engine::{DeviceChoice, Engine, SamplingParams};
use autoglm_host::eval::{evaluate, load_cases};
use autoglm_test_support::host::{AGENT_PLUGINS, demo_model, host, notes_config, plugins_dir};

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_model_keeps_its_recorded_scores_on_the_heldout_split() {
    let plugins = plugins_dir(AGENT_PLUGINS);
    let notes = tempfile::tempdir().unwrap();
    let host = host(&notes_config(notes.path()), plugins.path()).await;
    let tools: Vec<_> = (host.invoker.router().tool_defs().into_iter())
        .map(|(target, def)| (target.id(), def))
        .collect();
    let dir = demo_model();
    let cases = load_cases(&dir.join("heldout.jsonl")).unwrap();
    assert!(cases.len() >= 500, "the held-out split has {} cases", cases.len());
    let engine = Engine::load(&dir, DeviceChoice::Cpu, |_, _| {}).unwrap();
    let report = tokio::task::spawn_blocking(move || {
        evaluate(&engine, &tools, &cases, &SamplingParams::greedy(128), 32, |_| {}).unwrap()
    })
    .await
    .unwrap();
    eprintln!("{}", report.table());
    // The card's figures, less a point of slack: a drop below is a regression.
    assert!(report.tool_selection_accuracy >= 0.79, "{}", report.table());
    assert!(report.exact_call_accuracy >= 0.39, "{}", report.table());
    assert!(report.valid_json_rate >= 0.99, "{}", report.table());
    assert!(report.no_tool_recall >= 0.72, "{}", report.table());
}
