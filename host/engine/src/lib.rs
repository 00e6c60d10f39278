//! The GLM language-model engine: GLM-4 family checkpoints (safetensors + tokenizer.json, or
//! GGUF files with quantized matrices) on candle, CPU by default or CUDA with the `cuda`
//! feature. Owns the model, tokenizer, chat
//! template, reply parser and sampler; [`Engine::step`] advances many sequences in one pass.
//!
//! This crate knows nothing of plugins or sandboxes: the host offers it tool definitions
//! and maps its [`EngineError`] into the host's error taxonomy.

#![deny(missing_docs)]

pub mod adapter;
pub mod blocks;
pub mod chat;
pub mod checkpoint;
pub mod constrain;
pub mod gguf;
pub mod model;
pub mod package;
pub mod parse;
pub mod prefix;
pub mod remote;
pub mod sample;
pub mod scheduler;
pub mod template;
pub mod tokenizer;
pub mod turn;
pub mod weights;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, IndexOp};

pub use adapter::{Adapter, QkRows};
pub use checkpoint::{Architecture, AutoglmSettings, ModelConfig};
pub use constrain::{CallGrammar, Verdict};
pub use model::{BatchItem, GlmModel, Kernels, KvCache};
pub use parse::{Reply, StreamParser, parse_reply};
pub use prefix::{PrefixCache, PrefixStats};
pub use sample::{Sampler, SamplingParams};
pub use template::{ChatMessage, ChatTemplate, Role, ToolCall, ToolDef};
pub use tokenizer::{GlmTokenizer, TextStream};
pub use turn::{Priority, TurnRequest};

/// Why the engine could not load a model or generate.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A file the checkpoint needs is absent or unreadable.
    #[error("{what} is missing: {path}: {source}")]
    MissingFile {
        /// The file.
        path: PathBuf,
        /// What it should have held.
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A JSON file of the checkpoint is malformed or has impossible values.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// `config.json` names an architecture the engine does not run.
    #[error(
        "unsupported model architecture {found} in config.json; this engine runs {}. \
         GLM-4.5/4.6 (Glm4MoeForCausalLM) and the original ChatGLMModel layout can be served \
         by vLLM or SGLang and used as a remote engine",
        Architecture::SUPPORTED
    )]
    UnknownArchitecture {
        /// What config.json says.
        found: String,
    },
    /// Tensors are missing, mis-shaped or of the wrong type.
    #[error("the weights do not match config.json:\n  {}", problems.join("\n  "))]
    Weights {
        /// One line per tensor.
        problems: Vec<String>,
    },
    /// A file is not a GGUF the engine can read: wrong magic, a truncated header, metadata
    /// missing or of the wrong type.
    #[error("{path}: {message}")]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A GGUF of a model architecture the engine does not run.
    #[error(
        "{path}: general.architecture is {found:?}; this engine runs GGUF files of {}. Serve \
         this model with llama.cpp or vLLM and use it as a remote engine (--upstream URL)",
        gguf::SUPPORTED
    )]
    GgufArchitecture {
        /// The file.
        path: PathBuf,
        /// What the file says.
        found: String,
    },
    /// A GGUF asks for something the engine does not implement.
    #[error("{path}: {key}: {why}")]
    GgufUnsupported {
        /// The file.
        path: PathBuf,
        /// The metadata key or tensor that asks for it.
        key: String,
        /// What it is and what to do instead.
        why: String,
    },
    /// A GGUF's tensors are missing, mis-shaped, of a type without kernels, or cut off.
    #[error("{path}: the tensors do not match the file's own metadata:\n  {}", problems.join("\n  "))]
    GgufTensors {
        /// The file.
        path: PathBuf,
        /// One line per tensor.
        problems: Vec<String>,
    },
    /// A LoRA adapter does not fit the model or asks for what the engine does not apply.
    #[error("{path}: the adapter cannot be applied:\n  {}", problems.join("\n  "))]
    Adapter {
        /// The adapter directory.
        path: PathBuf,
        /// One line per problem.
        problems: Vec<String>,
    },
    /// A model file named as part of a package could not be fetched or failed its check.
    #[error("the model package {reference}: {message}")]
    Package {
        /// The package and the file in it.
        reference: String,
        /// What went wrong and what to do instead.
        message: String,
    },
    /// The tokenizer could not be used.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The vocabulary lacks a special token GLM-4 prompts need.
    #[error("tokenizer.json has no {name} token; GLM-4 tokenizers define it as a special token")]
    MissingSpecialToken {
        /// The token's text.
        name: &'static str,
    },
    /// The chat template failed to compile or render.
    #[error("chat template: {0}")]
    Template(String),
    /// A generation parameter is out of range.
    #[error("invalid {field}: {why}")]
    InvalidParameter {
        /// The parameter.
        field: &'static str,
        /// Why it is rejected.
        why: String,
    },
    /// The prompt does not fit the model's context.
    #[error(
        "the prompt has {tokens} tokens but the model's context holds {limit}; shorten the conversation"
    )]
    ContextOverflow {
        /// Tokens in the prompt.
        tokens: usize,
        /// The model's limit.
        limit: usize,
    },
    /// The requested device is unavailable.
    #[error("device: {0}")]
    Device(String),
    /// A tensor operation failed.
    #[error("model computation failed: {0}")]
    Compute(#[from] candle_core::Error),
    /// The batched pass this sequence was part of failed.
    #[error("the batch this request ran in failed: {0}")]
    Batch(String),
    /// The local engine's queue is full.
    #[error("the model's queue is full ({waiting} requests waiting); retry shortly")]
    Overloaded {
        /// Requests waiting when this one arrived.
        waiting: usize,
    },
    /// The engine thread ended before it answered.
    #[error("the engine thread stopped before answering")]
    Stopped,
    /// The remote model's settings cannot be used.
    #[error("[model.remote]: {0}")]
    RemoteSettings(String),
    /// The remote model could not be reached, failed, or answered something unusable.
    #[error("{0}")]
    Upstream(String),
    /// The remote model refused the request for now (HTTP 429).
    #[error("{0}")]
    UpstreamBusy(String),
    /// The remote model did not answer in time.
    #[error("the upstream model did not answer within {secs}s")]
    UpstreamTimeout {
        /// The configured timeout.
        secs: u64,
    },
}

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The CPU (f32).
    #[default]
    Cpu,
    /// The NVIDIA GPU with this ordinal (bf16); needs the `cuda` feature.
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("unknown device {s:?}: use cpu, cuda or cuda:N")),
        }
    }
}

impl DeviceChoice {
    fn open(self) -> Result<Device, EngineError> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(n) if cfg!(feature = "cuda") => Device::new_cuda(n)
                .map_err(|e| EngineError::Device(format!("cannot open CUDA device {n}: {e}"))),
            Self::Cuda(_) => Err(EngineError::Device(
                "this autoglm was built without GPU support; rebuild with `--features cuda` \
                 (needs the CUDA toolkit and nvcc)"
                    .into(),
            )),
        }
    }

    /// How logs and `/v1/models` name it: `cpu` or `cuda:N`.
    fn name(self) -> String {
        match self {
            Self::Cpu => "cpu".into(),
            Self::Cuda(n) => format!("cuda:{n}"),
        }
    }

    /// f32 on the CPU (bf16 is an order of magnitude slower there), bf16 on a GPU.
    fn dtype(self) -> DType {
        match self {
            Self::Cpu => DType::F32,
            Self::Cuda(_) => DType::BF16,
        }
    }
}

/// Facts about a loaded model, for logs and `/v1/models`.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The checkpoint directory's name.
    pub name: String,
    /// Which architecture.
    pub architecture: Architecture,
    /// How the weights are stored, e.g. `safetensors` or `GGUF llama: 210 Q4_1, 61 F32, 1 Q8_0`.
    pub format: String,
    /// Parameters in the weights.
    pub parameters: usize,
    /// Longest sequence.
    pub max_positions: usize,
    /// Where it runs, e.g. `cpu` or `cuda:0`.
    pub device: String,
    /// Whether prompts come from the checkpoint's own Jinja template.
    pub jinja_template: bool,
}

/// The prefix cache's budget unless the operator sets one: room for the tools blocks of
/// a few tool sets on a small model, little beside a large model's weights.
pub const DEFAULT_PREFIX_CACHE_BYTES: u64 = 256 << 20;

/// Where a checkpoint's files are.
enum Location<'a> {
    /// A directory of config.json, safetensors and tokenizer.json.
    Safetensors(&'a Path),
    /// A GGUF file.
    Gguf(PathBuf),
    /// A directory whose config.json names a GGUF and maybe an adapter.
    Parts(&'a Path, Box<checkpoint::Parts>),
}

/// The name `--model` takes for the demo model (where no file of that name is).
pub const DEMO: &str = "demo";

/// The demo model's directory in the source tree this engine was built from.
fn demo_dir() -> Result<PathBuf, EngineError> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/autoglm-demo");
    std::fs::canonicalize(&dir).map_err(|source| EngineError::MissingFile {
        path: dir,
        what: "the built-in demo model (models/autoglm-demo of the source tree this binary was \
               built from); pass the model directory itself, or a GGUF, as --model",
        source,
    })
}

fn locate(path: &Path) -> Result<Location<'_>, EngineError> {
    if path.is_file() {
        return Ok(Location::Gguf(path.to_path_buf()));
    }
    if path.is_dir()
        && path.join("config.json").is_file()
        && let Some(parts) = checkpoint::Parts::read(path)?
    {
        return Ok(Location::Parts(path, Box::new(parts)));
    }
    if !path.is_dir() || path.join("config.json").is_file() {
        return Ok(Location::Safetensors(path));
    }
    let entries = std::fs::read_dir(path).map_err(|e| EngineError::MissingFile {
        path: path.to_path_buf(),
        what: "the model directory",
        source: e,
    })?;
    let mut ggufs: Vec<PathBuf> = entries
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")))
        .collect();
    ggufs.sort();
    match ggufs.len() {
        // The safetensors loader says what is missing.
        0 => Ok(Location::Safetensors(path)),
        1 => Ok(Location::Gguf(ggufs.remove(0))),
        n => Err(EngineError::Config {
            path: path.to_path_buf(),
            message: format!(
                "the directory holds {n} GGUF files ({}); pass the one to load as --model",
                ggufs
                    .iter()
                    .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// What a GGUF's directory gives it: the files that override the GGUF's own, the `autoglm`
/// settings, the model's name and the adapter.
struct Beside<'a> {
    dir: &'a Path,
    settings: AutoglmSettings,
    name: Option<String>,
    adapter: Option<PathBuf>,
}

/// The name of the checkpoint directory `dir`, for logs and `/v1/models`.
fn directory_name(dir: &Path) -> String {
    (dir.canonicalize().ok().as_deref().unwrap_or(dir).file_name())
        .map_or_else(|| "model".to_string(), |n| n.to_string_lossy().into_owned())
}

/// The one adapter of a checkpoint in `dir`: the one its config.json `named` or the one
/// `given` on the command line, not both.
fn one_adapter(
    dir: &Path,
    named: Option<PathBuf>,
    given: Option<&Path>,
) -> Result<Option<PathBuf>, EngineError> {
    match (named, given) {
        (Some(named), Some(given)) => Err(EngineError::Config {
            path: dir.join("config.json"),
            message: format!(
                "autoglm.adapter names the adapter {}, and {} was given as well; apply one \
                 (drop --adapter, or the key)",
                named.display(),
                given.display()
            ),
        }),
        (named, given) => Ok(named.or(given.map(Path::to_path_buf))),
    }
}

/// The model of `config` from `weights`, with `adapter` applied to them if there is one.
fn build_model(
    config: &ModelConfig,
    arch: Architecture,
    weights: impl model::WeightSource,
    adapter: Option<&Adapter>,
    on_layer: impl FnMut(usize, usize),
) -> Result<GlmModel, EngineError> {
    Ok(match adapter {
        Some(adapter) => GlmModel::new(
            &adapter.model_config(config),
            arch,
            adapter.source(weights),
            Kernels::Fused,
            on_layer,
        )?,
        None => GlmModel::new(config, arch, weights, Kernels::Fused, on_layer)?,
    })
}

/// A loaded model with everything needed to chat with it.
pub struct Engine {
    model: GlmModel,
    tokenizer: GlmTokenizer,
    template: ChatTemplate,
    defaults: SamplingParams,
    stop: Vec<u32>,
    copy_arguments: HashMap<String, Vec<String>>,
    info: ModelInfo,
    prefix: Arc<PrefixCache>,
}

/// Why a sequence stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model emitted this stop token (`<|observation|>` after a tool call).
    Stop(u32),
    /// `max_new_tokens` or the model's context was reached.
    Length,
    /// Abandoned: the pass failed or the requester left.
    Aborted,
}

/// One conversation being generated: its tokens, cache and sampler.
pub struct Sequence {
    tokens: Vec<u32>,
    prompt_len: usize,
    pending: Vec<u32>,
    cache: KvCache,
    sampler: Sampler,
    max_new_tokens: usize,
    finish: Option<FinishReason>,
    grammar: Option<CallGrammar>,
}

impl Sequence {
    /// Generated tokens so far (the stop token excluded).
    pub fn generated(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }

    /// Tokens in the prompt.
    pub fn prompt_len(&self) -> usize {
        self.prompt_len
    }

    /// Why it stopped, once it has.
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }

    /// Stop generating.
    pub fn abort(&mut self) {
        self.finish.get_or_insert(FinishReason::Aborted);
    }
}

/// A finished generation with its timing.
#[derive(Debug, Clone)]
pub struct Generation {
    /// The generated text.
    pub text: String,
    /// The generated tokens.
    pub tokens: Vec<u32>,
    /// Why it stopped.
    pub finish: FinishReason,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Time to process the prompt and choose the first token.
    pub prefill: Duration,
    /// Forward passes after the first (one per later token, the stop token's included).
    pub decode_passes: usize,
    /// Time for those passes.
    pub decode: Duration,
}

impl Engine {
    /// Load the checkpoint at `path`: a directory with `config.json`, safetensors weights and
    /// `tokenizer.json`; a `.gguf` file; a directory holding exactly one `.gguf` (beside
    /// which a `tokenizer.json`, `chat_template.jinja` or `generation_config.json` overrides
    /// what the file carries); or a directory whose `config.json` names a GGUF base and an
    /// adapter ([`checkpoint::Parts`]). `on_layer(done, total)` reports progress.
    pub fn load(
        path: &Path,
        device: DeviceChoice,
        on_layer: impl FnMut(usize, usize),
    ) -> Result<Self, EngineError> {
        Self::load_adapted(path, None, device, on_layer)
    }

    /// [`Engine::load`] with the LoRA adapter in the directory `adapter` applied
    /// ([`adapter`]); a checkpoint whose `config.json` names an adapter (`autoglm.adapter`)
    /// takes no second one.
    pub fn load_adapted(
        path: &Path,
        adapter: Option<&Path>,
        device: DeviceChoice,
        on_layer: impl FnMut(usize, usize),
    ) -> Result<Self, EngineError> {
        let demo;
        let path = if path == Path::new(DEMO) && !path.exists() {
            demo = demo_dir()?;
            demo.as_path()
        } else {
            path
        };
        match locate(path)? {
            Location::Safetensors(dir) => Self::load_safetensors(dir, adapter, device, on_layer),
            Location::Gguf(file) => {
                let dir = file.parent().filter(|d| !d.as_os_str().is_empty());
                let beside = Beside {
                    dir: dir.unwrap_or(Path::new(".")),
                    settings: AutoglmSettings::default(),
                    name: file.file_stem().map(|n| n.to_string_lossy().into_owned()),
                    adapter: adapter.map(Path::to_path_buf),
                };
                Self::load_gguf(&file, beside, device, on_layer)
            }
            Location::Parts(dir, parts) => {
                let beside = Beside {
                    dir,
                    name: Some(directory_name(dir)),
                    adapter: one_adapter(dir, parts.adapter, adapter)?,
                    settings: parts.settings,
                };
                Self::load_gguf(&parts.base, beside, device, on_layer)
            }
        }
    }

    fn load_safetensors(
        dir: &Path,
        adapter: Option<&Path>,
        device: DeviceChoice,
        on_layer: impl FnMut(usize, usize),
    ) -> Result<Self, EngineError> {
        let config = ModelConfig::load(dir)?;
        let arch = config.architecture()?;
        let dev = device.open()?;
        let adapter = one_adapter(dir, config.autoglm.adapter_dir(dir)?, adapter)?
            .map(|a| Adapter::open(&a, &config, QkRows::Hf, &dev, device.dtype()))
            .transpose()?;
        let mut tokenizer = GlmTokenizer::load(dir)?;
        if let Some(adapter) = &adapter {
            tokenizer = adapter.tokenizer(tokenizer)?;
        }
        let template = ChatTemplate::for_checkpoint(dir, arch, config.autoglm.tools_block)?;
        let defaults = SamplingParams::for_checkpoint(dir)?;
        let expected = weights::expected_tensors(&config, arch);
        let files = weights::weight_files(dir)?;
        let vb = weights::open(&files, &expected, device.dtype(), &dev)?;
        let model = build_model(&config, arch, vb, adapter.as_ref(), on_layer)?;
        let mut format = String::from("safetensors");
        let mut parameters = expected.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        if let Some(adapter) = &adapter {
            format.push_str(&format!(" + {}", adapter.describe()));
            parameters += adapter.parameters();
        }
        let info = ModelInfo {
            name: directory_name(dir),
            architecture: arch,
            format,
            parameters,
            max_positions: config.max_position_embeddings,
            device: device.name(),
            jinja_template: template.is_jinja(),
        };
        Ok(Self::from_parts(model, tokenizer, template, defaults, &config, info))
    }

    fn load_gguf(
        file: &Path,
        beside: Beside,
        device: DeviceChoice,
        on_layer: impl FnMut(usize, usize),
    ) -> Result<Self, EngineError> {
        let started = Instant::now();
        let dir = beside.dir;
        let gguf = gguf::GgufFile::open(file)?;
        let mut config = gguf.config().clone();
        config.autoglm = beside.settings;
        let arch = gguf.layout().architecture();
        let dev = device.open()?;
        // Activations are f32 on every device for the quantized kernels (GgufWeights::dtype).
        let adapter = (beside.adapter.as_deref())
            .map(|a| Adapter::open(a, &config, gguf.layout().qk_rows(), &dev, DType::F32))
            .transpose()?;
        let tokenizer_json = dir.join("tokenizer.json");
        let inner = if tokenizer_json.is_file() {
            tokenizer::read_json(&tokenizer_json)?
        } else {
            gguf.tokenizer()?
        };
        let mut tokenizer = GlmTokenizer::with_stops(inner, gguf.stop_tokens()?)?;
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(EngineError::Tokenizer(format!(
                "the tokenizer has {} tokens but the model of {} embeds only {}",
                tokenizer.vocab_size(),
                file.display(),
                config.vocab_size
            )));
        }
        if let Some(adapter) = &adapter {
            tokenizer = adapter.tokenizer(tokenizer)?;
        }
        let text = |which| -> Result<String, EngineError> {
            let id = gguf.token_id(which)?;
            Ok(id.and_then(|id| tokenizer.inner().id_to_token(id)).unwrap_or_default())
        };
        let specials = (text("bos")?, text("eos")?);
        let glm_vocabulary = tokenizer.special().is_some();
        if config.autoglm.glm4_template && !glm_vocabulary {
            return Err(EngineError::Config {
                path: dir.join("config.json"),
                message: "autoglm.glm4_template asks for GLM-4's prompts, but the vocabulary \
                          lacks GLM-4's special tokens: add them with the adapter \
                          (added_tokens.json)"
                    .into(),
            });
        }
        // The file's own template is for the protocol the base was trained on.
        let embedded = if config.autoglm.glm4_template { None } else { gguf.chat_template()? };
        let template = ChatTemplate::for_gguf(
            dir,
            embedded,
            arch,
            glm_vocabulary,
            (&specials.0, &specials.1),
            config.autoglm.tools_block,
        )?
        .ok_or_else(|| EngineError::GgufUnsupported {
            path: file.to_path_buf(),
            key: "tokenizer.chat_template".into(),
            why: "the file has no chat template and its vocabulary lacks the GLM-4 special \
                  tokens the built-in one writes; put the model's chat_template.jinja beside it"
                .into(),
        })?;
        let defaults = SamplingParams::for_checkpoint(dir)?;
        let mut weights = gguf.weights(&dev, gguf::Matrices::default())?;
        let model = build_model(&config, arch, &mut weights, adapter.as_ref(), on_layer)?;
        let types: Vec<String> =
            gguf.tensor_types().iter().map(|(t, n)| format!("{n} {t}")).collect();
        let mut format = format!("GGUF {}: {}", gguf.layout().key_prefix(), types.join(", "));
        if weights.float_input() > 0 {
            format.push_str(&format!(
                " ({} multiplied with unquantized activations)",
                weights.float_input()
            ));
        }
        let mut parameters = gguf.parameters();
        if let Some(adapter) = &adapter {
            format.push_str(&format!(" + {}", adapter.describe()));
            parameters += adapter.parameters();
        }
        tracing::info!(
            file = %file.display(),
            format,
            seconds = started.elapsed().as_secs_f64(),
            "loaded the GGUF checkpoint"
        );
        let info = ModelInfo {
            name: beside.name.unwrap_or_else(|| "model".into()),
            architecture: arch,
            format,
            parameters,
            max_positions: config.max_position_embeddings,
            device: device.name(),
            jinja_template: template.is_jinja(),
        };
        Ok(Self::from_parts(model, tokenizer, template, defaults, &config, info))
    }

    /// An engine from parts built elsewhere (benchmarks, training).
    pub fn from_parts(
        model: GlmModel,
        tokenizer: GlmTokenizer,
        template: ChatTemplate,
        defaults: SamplingParams,
        config: &ModelConfig,
        info: ModelInfo,
    ) -> Self {
        let mut stop = tokenizer.stops().to_vec();
        stop.extend(config.eos_token_id.iter().flat_map(|e| e.ids()));
        stop.sort_unstable();
        stop.dedup();
        let copy_arguments = config.autoglm.copy_arguments.clone();
        let prefix = Arc::new(PrefixCache::new(DEFAULT_PREFIX_CACHE_BYTES));
        Self { model, tokenizer, template, defaults, stop, copy_arguments, info, prefix }
    }

    /// Bound the prefix cache to `bytes` of keys and values (0 turns it off), emptying it.
    pub fn set_prefix_cache_budget(&mut self, bytes: u64) {
        self.prefix = Arc::new(PrefixCache::new(bytes));
    }

    /// The prefix cache, to read its counters or empty it when the prompts it began
    /// (a tools block) are not made any more.
    pub fn prefix_cache(&self) -> &Arc<PrefixCache> {
        &self.prefix
    }

    /// Facts about the model.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &GlmTokenizer {
        &self.tokenizer
    }

    /// The model.
    pub fn model(&self) -> &GlmModel {
        &self.model
    }

    /// The checkpoint's default sampling parameters.
    pub fn defaults(&self) -> &SamplingParams {
        &self.defaults
    }

    /// The prompt for a conversation with `tools` offered.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        tools: &[ToolDef],
    ) -> Result<String, EngineError> {
        self.template.render(messages, tools)
    }

    /// Start generating after `prompt` (text with special tokens, as [`Engine::render`] makes).
    pub fn start(&self, prompt: &str, params: &SamplingParams) -> Result<Sequence, EngineError> {
        self.start_tokens(self.tokenizer.encode(prompt)?, params)
    }

    /// Start generating after the given prompt tokens.
    pub fn start_tokens(
        &self,
        prompt: Vec<u32>,
        params: &SamplingParams,
    ) -> Result<Sequence, EngineError> {
        params.check()?;
        let limit = self.model.max_positions();
        if prompt.is_empty() || prompt.len() >= limit {
            return Err(EngineError::ContextOverflow { tokens: prompt.len(), limit });
        }
        let mut cache = self.model.new_cache();
        let reused = self.prefix.restore(&prompt, &mut cache)?;
        Ok(Sequence {
            prompt_len: prompt.len(),
            pending: prompt[reused..].to_vec(),
            tokens: prompt,
            cache,
            sampler: Sampler::new(params),
            max_new_tokens: params.max_new_tokens,
            finish: None,
            grammar: None,
        })
    }

    /// Start the assistant's next turn in a conversation with `tools` offered; unless
    /// `params.constrain_calls` is off, a tool call is held to the tools' names and schemas.
    pub fn start_chat(
        &self,
        messages: &[ChatMessage],
        tools: &[ToolDef],
        params: &SamplingParams,
    ) -> Result<Sequence, EngineError> {
        let mut seq = self.start(&self.render(messages, tools)?, params)?;
        if (params.constrain_calls || params.require_tool_call) && !tools.is_empty() {
            let source: Vec<&str> = messages
                .iter()
                .filter(|m| matches!(m.role, Role::User | Role::Observation))
                .map(|m| m.content.as_str())
                .collect();
            let none = HashMap::new();
            let copy = if params.copy_constraint { &self.copy_arguments } else { &none };
            let grammar = CallGrammar::new(tools, copy, &source.join("\n"));
            seq.grammar =
                Some(if params.require_tool_call { grammar.requiring_call() } else { grammar });
        }
        Ok(seq)
    }

    /// Advance every unfinished sequence by one token in a single forward pass (prefill for
    /// new ones, decode for the rest). Returns each sequence's new token (None if finished).
    pub fn step(&self, sequences: &mut [&mut Sequence]) -> Result<Vec<Option<u32>>, EngineError> {
        let active: Vec<usize> =
            (0..sequences.len()).filter(|&i| sequences[i].finish.is_none()).collect();
        let mut out = vec![None; sequences.len()];
        if active.is_empty() {
            return Ok(out);
        }
        let logits = {
            let mut batch: Vec<BatchItem> = sequences
                .iter_mut()
                .filter(|s| s.finish.is_none())
                .map(|s| {
                    let s = &mut **s;
                    BatchItem { tokens: &s.pending, cache: &mut s.cache }
                })
                .collect();
            self.model.forward(&mut batch)?
        };
        for (row, &i) in active.iter().enumerate() {
            let seq = &mut *sequences[i];
            if seq.tokens.len() == seq.prompt_len {
                // Just prefilled: the prompt's whole blocks can start later prompts.
                self.prefix.store(&seq.tokens, &seq.cache)?;
            }
            let token = self.choose(seq, &logits.i(row)?)?;
            if self.stop.contains(&token) {
                seq.finish = Some(FinishReason::Stop(token));
            } else {
                seq.tokens.push(token);
                seq.pending = vec![token];
                let full = seq.tokens.len() >= self.model.max_positions();
                if seq.generated().len() >= seq.max_new_tokens || full {
                    seq.finish = Some(FinishReason::Length);
                }
            }
            out[i] = Some(token);
        }
        Ok(out)
    }

    /// The sequence's next token, within its grammar if it has one.
    fn choose(&self, seq: &mut Sequence, logits: &candle_core::Tensor) -> Result<u32, EngineError> {
        let Some(grammar) = &seq.grammar else {
            return Ok(seq.sampler.sample(logits, &seq.tokens)?);
        };
        let generated = seq.tokens[seq.prompt_len..].to_vec();
        // A text ending inside a character decodes to U+FFFD: it is judged by the bytes it
        // has, and a byte that continues the character is progress though the text is the same.
        let pending = |ids: &[u32], text: &str| {
            text.ends_with('\u{FFFD}').then(|| self.tokenizer.pending_bytes(ids)).flatten()
        };
        let so_far = self.tokenizer.decode(&generated)?;
        let so_far_pending = pending(&generated, &so_far);
        let now = grammar.check_pending(&so_far, so_far_pending.as_deref());
        if now == Verdict::Text {
            // A plain answer stays one: drop the grammar rather than decode the whole reply
            // again for every token.
            seq.grammar = None;
            return Ok(seq.sampler.sample(logits, &seq.tokens)?);
        }
        let mut candidate = generated.clone();
        let allowed = |token: u32| {
            if self.stop.contains(&token) {
                return now == Verdict::CompleteCall;
            }
            if now == Verdict::CompleteCall {
                return false;
            }
            candidate.truncate(generated.len());
            candidate.push(token);
            let text = self.tokenizer.decode(&candidate).unwrap_or_default();
            let cut = pending(&candidate, &text);
            // A token that adds nothing (a special token other than a stop) makes no progress.
            let progress = text != so_far || cut != so_far_pending;
            progress && !matches!(grammar.check_pending(&text, cut.as_deref()), Verdict::Invalid)
        };
        let chosen = seq.sampler.sample_allowed(logits, &seq.tokens, allowed)?;
        // Nothing fits (the vocabulary cannot continue the call): end the turn.
        Ok(chosen.unwrap_or(self.tokenizer.end_of_text()))
    }

    /// Generate after `prompt` alone, calling `on_text` with each piece of text as it decodes.
    pub fn generate(
        &self,
        prompt: &str,
        params: &SamplingParams,
        mut on_text: impl FnMut(&str),
    ) -> Result<Generation, EngineError> {
        let mut seq = self.start(prompt, params)?;
        let mut stream = TextStream::default();
        let mut shown = String::new();
        let started = Instant::now();
        let mut prefill = None;
        let mut passes = 0;
        while seq.finish.is_none() {
            let token = self.step(&mut [&mut seq])?[0];
            passes += 1;
            prefill.get_or_insert_with(|| started.elapsed());
            let stopped = matches!(seq.finish, Some(FinishReason::Stop(_)));
            if let (Some(token), false) = (token, stopped)
                && let Some(text) = stream.push(&self.tokenizer, token)?
            {
                on_text(&text);
                shown.push_str(&text);
            }
        }
        let text = self.tokenizer.decode(seq.generated())?;
        // A last token that ends inside a character is held back by the stream; flush it.
        if let Some(rest) = text.strip_prefix(shown.as_str()).filter(|r| !r.is_empty()) {
            on_text(rest);
        }
        let prefill = prefill.unwrap_or_default();
        Ok(Generation {
            text,
            tokens: seq.generated().to_vec(),
            finish: seq.finish.unwrap_or(FinishReason::Length),
            prompt_tokens: seq.prompt_len,
            decode_passes: passes - 1,
            prefill,
            decode: started.elapsed() - prefill,
        })
    }
}
