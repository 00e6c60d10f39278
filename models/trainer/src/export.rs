//! The conversations as the engine will see them: encoded with the base's tokenizer plus
//! GLM-4's special tokens (exactly the ids the adapted model is served with), written for
//! the LoRA trainer (models/trainer/python/train.py) with what it needs to know of the base.

use std::io::Write;
use std::path::Path;

use autoglm_engine::GlmTokenizer;
use autoglm_engine::gguf::GgufFile;
use serde_json::json;

use crate::corpus::Conversation;

/// GLM-4's special tokens the base's vocabulary lacks (it has `<|endoftext|>`), in the id
/// order the adapter adds them after the base's rows.
pub const ADDED_TOKENS: [&str; 6] =
    ["[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"];

/// The projections the adapter trains, in every layer.
const TARGETS: [&str; 7] =
    ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

/// The base's tokenizer with GLM-4's special tokens added, as the engine builds it when it
/// loads the base with the adapter.
pub fn tokenizer(gguf: &GgufFile) -> anyhow::Result<GlmTokenizer> {
    let tokenizer = GlmTokenizer::with_stops(gguf.tokenizer()?, gguf.stop_tokens()?)?;
    let added: Vec<String> = ADDED_TOKENS.iter().map(|t| t.to_string()).collect();
    let tokenizer = tokenizer.with_added_tokens(&added, gguf.config().vocab_size)?;
    anyhow::ensure!(
        tokenizer.special().is_some(),
        "the base's tokenizer with GLM-4's special tokens added still lacks one of them"
    );
    Ok(tokenizer)
}

/// Write `conversations` to `path` as JSON lines of `ids` and `trained` (1 where the token
/// is a target: the model's turns), with `meta.json` beside them; returns the lengths.
pub fn write(
    path: &Path,
    gguf: &GgufFile,
    tokenizer: &GlmTokenizer,
    conversations: &[Conversation],
) -> anyhow::Result<Vec<usize>> {
    let partial = path.with_extension("partial");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&partial)?);
    let mut lengths = Vec::with_capacity(conversations.len());
    for conversation in conversations {
        let (mut ids, mut trained) = (Vec::new(), Vec::new());
        for (text, target) in conversation {
            let piece = tokenizer.encode(text)?;
            trained.extend(std::iter::repeat_n(u8::from(*target), piece.len()));
            ids.extend(piece);
        }
        lengths.push(ids.len());
        writeln!(file, "{}", json!({"ids": ids, "trained": trained}))?;
    }
    file.flush()?;
    drop(file);
    std::fs::rename(&partial, path)?;
    let meta = json!({
        "base": gguf.path(),
        "base_vocab": gguf.config().vocab_size,
        "added_tokens": ADDED_TOKENS,
        "target_modules": TARGETS,
        "pad": tokenizer.end_of_text(),
    });
    std::fs::write(path.with_file_name("meta.json"), serde_json::to_string_pretty(&meta)? + "\n")?;
    Ok(lengths)
}
