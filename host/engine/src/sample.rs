//! Choosing the next token: greedy or sampled (temperature, top-k, top-p), with a repetition
//! penalty and a seed, on top of candle-transformers' `LogitsProcessor`.

use std::path::Path;

use candle_core::Tensor;
use candle_transformers::generation::{LogitsProcessor, Sampling};
use serde::{Deserialize, Serialize};

use crate::EngineError;

/// How to generate: every field can be set per request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 means greedy.
    pub temperature: f64,
    /// Keep only the `k` most likely tokens (0 keeps all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `p` (1 keeps all).
    pub top_p: f64,
    /// Divide (or, for negative logits, multiply) the logits of tokens already in the
    /// sequence by this; 1 turns it off.
    pub repetition_penalty: f32,
    /// Sample rather than take the most likely token.
    pub do_sample: bool,
    /// Seed of the sampler, for repeatable output; random when absent.
    pub seed: Option<u64>,
    /// Hold tool calls to the offered names and their argument schemas.
    pub constrain_calls: bool,
    /// Allow no plain answer when tools are offered (OpenAI's `tool_choice: "required"`).
    pub require_tool_call: bool,
    /// Hold the arguments the model's config names to whole-word spans of the conversation.
    pub copy_constraint: bool,
}

impl Default for SamplingParams {
    /// The seed document's generation config: 512 new tokens, temperature 0.7, top-k 50.
    fn default() -> Self {
        Self {
            max_new_tokens: 512,
            temperature: 0.7,
            top_k: 50,
            top_p: 1.0,
            repetition_penalty: 1.0,
            do_sample: true,
            seed: None,
            constrain_calls: true,
            require_tool_call: false,
            copy_constraint: true,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding of at most `max_new_tokens`.
    pub fn greedy(max_new_tokens: usize) -> Self {
        Self { max_new_tokens, temperature: 0.0, do_sample: false, ..Self::default() }
    }

    /// The defaults, overridden by the checkpoint's `generation_config.json` if it has one.
    pub fn for_checkpoint(dir: &Path) -> Result<Self, EngineError> {
        let path = dir.join("generation_config.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(Self::default());
        };
        #[derive(Deserialize)]
        struct GenerationConfig {
            max_new_tokens: Option<usize>,
            temperature: Option<f64>,
            top_k: Option<usize>,
            top_p: Option<f64>,
            repetition_penalty: Option<f32>,
            do_sample: Option<bool>,
        }
        let g: GenerationConfig = serde_json::from_str(&text)
            .map_err(|e| EngineError::Config { path, message: e.to_string() })?;
        let d = Self::default();
        Ok(Self {
            max_new_tokens: g.max_new_tokens.unwrap_or(d.max_new_tokens),
            temperature: g.temperature.unwrap_or(d.temperature),
            top_k: g.top_k.unwrap_or(d.top_k),
            top_p: g.top_p.unwrap_or(d.top_p),
            repetition_penalty: g.repetition_penalty.unwrap_or(d.repetition_penalty),
            do_sample: g.do_sample.unwrap_or(d.do_sample),
            ..d
        })
    }

    /// Reject values that have no meaning, naming the field.
    pub fn check(&self) -> Result<(), EngineError> {
        let bad =
            |field: &'static str, why: String| Err(EngineError::InvalidParameter { field, why });
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad("temperature", format!("{} is not a finite number >= 0", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", format!("{} is not in (0, 1]", self.top_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad(
                "repetition_penalty",
                format!("{} is not a finite number > 0", self.repetition_penalty),
            );
        }
        if self.max_new_tokens == 0 {
            return bad("max_new_tokens", "must be at least 1".into());
        }
        Ok(())
    }
}

/// The token chooser of one sequence.
pub struct Sampler {
    processor: LogitsProcessor,
    penalty: f32,
    greedy: bool,
}

/// How many of the likeliest tokens a constrained sampler checks against the grammar.
const CONSTRAINED_CANDIDATES: usize = 64;

impl Sampler {
    /// A sampler for `params`.
    pub fn new(params: &SamplingParams) -> Self {
        let greedy = !params.do_sample || params.temperature == 0.0;
        let (k, p, temperature) = (params.top_k, params.top_p, params.temperature);
        let sampling = match (greedy, k > 0, p < 1.0) {
            (true, _, _) => Sampling::ArgMax,
            (false, true, true) => Sampling::TopKThenTopP { k, p, temperature },
            (false, true, false) => Sampling::TopK { k, temperature },
            (false, false, true) => Sampling::TopP { p, temperature },
            (false, false, false) => Sampling::All { temperature },
        };
        let seed = params.seed.unwrap_or_else(rand::random);
        Self {
            processor: LogitsProcessor::from_sampling(seed, sampling),
            penalty: params.repetition_penalty,
            greedy,
        }
    }

    /// The next token given `logits` (`[vocab]`, f32) and the sequence so far.
    pub fn sample(&mut self, logits: &Tensor, context: &[u32]) -> candle_core::Result<u32> {
        self.processor.sample(&self.penalised(logits, context)?)
    }

    /// The next token among those `allowed` accepts: the likeliest allowed one when greedy,
    /// else a sample from the allowed ones among the likeliest few. None if no token is allowed.
    pub fn sample_allowed(
        &mut self,
        logits: &Tensor,
        context: &[u32],
        mut allowed: impl FnMut(u32) -> bool,
    ) -> candle_core::Result<Option<u32>> {
        let logits = self.penalised(logits, context)?;
        let values: Vec<f32> = logits.to_vec1()?;
        let mut order: Vec<u32> = (0..values.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| values[b as usize].total_cmp(&values[a as usize]));
        if self.greedy {
            return Ok(order.into_iter().find(|&t| allowed(t)));
        }
        let mut masked = vec![f32::NEG_INFINITY; values.len()];
        let mut any = false;
        for &t in order.iter().take(CONSTRAINED_CANDIDATES) {
            if allowed(t) {
                masked[t as usize] = values[t as usize];
                any = true;
            }
        }
        if !any {
            return Ok(order.into_iter().skip(CONSTRAINED_CANDIDATES).find(|&t| allowed(t)));
        }
        let masked = Tensor::from_vec(masked, values.len(), logits.device())?;
        self.processor.sample(&masked).map(Some)
    }

    fn penalised(&self, logits: &Tensor, context: &[u32]) -> candle_core::Result<Tensor> {
        if self.penalty == 1.0 {
            Ok(logits.clone())
        } else {
            candle_transformers::utils::apply_repeat_penalty(logits, self.penalty, context)
        }
    }
}
