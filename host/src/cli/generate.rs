//! `autoglm generate`: load a checkpoint with a progress bar, stream one answer, report speed.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use autoglm_engine::{ChatMessage, DeviceChoice, FinishReason, Role, SamplingParams};

/// Options of `autoglm generate`.
#[derive(Args)]
pub struct GenerateArgs {
    /// The checkpoint: a directory of config.json, model.safetensors (or shards) and
    /// tokenizer.json; a .gguf file (glm4 or llama); or a directory holding one .gguf.
    #[arg(long)]
    model: PathBuf,
    /// A PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors)
    /// applied to the checkpoint.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// The prompt, sent as a user message through the model's chat template.
    prompt: String,
    /// Most tokens to generate (default: the checkpoint's, else 512).
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Sampling temperature; 0 is greedy (default: the checkpoint's, else 0.7).
    #[arg(long)]
    temperature: Option<f64>,
    /// Keep only the k most likely tokens; 0 keeps all.
    #[arg(long)]
    top_k: Option<usize>,
    /// Nucleus sampling threshold in (0, 1].
    #[arg(long)]
    top_p: Option<f64>,
    /// Penalty for tokens already in the sequence; 1 is off.
    #[arg(long)]
    repetition_penalty: Option<f32>,
    /// Seed for repeatable sampling.
    #[arg(long)]
    seed: Option<u64>,
    /// A system message before the prompt.
    #[arg(long)]
    system: Option<String>,
    /// Send the prompt as it is, without the chat template.
    #[arg(long)]
    raw: bool,
    /// cpu, cuda or cuda:N (cuda needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

/// Run `autoglm generate` (blocking: call it off the async runtime).
pub fn run(args: &GenerateArgs) -> anyhow::Result<ExitCode> {
    let engine = super::load_engine(&args.model, args.adapter.as_deref(), args.device)?;
    let info = engine.info();
    eprintln!(
        "{}: {} with {:.1}M parameters ({}) on {} ({} prompt template)",
        info.name,
        info.architecture.hf_name(),
        info.parameters as f64 / 1e6,
        info.format,
        info.device,
        if info.jinja_template { "its own" } else { "the built-in GLM-4" }
    );

    let mut params = engine.defaults().clone();
    override_params(&mut params, args);
    let prompt = if args.raw {
        args.prompt.clone()
    } else {
        let mut messages: Vec<ChatMessage> =
            args.system.iter().map(|s| ChatMessage::new(Role::System, s.clone())).collect();
        messages.push(ChatMessage::new(Role::User, args.prompt.clone()));
        engine.render(&messages, &[])?
    };
    let mut stdout = std::io::stdout().lock();
    let generation = engine.generate(&prompt, &params, |text| {
        // A closed pipe (`| head`) ends the output, not the generation's bookkeeping.
        let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
    })?;
    let _ = writeln!(stdout);
    let rate = |tokens: usize, secs: f64| if secs > 0.0 { tokens as f64 / secs } else { 0.0 };
    let prefill = generation.prefill.as_secs_f64();
    let decode = generation.decode.as_secs_f64();
    let decoded = generation.decode_passes;
    eprintln!(
        "prefill: {} tokens in {:.1} ms ({:.1} tokens/s); decode: {} tokens in {:.1} ms ({:.1} tokens/s); {}",
        generation.prompt_tokens,
        prefill * 1e3,
        rate(generation.prompt_tokens, prefill),
        decoded,
        decode * 1e3,
        rate(decoded, decode),
        match generation.finish {
            FinishReason::Stop(token) => format!(
                "stopped by {}",
                engine.tokenizer().inner().id_to_token(token).unwrap_or_else(|| token.to_string())
            ),
            FinishReason::Length => "stopped at the token limit".into(),
            FinishReason::Aborted => "aborted".into(),
        },
    );
    Ok(ExitCode::SUCCESS)
}

fn override_params(params: &mut SamplingParams, args: &GenerateArgs) {
    if let Some(n) = args.max_tokens {
        params.max_new_tokens = n;
    }
    if let Some(t) = args.temperature {
        params.temperature = t;
        params.do_sample = t > 0.0;
    }
    if let Some(k) = args.top_k {
        params.top_k = k;
    }
    if let Some(p) = args.top_p {
        params.top_p = p;
    }
    if let Some(r) = args.repetition_penalty {
        params.repetition_penalty = r;
    }
    params.seed = args.seed.or(params.seed);
}
