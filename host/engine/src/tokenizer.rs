//! The checkpoint's tokenizer (`tokenizer.json`, or one a GGUF describes) with the tokens that
//! end a turn and, for GLM-4 vocabularies, its special tokens resolved by name; streaming
//! detokenization.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::EngineError;

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

impl SpecialTokens {
    fn resolve(inner: &tokenizers::Tokenizer) -> Result<Self, EngineError> {
        let id = |name: &'static str| {
            inner.token_to_id(name).ok_or(EngineError::MissingSpecialToken { name })
        };
        Ok(Self {
            endoftext: id("<|endoftext|>")?,
            gmask: id("[gMASK]")?,
            sop: id("<sop>")?,
            system: id("<|system|>")?,
            user: id("<|user|>")?,
            assistant: id("<|assistant|>")?,
            observation: id("<|observation|>")?,
        })
    }
}

/// The tokenizer of a checkpoint.
#[derive(Clone)]
pub struct GlmTokenizer {
    inner: tokenizers::Tokenizer,
    /// GLM-4's special tokens, when the vocabulary has them.
    special: Option<SpecialTokens>,
    /// The tokens that end the model's turn, the end-of-text token first.
    stops: Vec<u32>,
    /// Each token's bytes, for byte-level BPE vocabularies (GLM-4's, the demo model's).
    bytes: Option<Arc<Vec<Vec<u8>>>>,
}

/// The start of the placeholder tokens [`GlmTokenizer::with_added_tokens`] puts on a model's
/// padding rows, reserved so that an added token can never be taken for one.
const PLACEHOLDER: &str = "<|autoglm_unused_";

impl GlmTokenizer {
    /// Load GLM-4's `tokenizer.json` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, EngineError> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(EngineError::MissingFile {
                path,
                what: "the tokenizer (tokenizer.json, as shipped with GLM-4-0414 and -hf checkpoints)",
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        Self::new(read_json(&path)?)
    }

    /// Wrap a GLM-4 tokenizer, resolving its special tokens (an error names the first one
    /// missing); a turn ends on `<|endoftext|>`, `<|user|>` or `<|observation|>`.
    pub fn new(inner: tokenizers::Tokenizer) -> Result<Self, EngineError> {
        let special = SpecialTokens::resolve(&inner)?;
        Ok(Self::build(inner, Some(special), Vec::new()))
    }

    /// Wrap the tokenizer of any vocabulary whose turns end on `stops` (the end-of-text token
    /// first, as a GGUF's metadata names them); GLM-4's special tokens are resolved and stop
    /// a turn too where the vocabulary has them all.
    pub fn with_stops(inner: tokenizers::Tokenizer, stops: Vec<u32>) -> Result<Self, EngineError> {
        let special = SpecialTokens::resolve(&inner).ok();
        if stops.is_empty() && special.is_none() {
            return Err(EngineError::Tokenizer(
                "the vocabulary names no end-of-text token and has none of GLM-4's".into(),
            ));
        }
        Ok(Self::build(inner, special, stops))
    }

    fn build(
        inner: tokenizers::Tokenizer,
        special: Option<SpecialTokens>,
        mut stops: Vec<u32>,
    ) -> Self {
        if let Some(s) = &special {
            stops.extend([s.endoftext, s.user, s.observation]);
        }
        let mut seen = std::collections::HashSet::new();
        stops.retain(|id| seen.insert(*id));
        let bytes = byte_level_table(&inner).map(Arc::new);
        Self { inner, special, stops, bytes }
    }

    /// The same tokenizer with `tokens` added as single tokens with ids `first..` (an
    /// adapter's, whose rows follow the base's `first` embedding rows). Ids between the
    /// vocabulary's end and `first` (a model's padding rows) go to unused special
    /// placeholders, so that every new token lands on its own row.
    pub fn with_added_tokens(self, tokens: &[String], first: usize) -> Result<Self, EngineError> {
        let Self { mut inner, special, stops, .. } = self;
        let size = inner.get_vocab_size(true);
        if size > first {
            return Err(EngineError::Tokenizer(format!(
                "the tokenizer has {size} tokens but the model embeds only {first}; tokens \
                 cannot be added after its rows"
            )));
        }
        if let Some((token, id)) = tokens.iter().find_map(|t| Some((t, inner.token_to_id(t)?))) {
            return Err(EngineError::Tokenizer(format!(
                "the adapter adds {token:?}, which the base's vocabulary already has (id {id})"
            )));
        }
        if let Some(token) = tokens.iter().find(|t| t.starts_with(PLACEHOLDER)) {
            return Err(EngineError::Tokenizer(format!(
                "the adapter adds {token:?}, but tokens starting with {PLACEHOLDER:?} are \
                 reserved for the placeholders of the model's padding rows; rename it"
            )));
        }
        let placeholders = (size..first)
            .map(|id| tokenizers::AddedToken::from(format!("{PLACEHOLDER}{id}|>"), true));
        let added = tokens.iter().map(|t| tokenizers::AddedToken::from(t.clone(), false));
        let fail = |e: tokenizers::Error| EngineError::Tokenizer(e.to_string());
        inner.add_special_tokens(placeholders).map_err(fail)?;
        inner.add_tokens(added).map_err(fail)?;
        for (n, token) in tokens.iter().enumerate() {
            let id = inner.token_to_id(token);
            if id != Some((first + n) as u32) {
                return Err(EngineError::Tokenizer(format!(
                    "the added token {token:?} became id {id:?}, not {}",
                    first + n
                )));
            }
        }
        // Added tokens may complete GLM-4's set (a base taught GLM-4's protocol).
        let special = special.or_else(|| SpecialTokens::resolve(&inner).ok());
        Ok(Self::build(inner, special, stops))
    }

    /// GLM-4's special tokens, when the vocabulary has them.
    pub fn special(&self) -> Option<&SpecialTokens> {
        self.special.as_ref()
    }

    /// The tokens that end the model's turn.
    pub fn stops(&self) -> &[u32] {
        &self.stops
    }

    /// The token that ends a text.
    pub fn end_of_text(&self) -> u32 {
        self.stops[0]
    }

    /// The bytes of a character cut off at the end of `ids` (what the U+FFFD that ends
    /// their decoded text stands for): empty when the text ends on a whole character or on
    /// bytes that can never form one; None when the vocabulary is not byte-level (unknown).
    pub fn pending_bytes(&self, ids: &[u32]) -> Option<Vec<u8>> {
        let table = self.bytes.as_ref()?;
        // A cut character has at most 3 bytes, all in the last few tokens.
        let mut tail: Vec<u8> = Vec::new();
        for &id in ids.iter().rev() {
            // Ids the vocabulary lacks decode to nothing, as special tokens do.
            let token = table.get(id as usize).map(Vec::as_slice).unwrap_or_default();
            tail.splice(0..0, token.iter().copied());
            if tail.len() >= 4 {
                break;
            }
        }
        let n = tail.len();
        for back in 1..=n.min(3) {
            let byte = tail[n - back];
            if byte & 0xC0 == 0x80 {
                continue;
            }
            let width = match byte {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => 1,
            };
            return Some(if back < width { tail[n - back..].to_vec() } else { Vec::new() });
        }
        Some(Vec::new())
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

/// A `tokenizer.json`.
pub fn read_json(path: &Path) -> Result<tokenizers::Tokenizer, EngineError> {
    tokenizers::Tokenizer::from_file(path)
        .map_err(|e| EngineError::Tokenizer(format!("{}: {e}", path.display())))
}

/// Each token's bytes when `inner` is a byte-level BPE tokenizer (its decoder is
/// `ByteLevel`): none for special tokens (decoding leaves them out), and GPT-2's byte
/// alphabet mapped back for the others.
fn byte_level_table(inner: &tokenizers::Tokenizer) -> Option<Vec<Vec<u8>>> {
    if !matches!(inner.get_decoder(), Some(tokenizers::DecoderWrapper::ByteLevel(_))) {
        return None;
    }
    let alphabet = byte_level_alphabet();
    let added = inner.get_added_tokens_decoder();
    let table = (0..inner.get_vocab_size(true) as u32)
        .map(|id| {
            // Decoding leaves special tokens out; other added tokens are their text.
            if let Some(token) = added.get(&id) {
                return if token.special { Vec::new() } else { token.content.as_bytes().to_vec() };
            }
            let Some(token) = inner.id_to_token(id) else { return Vec::new() };
            let bytes: Option<Vec<u8>> = token.chars().map(|c| alphabet.get(&c).copied()).collect();
            bytes.unwrap_or_else(|| token.into_bytes())
        })
        .collect();
    Some(table)
}

/// GPT-2's byte-level alphabet, inverted: the character that stands for each byte.
pub(crate) fn byte_level_alphabet() -> HashMap<char, u8> {
    let mut shifted = 256u32;
    (0..=255u8)
        .map(|byte| {
            let printable = matches!(byte, 33..=126 | 161..=172 | 174..=255);
            let code = if printable {
                u32::from(byte)
            } else {
                shifted += 1;
                shifted - 1
            };
            (char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER), byte)
        })
        .collect()
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
