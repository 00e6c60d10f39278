//! `autoglm eval`: a model's tool-calling scores on a JSON lines file of cases.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use autoglm_engine::{DeviceChoice, SamplingParams, ToolDef};
use autoglm_host::eval::{end_to_end, evaluate, load_cases};

/// Options of `autoglm eval` (the plugins come from the host options beside them).
#[derive(Args)]
pub struct EvalArgs {
    /// The checkpoint: a safetensors directory, a .gguf file, or a directory holding one.
    #[arg(long)]
    pub model: PathBuf,
    /// A PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors)
    /// applied to the checkpoint.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// JSON lines: {"messages": [...], "expected": {"name": "plugin.tool", "arguments": {...}} | null}.
    #[arg(long)]
    pub data: PathBuf,
    /// Also write the scores as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Cases decoded together in one batch.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Decode without the tool-call grammar (names, schemas, copy fields).
    #[arg(long)]
    pub unconstrained: bool,
    /// Keep the schema grammar but drop the copy constraint on the model's copy fields.
    #[arg(long)]
    pub no_copy: bool,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
}

/// Run `autoglm eval` with `tools` offered (blocking).
pub fn run(
    args: &EvalArgs,
    tools: &[(String, ToolDef)],
    call: autoglm_host::eval::CallTool,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !tools.is_empty(),
        "no tools are loaded: point --plugins at the plugins the cases call"
    );
    let cases = load_cases(&args.data)?;
    let engine = super::load_engine(&args.model, args.adapter.as_deref(), args.device)?;
    let params = SamplingParams {
        constrain_calls: !args.unconstrained,
        copy_constraint: !args.no_copy,
        ..SamplingParams::greedy(engine.defaults().max_new_tokens.min(256))
    };
    let bar = indicatif::ProgressBar::new(cases.len() as u64);
    let mut report =
        evaluate(&engine, tools, &cases, &params, args.batch, call, |n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    report.end_to_end_p50_ms = Some(end_to_end(&engine, tools, &cases, &params, call)?);
    print!("{}", report.table());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
