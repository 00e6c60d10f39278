//! `autoglm`: the command line of the Open-AutoGLM host.

mod cli;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use autoglm_host::app::{Host, ModelOverrides, Overrides, ServedModel, Settings};
use autoglm_host::config::{Config, ModelSettings};
use autoglm_host::describe::{ToolDescription, needs};
use autoglm_host::registry::{LoadError, load_plugin};
use autoglm_host::router::Router;
use autoglm_host::scaffold::{self, Lang};
use autoglm_host::server::AppState;

#[derive(Parser)]
#[command(
    name = "autoglm",
    version,
    about = "Host for sandboxed agent tools (WebAssembly components)"
)]
struct Cli {
    /// Log lines as text or as JSON objects (RUST_LOG sets what is logged; default: warnings).
    #[arg(long, global = true, value_enum, default_value = "text", env = "AUTOGLM_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// List the loaded tools with their plugin and granted capabilities.
    Tools {
        #[command(flatten)]
        host: HostArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Call one tool and print its result as JSON.
    Call {
        /// `plugin.tool`, `plugin__tool` or a unique bare tool name.
        tool: String,
        /// Arguments as a JSON object.
        #[arg(default_value = "{}")]
        args: String,
        #[command(flatten)]
        host: HostArgs,
    },
    /// Work with plugin files.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Serve tools over HTTP: tool API, OpenAI-compatible API, MCP, health and metrics.
    Serve {
        /// Address to listen on (default: the config's server.addr, 127.0.0.1:8080).
        #[arg(long, env = "AUTOGLM_ADDR")]
        addr: Option<String>,
        #[command(flatten)]
        host: HostArgs,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Ask the agent a question (or chat interactively without one); tool calls are shown.
    Chat {
        /// The question (words are joined); without it, questions are read from the terminal.
        question: Vec<String>,
        #[command(flatten)]
        host: HostArgs,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Create a plugin project from a template.
    New {
        /// The plugin's name (its tools become `NAME.tool`).
        name: String,
        /// The language of the template.
        #[arg(long, value_enum)]
        lang: Lang,
        /// Where to create it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Serve MCP over stdin/stdout, for desktop clients that launch tools as a process.
    Mcp {
        #[command(flatten)]
        host: HostArgs,
    },
    /// Generate text with a local GLM-4 family checkpoint, streaming the tokens.
    Generate(cli::generate::GenerateArgs),
    /// Run multi-stage tasks and look at them (journaled where `serve` journals them).
    Task {
        #[command(subcommand)]
        command: TaskCommand,
    },
    /// Score a model's tool calling on a JSON lines file of cases.
    Eval {
        #[command(flatten)]
        eval: cli::eval::EvalArgs,
        #[command(flatten)]
        host: HostArgs,
    },
}

#[derive(Subcommand)]
enum TaskCommand {
    /// Run a spec file (JSON or TOML) or a template by name, wait until it settles, and
    /// print its stages; exits 4 when it did not succeed.
    Run {
        /// A spec file, or a template's name (`tasks/NAME.toml`).
        target: String,
        /// The inputs, as a JSON object.
        #[arg(long)]
        input: Option<String>,
        #[command(flatten)]
        host: HostArgs,
    },
    /// Print a task with its stage timeline.
    Show {
        /// The task's id.
        id: String,
        #[command(flatten)]
        host: HostArgs,
    },
    /// List the newest tasks.
    List {
        /// Only tasks in this state (`running`, `paused`, `compensation_failed`, ...).
        #[arg(long)]
        state: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        host: HostArgs,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Show a component's contract version, tools, the WASI interfaces it imports, and
    /// where it was pulled from and who signed it.
    Inspect {
        /// The component file.
        file: PathBuf,
        /// Public keys (PEM) to check its signature with.
        #[arg(long)]
        key: Vec<PathBuf>,
    },
    /// Publish a component to an OCI registry (prints its manifest digest).
    Push {
        /// The component file.
        file: PathBuf,
        /// Where to: oci://HOST/REPOSITORY:TAG.
        reference: String,
        /// Also sign the pushed digest with this private key (PKCS#8 PEM).
        #[arg(long)]
        sign: Option<PathBuf>,
        #[command(flatten)]
        registry: cli::plugin::RegistryArgs,
    },
    /// Install a component from an OCI registry into the plugins directory (hot reload
    /// picks it up), its digest checked and recorded in autoglm.lock beside the config.
    Pull {
        /// oci://HOST/REPOSITORY:TAG or oci://HOST/REPOSITORY@sha256:DIGEST.
        reference: String,
        /// The plugin name (default: the repository's last component).
        #[arg(long)]
        name: Option<String>,
        /// Public keys (PEM) trusted to sign it, besides the config's; with any key, the
        /// signature is checked.
        #[arg(long)]
        key: Vec<PathBuf>,
        #[command(flatten)]
        registry: cli::plugin::RegistryArgs,
        #[command(flatten)]
        host: HostArgs,
    },
    /// Sign a pushed component (oci://...@sha256:..., its manifest digest, in cosign's
    /// format) or a local file (written as FILE.sig).
    Sign {
        /// oci://HOST/REPOSITORY@sha256:DIGEST (what push printed), or a file.
        target: String,
        /// The private key (PKCS#8 PEM).
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        registry: cli::plugin::RegistryArgs,
    },
    /// Make an ECDSA P-256 key pair for signing: PREFIX.key (private) and PREFIX.pub.
    Keygen {
        /// Path prefix of the two files.
        prefix: PathBuf,
    },
}

/// Which language model answers (overrides the config's `[model]`).
#[derive(Args)]
struct ModelArgs {
    /// A local checkpoint: a GLM-4 family safetensors directory, a .gguf file (glm4 or llama),
    /// or a directory holding one .gguf.
    #[arg(long, env = "AUTOGLM_MODEL")]
    model: Option<PathBuf>,
    /// A PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors)
    /// applied to the local checkpoint.
    #[arg(long, env = "AUTOGLM_ADAPTER")]
    adapter: Option<PathBuf>,
    /// An OpenAI-compatible server to use as the model instead, e.g. http://vllm:8000/v1.
    #[arg(long, env = "AUTOGLM_UPSTREAM")]
    upstream: Option<String>,
    /// The model name to ask the upstream for.
    #[arg(long, requires = "upstream")]
    upstream_model: Option<String>,
    /// cpu, cuda or cuda:N for a local checkpoint.
    #[arg(long)]
    device: Option<String>,
}

impl ModelArgs {
    /// These flags as overrides of the config's `[model]`.
    fn overrides(&self) -> ModelOverrides {
        ModelOverrides {
            path: self.model.clone(),
            upstream: self.upstream.clone(),
            upstream_model: self.upstream_model.clone(),
            device: self.device.clone(),
            adapter: self.adapter.clone(),
        }
    }

    /// Load the model these flags and `config` name (with a progress bar for a local
    /// checkpoint) and put an agent over `host`'s tools.
    async fn agent(&self, config: &Config, host: &Host) -> anyhow::Result<Option<ServedModel>> {
        let settings: ModelSettings = self.overrides().apply(config.model.clone());
        let bar = settings.path.as_deref().map(cli::load_bar);
        let invoker = host.invoker.clone();
        tokio::task::spawn_blocking(move || {
            autoglm_host::app::agent(invoker, &settings, |done, total| {
                if let Some(bar) = &bar {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                }
            })
        })
        .await?
    }
}

#[derive(Args)]
struct HostArgs {
    /// Directory of plugin components (default: the config's, else target/plugins).
    #[arg(long, env = "AUTOGLM_PLUGINS")]
    plugins: Option<PathBuf>,
    /// Config file (default: ./autoglm.toml when present).
    #[arg(long, env = "AUTOGLM_CONFIG")]
    config: Option<PathBuf>,
    /// Pull plugin sources only at the digests autoglm.lock records: a tag that now
    /// resolves elsewhere, or a source the lockfile lacks, is an error.
    #[arg(long)]
    locked: bool,
}

impl HostArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            config: self.config.clone(),
            plugins: self.plugins.clone(),
            locked: self.locked,
        }
    }
}

impl Command {
    /// The host options of commands that load plugins.
    fn host(&self) -> Option<&HostArgs> {
        match self {
            Command::Tools { host, .. }
            | Command::Call { host, .. }
            | Command::Serve { host, .. }
            | Command::Chat { host, .. }
            | Command::Mcp { host }
            | Command::Eval { host, .. }
            | Command::Task { command: TaskCommand::Run { host, .. } }
            | Command::Task { command: TaskCommand::Show { host, .. } }
            | Command::Task { command: TaskCommand::List { host, .. } }
            | Command::Plugin { command: PluginCommand::Pull { host, .. } } => Some(host),
            Command::Plugin { .. } | Command::New { .. } | Command::Generate(_) => None,
        }
    }
}

/// Report plugins that failed to load; the others serve.
fn warn_failed(errors: &[LoadError]) {
    for error in errors {
        tracing::error!(plugin = %error.plugin, kind = %error.kind, "{error}");
        eprintln!("warning: {error}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // reqwest is built without a default TLS provider (registries, OTLP export): ring, the
    // one the host already links, is installed before any client is made.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let format = match cli.log_format {
        LogFormat::Text => autoglm_host::telemetry::LogFormat::Text,
        LogFormat::Json => autoglm_host::telemetry::LogFormat::Json,
    };
    // The config is read once, here; a config that fails to load is reported by the command
    // itself. Spans are exported by the server only.
    let settings = cli.command.host().map(|host| Settings::resolve(&host.overrides()));
    let telemetry = match (&cli.command, &settings) {
        (Command::Serve { .. }, Some(Ok(settings))) => settings.config.telemetry.clone(),
        _ => Default::default(),
    };
    // Kept to the end of main: dropping it flushes exported spans, off the async runtime.
    let _spans = match autoglm_host::telemetry::init(format, &telemetry) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Ok(settings)) = &settings {
        for warning in &settings.config.warnings {
            tracing::warn!("{warning}");
        }
    }
    match runtime.block_on(run(cli.command, settings.transpose())) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Run `command`; `settings` are the resolved host settings of commands that load plugins.
async fn run(
    command: Command,
    settings: anyhow::Result<Option<Settings>>,
) -> anyhow::Result<ExitCode> {
    let settings = settings?;
    let settings = || settings.clone().context("this command takes no host options");
    match command {
        Command::Generate(args) => {
            tokio::task::spawn_blocking(move || cli::generate::run(&args)).await?
        }
        Command::Eval { eval, .. } => {
            let (host, errors) = Host::open(&settings()?).await?;
            warn_failed(&errors);
            let tools: Vec<_> = (host.invoker.router().tool_defs().into_iter())
                .map(|(target, def)| (target.id(), def))
                .collect();
            let runtime = tokio::runtime::Handle::current();
            let call = move |tool: &str, args: &Value| -> Result<Value, Value> {
                let outcome = runtime.block_on(host.call(tool, args)).outcome;
                outcome.map_err(|e| e.observation())
            };
            tokio::task::spawn_blocking(move || cli::eval::run(&eval, &tools, &call)).await?
        }
        Command::Task { command } => match command {
            TaskCommand::Run { target, input, .. } => {
                cli::task::run(&settings()?, &target, input.as_deref()).await
            }
            TaskCommand::Show { id, .. } => cli::task::show(&settings()?, &id).await,
            TaskCommand::List { state, limit, .. } => {
                cli::task::list(&settings()?, state.as_deref(), limit).await
            }
        },
        Command::Tools { json, .. } => {
            let (host, errors) = Host::open(&settings()?).await?;
            warn_failed(&errors);
            list_tools(&host.invoker.router(), json)
        }
        Command::Call { tool, args, .. } => {
            let args: Value = serde_json::from_str(&args)
                .with_context(|| format!("the arguments are not valid JSON: {args}"))?;
            let (host, errors) = Host::open(&settings()?).await?;
            warn_failed(&errors);
            let metered = host.call(&tool, &args).await;
            match metered.outcome {
                Ok(result) => {
                    print_out(&serde_json::to_string_pretty(&result)?)?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(error) => {
                    eprintln!("{}: {}", error.kind, error.message);
                    Ok(ExitCode::from(3))
                }
            }
        }
        Command::Plugin { command } => match command {
            PluginCommand::Inspect { file, key } => inspect(&file, &key).await,
            PluginCommand::Push { file, reference, sign, registry } => {
                cli::plugin::push(&file, &reference, sign.as_deref(), &registry).await
            }
            PluginCommand::Pull { reference, name, key, registry, host } => {
                let pull = cli::plugin::Pull {
                    reference,
                    name,
                    keys: key,
                    locked: host.locked,
                    registry: &registry,
                };
                cli::plugin::pull(&settings()?, pull).await
            }
            PluginCommand::Sign { target, key, registry } => {
                cli::plugin::sign(&target, &key, &registry).await
            }
            PluginCommand::Keygen { prefix } => cli::plugin::keygen(&prefix),
        },
        Command::Chat { question, model, .. } => {
            let settings = settings()?;
            let (host, errors) = Host::open(&settings).await?;
            for error in errors {
                eprintln!("warning: {error}");
            }
            let Some(served) = model.agent(&settings.config, &host).await? else {
                anyhow::bail!(
                    "no model to chat with: pass --model DIR or --upstream URL, or set [model] in the config"
                );
            };
            let question = Some(question.join(" ")).filter(|q| !q.trim().is_empty());
            cli::chat::run(served.agent, question).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { addr, model, .. } => {
            let settings = settings()?;
            let host = Host::start(&settings)?;
            let mut server = settings.config.server.clone();
            if let Some(addr) = addr {
                server.addr = addr;
            }
            let listener = tokio::net::TcpListener::bind(&server.addr)
                .await
                .with_context(|| format!("cannot listen on {}", server.addr))?;
            let local = listener.local_addr()?;
            let mut state = AppState::new(host.invoker.clone(), server, local.ip().is_loopback())?;
            if let Some(served) = model.agent(&settings.config, &host).await? {
                state = state.with_agent(served.agent, served.stats);
            }
            let callers = state.access.caller_check();
            let tasks =
                autoglm_host::app::start_tasks(&settings.config, host.invoker.clone(), callers)
                    .await;
            let state = Arc::new(state.with_tasks(tasks));
            let chat = match &state.agent {
                Some(agent) => {
                    format!("chat at /v1/chat/completions with {}", agent.model().name())
                }
                None => "no model: chat answers 503".into(),
            };
            eprintln!(
                "autoglm: listening on http://{local} (plugins from {}; MCP at /mcp, tools at /v1/tools; {chat})",
                host.plugins.dir().display()
            );
            autoglm_host::server::serve(state, listener, shutdown_signal()).await?;
            eprintln!("autoglm: stopped");
            Ok(ExitCode::SUCCESS)
        }
        Command::New { name, lang, dir } => {
            let created = scaffold::create(&name, lang, dir.as_deref())?;
            println!(
                "created {lang} plugin `{name}` in {}\nnext:\n{}",
                created.display(),
                scaffold::next_steps(lang, &created, &name)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Mcp { .. } => {
            let settings = settings()?;
            let host = Host::start(&settings)?;
            let state = AppState::new(host.invoker.clone(), settings.config.server.clone(), true)?;
            let callers = state.access.caller_check();
            let tasks =
                autoglm_host::app::start_tasks(&settings.config, host.invoker.clone(), callers)
                    .await;
            autoglm_host::server::stdio::serve(Arc::new(state.with_tasks(tasks))).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn list_tools(router: &Router, as_json: bool) -> anyhow::Result<ExitCode> {
    let targets = router.targets();
    if as_json {
        let tools: Vec<Value> =
            targets.iter().map(|t| ToolDescription::new(router, t).rest()).collect();
        print_out(&serde_json::to_string_pretty(&tools)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let width = targets.iter().map(|t| t.id().len()).max().unwrap_or(0);
    let table: Vec<String> = (targets.iter())
        .map(|t| format!("{:width$}  {}", t.id(), t.tool().spec.description))
        .collect();
    print_out(&table.join("\n"))?;
    Ok(ExitCode::SUCCESS)
}

async fn inspect(file: &Path, keys: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let config = Config::default();
    let runtime = autoglm_host::app::runtime(&config)?;
    let plugin = load_plugin(&runtime, &config, file).await?;
    let bytes = std::fs::read(file)?;
    let provenance = cli::plugin::provenance(file, &bytes, keys)?;
    let tools: Vec<Value> = (plugin.tools.iter())
        .map(|t| {
            json!({
                "name": t.spec.name,
                "description": t.spec.description,
                "input_schema": t.input_schema,
                "output_schema": t.output_schema,
                "needs": needs(&t.spec.capabilities),
                "annotations": autoglm_host::describe::annotations(t.spec.hints),
            })
        })
        .collect();
    let summary = json!({
        "plugin": plugin.name,
        "file": plugin.path,
        "bytes": plugin.size,
        "world": plugin.contract,
        "imports": plugin.imports,
        "refused": plugin.refused,
        "provenance": provenance,
        "tools": tools,
    });
    print_out(&serde_json::to_string_pretty(&summary)?)?;
    Ok(ExitCode::SUCCESS)
}

/// Print `text` and a newline; a closed pipe (`autoglm tools | head`) is not an error.
fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!(%error, "cannot watch SIGTERM; only Ctrl-C stops the server");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
