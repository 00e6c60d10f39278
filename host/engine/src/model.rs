//! The GLM-4 family decoder on candle, batched: several sequences, each with its own
//! position and KV cache, advance in one forward pass under a padding-aware attention mask.
//! The weights come from a [`WeightSource`]: safetensors (dense) or GGUF (matrices kept
//! quantized), so both formats run the same forward pass.

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{D, DType, Device, IndexOp, Module, Result, Tensor};
use candle_nn::{Embedding, Linear, RmsNorm, VarBuilder};

use crate::blocks::FloatInputMatrix;
use crate::checkpoint::{Architecture, ModelConfig};

/// Which kernels the forward pass uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// candle's fused kernels: fastest, but they have no backward pass.
    Fused,
    /// Plain tensor ops throughout, so gradients flow (for training).
    Differentiable,
}

/// The KV cache of one sequence: keys and values of every position seen so far, per layer.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<candle_nn::kv_cache::KvCache>,
}

impl KvCache {
    /// Positions already in the cache.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |l| l.current_seq_len())
    }

    /// Whether nothing has been cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies of the keys and values of positions `start..start + len`, one pair per layer.
    pub(crate) fn copy_range(&self, start: usize, len: usize) -> Result<Vec<(Tensor, Tensor)>> {
        let part = |t: Option<Tensor>| match t {
            // Always a copy: the cache's own buffer is written again if it is ever reset.
            Some(t) => t.narrow(2, start, len)?.force_contiguous(),
            None => candle_core::bail!("the cache holds no positions to copy"),
        };
        (self.layers.iter()).map(|l| Ok((part(l.k()?)?, part(l.v()?)?))).collect()
    }

    /// Append runs of positions (each as [`KvCache::copy_range`] gives them) in order.
    pub(crate) fn extend(&mut self, runs: &[Vec<(Tensor, Tensor)>]) -> Result<()> {
        for (n, layer) in self.layers.iter_mut().enumerate() {
            let keys: Vec<&Tensor> = runs.iter().map(|r| &r[n].0).collect();
            let values: Vec<&Tensor> = runs.iter().map(|r| &r[n].1).collect();
            layer.append(&Tensor::cat(&keys, 2)?, &Tensor::cat(&values, 2)?)?;
        }
        Ok(())
    }
}

/// One sequence's part of a batched forward pass: the tokens to add and its cache.
pub struct BatchItem<'a> {
    /// New tokens (a whole prompt for prefill, one token for decode); at least one.
    pub tokens: &'a [u32],
    /// The sequence's cache; the new tokens' keys and values are appended to it.
    pub cache: &'a mut KvCache,
}

/// One weight tensor of the model, named by its role; each checkpoint format spells the
/// names its own way ([`Weight::hf_name`] for safetensors, `gguf` for llama.cpp's files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Weight {
    /// The token embedding `[vocab, hidden]`.
    Embedding,
    /// The norm after the last layer.
    FinalNorm,
    /// The output head `[vocab, hidden]` (absent when tied to the embedding).
    Head,
    /// A weight of one decoder layer.
    Layer(usize, LayerWeight),
}

/// A weight within a decoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerWeight {
    /// The norm before attention.
    InputNorm,
    /// GLM-4-0414's norm of the attention output (`post_self_attn_layernorm`).
    PostAttentionNorm,
    /// The norm before the MLP (Hugging Face calls it `post_attention_layernorm`).
    PreMlpNorm,
    /// GLM-4-0414's norm of the MLP output (`post_mlp_layernorm`).
    PostMlpNorm,
    /// The query projection.
    Q,
    /// The key projection.
    K,
    /// The value projection.
    V,
    /// The query projection's bias.
    QBias,
    /// The key projection's bias.
    KBias,
    /// The value projection's bias.
    VBias,
    /// The attention output projection.
    O,
    /// The MLP's gate and up projections, gate rows first.
    GateUp,
    /// The MLP's down projection.
    Down,
}

impl Weight {
    /// Every weight a model of `arch` with `config` has, with its shape, in loading order.
    pub fn all(config: &ModelConfig, arch: Architecture) -> Vec<(Weight, Vec<usize>)> {
        use LayerWeight::*;
        let (h, i, v) = (config.hidden_size, config.intermediate_size, config.vocab_size);
        // ModelConfig::check refuses configurations whose products overflow; saturating here
        // keeps an unchecked one from wrapping to a small shape that some file might match.
        let (q, kv) = (
            config.num_attention_heads.saturating_mul(config.head_dim()),
            config.kv_heads().saturating_mul(config.head_dim()),
        );
        let mut weights = vec![(Weight::Embedding, vec![v, h])];
        for n in 0..config.num_hidden_layers {
            let mut layer = vec![(InputNorm, vec![h]), (PreMlpNorm, vec![h])];
            if arch == Architecture::Glm4 {
                layer.extend([(PostAttentionNorm, vec![h]), (PostMlpNorm, vec![h])]);
            }
            for (matrix, bias, out) in [(Q, QBias, q), (K, KBias, kv), (V, VBias, kv)] {
                layer.push((matrix, vec![out, h]));
                if config.attention_bias {
                    layer.push((bias, vec![out]));
                }
            }
            layer.extend([
                (O, vec![h, q]),
                (GateUp, vec![i.saturating_mul(2), h]),
                (Down, vec![h, i]),
            ]);
            weights.extend(layer.into_iter().map(|(w, shape)| (Weight::Layer(n, w), shape)));
        }
        weights.push((Weight::FinalNorm, vec![h]));
        if !config.tie_word_embeddings {
            weights.push((Weight::Head, vec![v, h]));
        }
        weights
    }

    /// The tensor's name in a Hugging Face safetensors checkpoint.
    pub fn hf_name(self) -> String {
        use LayerWeight::*;
        let layer = match self {
            Weight::Embedding => return "model.embed_tokens.weight".into(),
            Weight::FinalNorm => return "model.norm.weight".into(),
            Weight::Head => return "lm_head.weight".into(),
            Weight::Layer(n, w) => (n, w),
        };
        let name = match layer.1 {
            InputNorm => "input_layernorm.weight",
            PostAttentionNorm => "post_self_attn_layernorm.weight",
            PreMlpNorm => "post_attention_layernorm.weight",
            PostMlpNorm => "post_mlp_layernorm.weight",
            Q => "self_attn.q_proj.weight",
            K => "self_attn.k_proj.weight",
            V => "self_attn.v_proj.weight",
            QBias => "self_attn.q_proj.bias",
            KBias => "self_attn.k_proj.bias",
            VBias => "self_attn.v_proj.bias",
            O => "self_attn.o_proj.weight",
            GateUp => "mlp.gate_up_proj.weight",
            Down => "mlp.down_proj.weight",
        };
        format!("model.layers.{}.{name}", layer.0)
    }
}

/// Where [`GlmModel::new`] takes its weights from.
pub trait WeightSource {
    /// The dtype the model computes in.
    fn dtype(&self) -> DType;
    /// The device the weights go to.
    fn device(&self) -> &Device;
    /// A dense tensor of `shape`: a norm, a bias or the embedding.
    fn tensor(&mut self, weight: Weight, shape: &[usize]) -> Result<Tensor>;
    /// A projection `[out, in]`, dense or quantized as the checkpoint stores it.
    fn matrix(&mut self, weight: Weight, shape: (usize, usize)) -> Result<Matrix>;
    /// The output head of a model whose head is its embedding matrix.
    fn tied_head(&mut self, embedding: &Tensor) -> Result<Matrix> {
        Ok(Matrix::Dense(Linear::new(embedding.clone(), None)))
    }
}

impl<T: WeightSource + ?Sized> WeightSource for &mut T {
    fn dtype(&self) -> DType {
        (**self).dtype()
    }

    fn device(&self) -> &Device {
        (**self).device()
    }

    fn tensor(&mut self, weight: Weight, shape: &[usize]) -> Result<Tensor> {
        (**self).tensor(weight, shape)
    }

    fn matrix(&mut self, weight: Weight, shape: (usize, usize)) -> Result<Matrix> {
        (**self).matrix(weight, shape)
    }

    fn tied_head(&mut self, embedding: &Tensor) -> Result<Matrix> {
        (**self).tied_head(embedding)
    }
}

/// Safetensors through candle's builder: every weight dense, in the builder's dtype.
impl WeightSource for VarBuilder<'_> {
    fn dtype(&self) -> DType {
        VarBuilder::dtype(self)
    }

    fn device(&self) -> &Device {
        VarBuilder::device(self)
    }

    fn tensor(&mut self, weight: Weight, shape: &[usize]) -> Result<Tensor> {
        self.get(shape, &weight.hf_name())
    }

    fn matrix(&mut self, weight: Weight, shape: (usize, usize)) -> Result<Matrix> {
        Ok(Matrix::Dense(Linear::new(self.get(shape, &weight.hf_name())?, None)))
    }
}

/// A weight matrix applied as `x Wᵀ (+ b)`.
#[derive(Debug, Clone)]
pub enum Matrix {
    /// Dense weights (safetensors, or a float tensor in a GGUF); gradients flow through it.
    Dense(Linear),
    /// Weights kept in a GGML block format.
    Quantized {
        /// The matrix and the kernel that multiplies it.
        weight: QuantizedKernel,
        /// The bias, dense.
        bias: Option<Tensor>,
    },
    /// Matrices whose outputs are concatenated: the separate gate and up projections of a
    /// llama GGUF, which may even be stored in different types.
    Stacked(Vec<Matrix>),
    /// A base matrix with a low-rank side path added to its output, `W x + up (down x)`
    /// (a LoRA adapter, its scale folded into `up`): the base stays as stored, quantized or not.
    LowRank {
        /// The base matrix.
        base: Box<Matrix>,
        /// `[rank, in]`.
        down: Tensor,
        /// `[out, rank]`.
        up: Tensor,
    },
}

/// Which kernel multiplies a quantized matrix.
#[derive(Debug, Clone)]
pub enum QuantizedKernel {
    /// candle's, which round the activations to 8 bits a block first.
    Candle(QMatMul),
    /// Ours, with the activations as they are (CPU, 32-value block formats).
    FloatInput(FloatInputMatrix),
}

impl Matrix {
    /// A quantized matrix multiplied by candle's kernels; float tensors become plain matmuls.
    pub fn quantized(weight: Arc<QTensor>) -> Result<Self> {
        Ok(Self::Quantized {
            weight: QuantizedKernel::Candle(QMatMul::from_arc(weight)?),
            bias: None,
        })
    }

    /// A quantized matrix multiplied with unquantized activations ([`FloatInputMatrix`]).
    pub fn float_input(weight: &QTensor) -> Result<Self> {
        Ok(Self::Quantized {
            weight: QuantizedKernel::FloatInput(FloatInputMatrix::new(weight)?),
            bias: None,
        })
    }

    /// The same matrix with `bias` added to its output.
    pub fn with_bias(self, bias: Tensor) -> Result<Self> {
        match self {
            Self::Dense(linear) => {
                Ok(Self::Dense(Linear::new(linear.weight().clone(), Some(bias))))
            }
            Self::Quantized { weight, .. } => Ok(Self::Quantized { weight, bias: Some(bias) }),
            Self::Stacked(_) => candle_core::bail!("a stacked matrix takes no bias"),
            Self::LowRank { base, down, up } => {
                Ok(Self::LowRank { base: Box::new(base.with_bias(bias)?), down, up })
            }
        }
    }
}

impl Module for Matrix {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Dense(linear) => linear.forward(x),
            Self::Quantized { weight, bias } => {
                // The quantized kernels read their input as one contiguous block.
                let x = x.contiguous()?;
                let y = match weight {
                    QuantizedKernel::Candle(q) => q.forward(&x)?,
                    QuantizedKernel::FloatInput(q) => q.forward(&x)?,
                };
                match bias {
                    Some(bias) => y.broadcast_add(bias),
                    None => Ok(y),
                }
            }
            Self::Stacked(parts) => {
                let outputs: Vec<Tensor> =
                    parts.iter().map(|m| m.forward(x)).collect::<Result<_>>()?;
                Tensor::cat(&outputs, D::Minus1)
            }
            Self::LowRank { base, down, up } => {
                let side = x.broadcast_matmul(&down.t()?)?.broadcast_matmul(&up.t()?)?;
                base.forward(x)? + side
            }
        }
    }
}

/// A GLM-4 (`Glm4ForCausalLM`) or GLM (`GlmForCausalLM`) causal language model.
#[derive(Debug, Clone)]
pub struct GlmModel {
    embed: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Matrix,
    rotary: Rotary,
    kernels: Kernels,
    max_positions: usize,
    device: Device,
    dtype: DType,
}

#[derive(Debug, Clone)]
struct Layer {
    input_norm: RmsNorm,
    attention: Attention,
    /// GLM-4-0414's norms after attention and after the MLP (absent in `GlmForCausalLM`).
    sandwich: Option<(RmsNorm, RmsNorm)>,
    pre_mlp_norm: RmsNorm,
    gate_up: Matrix,
    down: Matrix,
}

#[derive(Debug, Clone)]
struct Attention {
    q: Matrix,
    k: Matrix,
    v: Matrix,
    o: Matrix,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

#[derive(Debug, Clone)]
struct Rotary {
    cos: Tensor,
    sin: Tensor,
    dim: usize,
}

/// Everything the layers share within one forward pass.
struct Pass<'a> {
    cos: Tensor,
    sin: Tensor,
    mask: Option<Tensor>,
    lens: &'a [usize],
    total: usize,
    kernels: Kernels,
}

impl GlmModel {
    /// Build the model of `arch` from `weights`; `on_layer(done, total)` reports progress.
    pub fn new(
        config: &ModelConfig,
        arch: Architecture,
        mut weights: impl WeightSource,
        kernels: Kernels,
        mut on_layer: impl FnMut(usize, usize),
    ) -> Result<Self> {
        use LayerWeight::*;
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let (head_dim, heads, kv_heads) =
            (config.head_dim(), config.num_attention_heads, config.kv_heads());
        let (q_width, kv_width) = (heads * head_dim, kv_heads * head_dim);
        let eps = config.rms_norm_eps;
        let embedding = weights.tensor(Weight::Embedding, &[config.vocab_size, h])?;
        let total = config.num_hidden_layers;
        let mut layers = Vec::with_capacity(total);
        for n in 0..total {
            let w = |part| Weight::Layer(n, part);
            let mut norm = |part| weights.tensor(w(part), &[h]).map(|t| RmsNorm::new(t, eps));
            let input_norm = norm(InputNorm)?;
            let pre_mlp_norm = norm(PreMlpNorm)?;
            let sandwich = match arch {
                Architecture::Glm4 => Some((norm(PostAttentionNorm)?, norm(PostMlpNorm)?)),
                Architecture::Glm => None,
            };
            let mut projection = |part, bias, out| -> Result<Matrix> {
                let matrix = weights.matrix(w(part), (out, h))?;
                if config.attention_bias {
                    matrix.with_bias(weights.tensor(w(bias), &[out])?)
                } else {
                    Ok(matrix)
                }
            };
            let attention = Attention {
                q: projection(Q, QBias, q_width)?,
                k: projection(K, KBias, kv_width)?,
                v: projection(V, VBias, kv_width)?,
                o: weights.matrix(w(O), (h, q_width))?,
                heads,
                kv_heads,
                head_dim,
            };
            layers.push(Layer {
                input_norm,
                attention,
                sandwich,
                pre_mlp_norm,
                gate_up: weights.matrix(w(GateUp), (2 * i, h))?,
                down: weights.matrix(w(Down), (h, i))?,
            });
            on_layer(n + 1, total);
        }
        let norm = RmsNorm::new(weights.tensor(Weight::FinalNorm, &[h])?, eps);
        let lm_head = if config.tie_word_embeddings {
            weights.tied_head(&embedding)?
        } else {
            weights.matrix(Weight::Head, (config.vocab_size, h))?
        };
        let (device, dtype) = (weights.device().clone(), weights.dtype());
        Ok(Self {
            norm,
            rotary: Rotary::new(config, dtype, &device)?,
            embed: Embedding::new(embedding, h),
            layers,
            lm_head,
            kernels,
            max_positions: config.max_position_embeddings,
            device,
            dtype,
        })
    }

    /// An empty cache for a new sequence.
    pub fn new_cache(&self) -> KvCache {
        KvCache {
            layers: self.layers.iter().map(|_| candle_nn::kv_cache::KvCache::new(2, 256)).collect(),
        }
    }

    /// The projection that multiplies as `weight` (Q, K, V, O, GateUp, Down or Head); None
    /// for the norms, biases and embedding, and for layers the model lacks.
    pub fn matrix(&self, weight: Weight) -> Option<&Matrix> {
        use LayerWeight::*;
        let (n, part) = match weight {
            Weight::Head => return Some(&self.lm_head),
            Weight::Layer(n, part) => (n, part),
            Weight::Embedding | Weight::FinalNorm => return None,
        };
        let layer = self.layers.get(n)?;
        Some(match part {
            Q => &layer.attention.q,
            K => &layer.attention.k,
            V => &layer.attention.v,
            O => &layer.attention.o,
            GateUp => &layer.gate_up,
            Down => &layer.down,
            _ => return None,
        })
    }

    /// Longest sequence the model accepts.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Run the new tokens of every item through the model, append them to the items' caches,
    /// and return the next-token logits after each item's last token: `[items, vocab]`, f32.
    pub fn forward(&self, batch: &mut [BatchItem]) -> Result<Tensor> {
        let hidden = self.forward_hidden(batch)?;
        let last: Vec<Tensor> = batch
            .iter()
            .enumerate()
            .map(|(i, item)| hidden.i((i, item.tokens.len() - 1)))
            .collect::<Result<_>>()?;
        Tensor::stack(&last, 0)?.apply(&self.lm_head)?.to_dtype(DType::F32)
    }

    /// The training forward pass: logits at every position of a batch of right-padded
    /// sequences `[b, s]` that all continue the same `prefix` (which is computed once per
    /// pass, not once per sequence), without a cache. Use [`Kernels::Differentiable`] for
    /// gradients.
    pub fn forward_train(&self, prefix: &[u32], suffixes: &Tensor) -> Result<Tensor> {
        let (_, s) = suffixes.dims2()?;
        let p = prefix.len();
        if p + s > self.max_positions {
            candle_core::bail!(
                "the sequences need {} positions but the model has {}",
                p + s,
                self.max_positions
            );
        }
        let pass = |start: usize, rows: usize| -> Result<Pass<'static>> {
            let causal: Vec<f32> = (0..rows)
                .flat_map(|i| {
                    (0..start + rows)
                        .map(move |j| if j <= start + i { 0.0 } else { f32::NEG_INFINITY })
                })
                .collect();
            let mask = Tensor::from_vec(causal, (1, 1, rows, start + rows), &self.device)?;
            Ok(Pass {
                cos: self.rotary.cos.narrow(0, start, rows)?,
                sin: self.rotary.sin.narrow(0, start, rows)?,
                mask: Some(mask.to_dtype(self.dtype)?),
                lens: &[],
                total: start + rows,
                kernels: self.kernels,
            })
        };
        let suffix_pass = pass(p, s)?;
        let mut xs = self.embed.forward(suffixes)?;
        if p == 0 {
            for layer in &self.layers {
                xs = layer.forward(&xs, &suffix_pass, None)?;
            }
        } else {
            let prefix_pass = pass(0, p)?;
            let mut xp = self.embed.forward(&Tensor::new(prefix, &self.device)?.unsqueeze(0)?)?;
            for layer in &self.layers {
                (xp, xs) = layer.forward_shared(&xp, &xs, &prefix_pass, &suffix_pass)?;
            }
        }
        linear(&self.lm_head, &norm(&self.norm, &xs, self.kernels)?)
    }

    fn forward_hidden(&self, batch: &mut [BatchItem]) -> Result<Tensor> {
        let lens: Vec<usize> = batch.iter().map(|item| item.tokens.len()).collect();
        let offsets: Vec<usize> = batch.iter().map(|item| item.cache.len()).collect();
        let width = lens.iter().copied().max().unwrap_or(0);
        if batch.is_empty() || lens.contains(&0) {
            candle_core::bail!("every sequence in a batch needs at least one new token");
        }
        let total = offsets.iter().zip(&lens).map(|(o, l)| o + l).max().unwrap_or(0);
        if total > self.max_positions {
            candle_core::bail!(
                "the sequence needs {total} positions but the model has {}",
                self.max_positions
            );
        }
        let b = batch.len();
        // Pad short items by repeating their last token at their last position: the padded
        // rows are computed and discarded, and never enter a cache.
        let mut ids = Vec::with_capacity(b * width);
        let mut positions = Vec::with_capacity(b * width);
        for (item, &offset) in batch.iter().zip(&offsets) {
            for t in 0..width {
                let t = t.min(item.tokens.len() - 1);
                ids.push(item.tokens[t]);
                positions.push((offset + t) as u32);
            }
        }
        let ids = Tensor::from_vec(ids, (b, width), &self.device)?;
        let positions = Tensor::from_vec(positions, b * width, &self.device)?;
        let half = self.rotary.dim / 2;
        let pass = Pass {
            cos: self.rotary.cos.index_select(&positions, 0)?.reshape((b, width, half))?,
            sin: self.rotary.sin.index_select(&positions, 0)?.reshape((b, width, half))?,
            mask: self.mask(&offsets, &lens, width, total)?,
            lens: &lens,
            total,
            kernels: self.kernels,
        };
        let mut x = self.embed.forward(&ids)?;
        for (n, layer) in self.layers.iter().enumerate() {
            let mut caches: Vec<&mut candle_nn::kv_cache::KvCache> =
                batch.iter_mut().map(|item| &mut item.cache.layers[n]).collect();
            x = layer.forward(&x, &pass, Some(&mut caches))?;
        }
        norm(&self.norm, &x, self.kernels)
    }

    /// Additive mask `[b, 1, width, total]`: a query sees the keys at or before its own
    /// position in its own sequence; keys past a sequence's end are padding.
    fn mask(
        &self,
        offsets: &[usize],
        lens: &[usize],
        width: usize,
        total: usize,
    ) -> Result<Option<Tensor>> {
        if width == 1 && offsets.iter().zip(lens).all(|(o, l)| o + l == total) {
            return Ok(None);
        }
        let mut mask = Vec::with_capacity(offsets.len() * width * total);
        for (&offset, &len) in offsets.iter().zip(lens) {
            for t in 0..width {
                let last_visible = offset + t.min(len - 1);
                mask.extend(
                    (0..total).map(|j| if j <= last_visible { 0f32 } else { f32::NEG_INFINITY }),
                );
            }
        }
        let mask = Tensor::from_vec(mask, (offsets.len(), 1, width, total), &self.device)?;
        Ok(Some(mask.to_dtype(self.dtype)?))
    }
}

impl Layer {
    fn forward(
        &self,
        x: &Tensor,
        pass: &Pass,
        caches: Option<&mut [&mut candle_nn::kv_cache::KvCache]>,
    ) -> Result<Tensor> {
        let attended =
            self.attention.forward(&norm(&self.input_norm, x, pass.kernels)?, pass, caches)?;
        self.finish(x, attended, pass.kernels)
    }

    /// One layer over a shared prefix `xp` and the suffixes `xs` that attend to it.
    fn forward_shared(
        &self,
        xp: &Tensor,
        xs: &Tensor,
        prefix: &Pass,
        suffix: &Pass,
    ) -> Result<(Tensor, Tensor)> {
        let (ap, as_) = self.attention.forward_shared(
            &norm(&self.input_norm, xp, prefix.kernels)?,
            &norm(&self.input_norm, xs, suffix.kernels)?,
            prefix,
            suffix,
        )?;
        Ok((self.finish(xp, ap, prefix.kernels)?, self.finish(xs, as_, suffix.kernels)?))
    }

    /// The residual around attention, then the MLP and its residual.
    fn finish(&self, x: &Tensor, attended: Tensor, kernels: Kernels) -> Result<Tensor> {
        let attended = match &self.sandwich {
            Some((post_attn, _)) => norm(post_attn, &attended, kernels)?,
            None => attended,
        };
        let x = (x + attended)?;
        let gate_up = linear(&self.gate_up, &norm(&self.pre_mlp_norm, &x, kernels)?)?;
        let inner = gate_up.dim(D::Minus1)? / 2;
        let gate = gate_up.narrow(D::Minus1, 0, inner)?.silu()?;
        let up = gate_up.narrow(D::Minus1, inner, inner)?;
        let mlp = linear(&self.down, &(gate * up)?)?;
        let mlp = match &self.sandwich {
            Some((_, post_mlp)) => norm(post_mlp, &mlp, kernels)?,
            None => mlp,
        };
        x + mlp
    }
}

impl Attention {
    fn forward(
        &self,
        x: &Tensor,
        pass: &Pass,
        caches: Option<&mut [&mut candle_nn::kv_cache::KvCache]>,
    ) -> Result<Tensor> {
        let (q, k, v) = self.project(x, pass)?;
        let (keys, values) = match caches {
            Some(caches) => self.with_cache(&k, &v, pass, caches)?,
            None => (k, v),
        };
        self.attend(&q, keys, values, pass)
    }

    /// Attention of a shared prefix over itself, and of each suffix over the prefix and
    /// its own earlier positions.
    fn forward_shared(
        &self,
        xp: &Tensor,
        xs: &Tensor,
        prefix: &Pass,
        suffix: &Pass,
    ) -> Result<(Tensor, Tensor)> {
        let (qp, kp, vp) = self.project(xp, prefix)?;
        let (qs, ks, vs) = self.project(xs, suffix)?;
        let b = xs.dim(0)?;
        let shared = |t: &Tensor| -> Result<Tensor> {
            let (_, heads, len, dim) = t.dims4()?;
            t.broadcast_as((b, heads, len, dim))?.contiguous()
        };
        let keys = Tensor::cat(&[&shared(&kp)?, &ks], 2)?;
        let values = Tensor::cat(&[&shared(&vp)?, &vs], 2)?;
        Ok((self.attend(&qp, kp, vp, prefix)?, self.attend(&qs, keys, values, suffix)?))
    }

    /// Queries, keys (both rotated) and values of `x`, heads split out.
    fn project(&self, x: &Tensor, pass: &Pass) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, width, _) = x.dims3()?;
        let split = |t: Tensor, heads| t.reshape((b, width, heads, self.head_dim))?.transpose(1, 2);
        let q = split(linear(&self.q, x)?, self.heads)?;
        let k = split(linear(&self.k, x)?, self.kv_heads)?;
        let v = split(linear(&self.v, x)?, self.kv_heads)?.contiguous()?;
        Ok((rotate(&q, pass)?, rotate(&k, pass)?, v))
    }

    /// Masked attention of `q` over `keys`/`values`, through the output projection.
    fn attend(&self, q: &Tensor, keys: Tensor, values: Tensor, pass: &Pass) -> Result<Tensor> {
        let (b, _, width, _) = q.dims4()?;
        let groups = self.heads / self.kv_heads;
        let keys = candle_transformers::utils::repeat_kv(keys, groups)?.contiguous()?;
        let values = candle_transformers::utils::repeat_kv(values, groups)?.contiguous()?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let mut scores = (q.contiguous()?.matmul(&keys.t()?)? * scale)?;
        if let Some(mask) = &pass.mask {
            scores = scores.broadcast_add(mask)?;
        }
        let probs = match pass.kernels {
            Kernels::Fused => candle_nn::ops::softmax_last_dim(&scores)?,
            Kernels::Differentiable => candle_nn::ops::softmax(&scores, D::Minus1)?,
        };
        let context = probs.matmul(&values)?.transpose(1, 2)?.reshape((
            b,
            width,
            self.heads * self.head_dim,
        ))?;
        linear(&self.o, &context)
    }
}

impl Attention {
    /// Append each item's new keys and values to its cache and return the whole batch's,
    /// right-padded to the longest sequence: `[b, kv_heads, total, head_dim]` each.
    fn with_cache(
        &self,
        k: &Tensor,
        v: &Tensor,
        pass: &Pass,
        caches: &mut [&mut candle_nn::kv_cache::KvCache],
    ) -> Result<(Tensor, Tensor)> {
        let mut keys = Vec::with_capacity(caches.len());
        let mut values = Vec::with_capacity(caches.len());
        for (i, cache) in caches.iter_mut().enumerate() {
            let len = pass.lens[i];
            let (k_all, v_all) = cache.append(
                &k.i(i..i + 1)?.narrow(2, 0, len)?.contiguous()?,
                &v.i(i..i + 1)?.narrow(2, 0, len)?.contiguous()?,
            )?;
            let pad = pass.total - k_all.dim(2)?;
            keys.push(k_all.pad_with_zeros(2, 0, pad)?);
            values.push(v_all.pad_with_zeros(2, 0, pad)?);
        }
        if keys.len() == 1 {
            return Ok((keys.remove(0), values.remove(0)));
        }
        Ok((Tensor::cat(&keys, 0)?, Tensor::cat(&values, 0)?))
    }
}

impl Rotary {
    fn new(config: &ModelConfig, dtype: DType, device: &Device) -> Result<Self> {
        let dim = config.rotary_dim();
        let inv_freq: Vec<f32> = (0..dim)
            .step_by(2)
            .map(|i| 1f32 / config.rope_theta.powf(i as f64 / dim as f64) as f32)
            .collect();
        let inv_freq = Tensor::from_vec(inv_freq, (1, dim / 2), device)?;
        let positions = config.max_position_embeddings;
        let t = Tensor::arange(0u32, positions as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((positions, 1))?;
        let freqs = t.matmul(&inv_freq)?;
        Ok(Self { cos: freqs.cos()?.to_dtype(dtype)?, sin: freqs.sin()?.to_dtype(dtype)?, dim })
    }
}

/// Interleaved rotary embedding on the first `rotary.dim` channels of each head.
fn rotate(x: &Tensor, pass: &Pass) -> Result<Tensor> {
    let head_dim = x.dim(D::Minus1)?;
    let dim = pass.cos.dim(D::Minus1)? * 2;
    let turned = x.narrow(D::Minus1, 0, dim)?.contiguous()?;
    let turned = match pass.kernels {
        Kernels::Fused => candle_nn::rotary_emb::rope_i(&turned, &pass.cos, &pass.sin)?,
        Kernels::Differentiable => rope_i_differentiable(&turned, &pass.cos, &pass.sin)?,
    };
    if dim == head_dim {
        return Ok(turned);
    }
    Tensor::cat(&[&turned, &x.narrow(D::Minus1, dim, head_dim - dim)?], D::Minus1)
}

/// `rope_i` from plain ops, with `cos`/`sin` of shape `[t, d/2]` or per sequence
/// `[b, t, d/2]` (candle's `rope_i_slow` takes only the first).
fn rope_i_differentiable(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (b, heads, t, d) = x.dims4()?;
    let rows = if cos.rank() == 3 { b } else { 1 };
    let cos = cos.reshape((rows, 1, t, d / 2, 1))?;
    let sin = sin.reshape((rows, 1, t, d / 2, 1))?;
    let pairs = x.reshape((b, heads, t, d / 2, 2))?;
    let (x0, x1) = (pairs.narrow(D::Minus1, 0, 1)?, pairs.narrow(D::Minus1, 1, 1)?);
    let y0 = (x0.broadcast_mul(&cos)? - x1.broadcast_mul(&sin)?)?;
    let y1 = (x0.broadcast_mul(&sin)? + x1.broadcast_mul(&cos)?)?;
    Tensor::cat(&[y0, y1], D::Minus1)?.flatten_from(D::Minus2)
}

/// A linear layer over `[b, t, in]` as one `[b*t, in]` matrix product, so a batch reads each
/// weight once.
fn linear(layer: &Matrix, x: &Tensor) -> Result<Tensor> {
    let (b, t, width) = x.dims3()?;
    let y = layer.forward(&x.reshape((b * t, width))?)?;
    let out = y.dim(1)?;
    y.reshape((b, t, out))
}

fn norm(layer: &RmsNorm, x: &Tensor, kernels: Kernels) -> Result<Tensor> {
    match kernels {
        Kernels::Fused => layer.forward(&x.contiguous()?),
        Kernels::Differentiable => layer.forward_diff(x),
    }
}
