//! `autoglm-train`: trains the embedded demo model, a small GLM-4-architecture model that
//! calls the sample plugins' tools, from a fixed seed, and writes it where the engine loads
//! checkpoints from (config.json, model.safetensors, tokenizer.json) with its held-out split.

mod corpus;
mod data;
mod train;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Train the demo model.
#[derive(Parser)]
struct Args {
    /// The sample plugins (their tools are what the model learns to call).
    #[arg(long, default_value = "target/plugins")]
    plugins: PathBuf,
    /// Where to write the model.
    #[arg(long, default_value = "models/autoglm-demo")]
    out: PathBuf,
    /// Seed of the data, the initial weights and the batch order.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Optimiser steps.
    #[arg(long, default_value_t = 7000)]
    steps: usize,
    /// Conversations per step.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Peak learning rate (linear warm-up, cosine decay to a tenth).
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    /// Distinct training conversations generated.
    #[arg(long, default_value_t = 120_000)]
    conversations: usize,
    /// Cases in the held-out split written to heldout.jsonl.
    #[arg(long, default_value_t = 600)]
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
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;

    eprintln!(
        "generating {} training conversations from {} tools",
        args.conversations,
        tools.defs.len()
    );
    let train = runtime.block_on(corpus::conversations(
        &tools,
        data::Split::Train,
        args.seed,
        args.conversations,
    ))?;
    if let Some(n) = args.show {
        for conversation in train.iter().take(n) {
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

    let tokenizer = train::train_tokenizer(&train, &args.out.join("tokenizer.json"))?;
    train::train_model(&args, &train, &tokenizer)
}
