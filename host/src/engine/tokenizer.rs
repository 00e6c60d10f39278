//! `tokenizer.json` with GLM-4's special tokens resolved by name, and streaming detokenization.

use std::path::Path;

use super::EngineError;

/// GLM-4's special tokens in their official order (ids 151329.. in real checkpoints).
pub const GLM4_SPECIAL_TOKENS: [&str; 10] = [
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
];

/// GLM-4's special tokens, looked up by their text in the checkpoint's own vocabulary.
#[derive(Debug, Clone, Copy)]
pub struct SpecialTokens {
    /// `<|endoftext|>`: end of the text.
    pub endoftext: u32,
    /// `[gMASK]`: first token of every prompt.
    pub gmask: u32,
    /// `<sop>`: second token of every prompt.
    pub sop: u32,
    /// `<|system|>`.
    pub system: u32,
    /// `<|user|>`: the model wants the user to speak.
    pub user: u32,
    /// `<|assistant|>`.
    pub assistant: u32,
    /// `<|observation|>`: the model wants a tool's result.
    pub observation: u32,
}

/// The tokenizer of a GLM checkpoint.
#[derive(Clone)]
pub struct GlmTokenizer {
    inner: tokenizers::Tokenizer,
    /// The special tokens the engine acts on.
    pub special: SpecialTokens,
}

impl GlmTokenizer {
    /// Load `tokenizer.json` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, EngineError> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(EngineError::MissingFile {
                path,
                what: "the tokenizer (tokenizer.json, as shipped with GLM-4-0414 and -hf checkpoints)",
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| EngineError::Tokenizer(format!("{}: {e}", path.display())))?;
        Self::new(inner)
    }

    /// Wrap a tokenizer, resolving the special tokens.
    pub fn new(inner: tokenizers::Tokenizer) -> Result<Self, EngineError> {
        let id = |name: &'static str| {
            inner.token_to_id(name).ok_or(EngineError::MissingSpecialToken { name })
        };
        let special = SpecialTokens {
            endoftext: id("<|endoftext|>")?,
            gmask: id("[gMASK]")?,
            sop: id("<sop>")?,
            system: id("<|system|>")?,
            user: id("<|user|>")?,
            assistant: id("<|assistant|>")?,
            observation: id("<|observation|>")?,
        };
        Ok(Self { inner, special })
    }

    /// Token ids of `text`; special tokens written in it (as a rendered prompt has them)
    /// become their ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        let encoding =
            self.inner.encode(text, false).map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String, EngineError> {
        self.inner.decode(ids, true).map_err(|e| EngineError::Tokenizer(e.to_string()))
    }

    /// Number of tokens in the vocabulary, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// Turns generated tokens into text as they arrive, holding back a token that ends inside a
/// multi-byte character until the character is complete.
#[derive(Debug, Default, Clone)]
pub struct TextStream {
    ids: Vec<u32>,
    prefix: String,
    prefix_index: usize,
}

impl TextStream {
    /// Add one token; returns the text it completes, if any.
    pub fn push(
        &mut self,
        tokenizer: &GlmTokenizer,
        id: u32,
    ) -> Result<Option<String>, EngineError> {
        tokenizers::tokenizer::step_decode_stream(
            &tokenizer.inner,
            vec![id],
            true,
            &mut self.ids,
            &mut self.prefix,
            &mut self.prefix_index,
        )
        .map_err(|e| EngineError::Tokenizer(e.to_string()))
    }
}
