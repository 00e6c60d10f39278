//! The tokenizer a GGUF describes in its `tokenizer.ggml.*` metadata, assembled from the
//! `tokenizers` crate's own parts the way llama.cpp reads the same keys: a byte-level BPE of
//! the file's tokens and merges, the text first split by the regexes llama.cpp uses for the
//! file's `tokenizer.ggml.pre`, the tokens it marks as control kept whole as special tokens.

use std::collections::HashSet;

use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::Metadata;
use crate::EngineError;

/// llama.cpp's split for its LLAMA3 and CHATGLM4 pre-tokenizers (Llama 3's and GLM-4's own
/// `tokenizer.json` regex, with the case-insensitive group spelled out).
const LLAMA3_SPLIT: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The `tokenizer.ggml.pre` names the engine knows, as llama.cpp groups them.
const KNOWN_PRE: &str = "gpt2 (gpt-2), smollm, llama-bpe (llama3, llama-v3), glm4, chatglm-bpe";

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// How text is split before the merges apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pre {
    /// GPT-2's regex.
    Gpt2,
    /// Every digit alone, then GPT-2's regex (StarCoder's and SmolLM's).
    SmolLm,
    /// Llama 3's regex; a piece that is a whole token skips the merges.
    Llama3,
    /// GLM-4's regex, the same as Llama 3's.
    ChatGlm4,
}

impl Pre {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "gpt2" | "gpt-2" => Self::Gpt2,
            "smollm" => Self::SmolLm,
            "llama-bpe" | "llama3" | "llama-v3" => Self::Llama3,
            "glm4" | "chatglm-bpe" => Self::ChatGlm4,
            _ => return None,
        })
    }

    fn pre_tokenizer(self) -> Result<PreTokenizerWrapper, EngineError> {
        // The byte-level stage with GPT-2's regex for the GPT-2 family, alone after a split
        // by the family's own regex otherwise.
        let gpt2 = ByteLevel::new(false, true, true);
        Ok(match self {
            Self::Gpt2 => gpt2.into(),
            Self::SmolLm => Sequence::new(vec![Digits::new(true).into(), gpt2.into()]).into(),
            Self::Llama3 | Self::ChatGlm4 => {
                let split = Split::new(
                    SplitPattern::Regex(LLAMA3_SPLIT.into()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(|e| EngineError::Tokenizer(format!("the {self:?} split regex: {e}")))?;
                Sequence::new(vec![split.into(), ByteLevel::new(false, true, false).into()]).into()
            }
        })
    }
}

/// The tokenizer of the file's `tokenizer.ggml.*` metadata.
pub(super) fn build(md: &Metadata) -> Result<Tokenizer, EngineError> {
    let beside = "put the model's tokenizer.json beside the GGUF file";
    match md.string("tokenizer.ggml.model")? {
        Some("gpt2") => {}
        Some("llama") => {
            return Err(md.unsupported(
                "tokenizer.ggml.model",
                &format!("a SentencePiece vocabulary (\"llama\") cannot be built from GGUF metadata here; {beside}"),
            ));
        }
        Some(other) => {
            return Err(md.unsupported(
                "tokenizer.ggml.model",
                &format!("a {other:?} vocabulary cannot be built from GGUF metadata (only byte-level BPE, \"gpt2\"); {beside}"),
            ));
        }
        None => return Err(md.missing("tokenizer.ggml.model")),
    }
    let pre = match md.string("tokenizer.ggml.pre")? {
        Some(name) => Pre::from_name(name).ok_or_else(|| {
            md.unsupported(
                "tokenizer.ggml.pre",
                &format!(
                    "pre-tokenizer {name:?} is not one this engine knows ({KNOWN_PRE}); {beside}"
                ),
            )
        })?,
        None => {
            return Err(md.unsupported(
                "tokenizer.ggml.pre",
                &format!("the file does not say how its text is split ({KNOWN_PRE}); {beside}"),
            ));
        }
    };
    if md.bool("tokenizer.ggml.add_space_prefix")? == Some(true) {
        return Err(md.unsupported(
            "tokenizer.ggml.add_space_prefix",
            &format!("a byte-level vocabulary with a space prefix is not implemented; {beside}"),
        ));
    }
    let tokens =
        md.strings("tokenizer.ggml.tokens")?.ok_or_else(|| md.missing("tokenizer.ggml.tokens"))?;
    let merges =
        md.strings("tokenizer.ggml.merges")?.ok_or_else(|| md.missing("tokenizer.ggml.merges"))?;
    let types = md.ints("tokenizer.ggml.token_type")?.unwrap_or_default();
    if !types.is_empty() && types.len() != tokens.len() {
        return Err(md.invalid(
            "tokenizer.ggml.token_type",
            format!("{} types for {} tokens", types.len(), tokens.len()),
        ));
    }

    let alphabet = byte_alphabet();
    let letters: HashSet<char> = alphabet.iter().copied().collect();
    let spelled = |token: &str| token.chars().all(|c| letters.contains(&c));
    let mut vocab = Vocab::default();
    for (id, token) in tokens.iter().enumerate() {
        // A token written in plain text (not the byte alphabet) is its UTF-8 bytes.
        let key = if spelled(token) {
            (*token).to_string()
        } else {
            token.bytes().map(|b| alphabet[usize::from(b)]).collect()
        };
        if vocab.insert(key, id as u32).is_some() {
            return Err(md.invalid(
                "tokenizer.ggml.tokens",
                format!("token {id} ({token:?}) repeats an earlier token"),
            ));
        }
    }
    let merges = merges
        .iter()
        .enumerate()
        .map(|(n, merge)| {
            merge.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).ok_or_else(|| {
                md.invalid(
                    "tokenizer.ggml.merges",
                    format!("merge {n} ({merge:?}) is not two tokens"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(pre == Pre::Llama3)
        .build()
        .map_err(|e| md.invalid("tokenizer.ggml.merges", e.to_string()))?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(pre.pre_tokenizer()?));
    tokenizer.with_decoder(Some(ByteLevel::default()));

    // Control tokens (`<|im_start|>`, `[gMASK]`) stay whole and decode to nothing; a control
    // token outside the byte alphabet is a mislabelled ordinary one (as transformers reads
    // these files). User-defined tokens stay whole too but are text.
    let typed = |wanted: i64| {
        tokens.iter().zip(&types).filter(move |(_, t)| **t == wanted).map(|(token, _)| *token)
    };
    let control: Vec<AddedToken> = typed(CONTROL)
        .filter(|token| spelled(token))
        .map(|token| AddedToken::from(token, true).normalized(false))
        .collect();
    let user: Vec<AddedToken> = typed(USER_DEFINED)
        .filter(|token| spelled(token))
        .map(|token| AddedToken::from(token, false).normalized(false))
        .collect();
    let added = |e: tokenizers::Error| {
        EngineError::Tokenizer(format!("adding the GGUF's special tokens: {e}"))
    };
    tokenizer.add_special_tokens(control).map_err(added)?;
    tokenizer.add_tokens(user).map_err(added)?;
    Ok(tokenizer)
}

/// GPT-2's byte alphabet: the character that stands for each byte.
fn byte_alphabet() -> Vec<char> {
    let mut alphabet = vec!['\0'; 256];
    for (c, byte) in crate::tokenizer::byte_level_alphabet() {
        alphabet[usize::from(byte)] = c;
    }
    alphabet
}
