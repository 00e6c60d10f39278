//! `autoglm`: the command line of the Open-AutoGLM host.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use autoglm_host::config::Config;
use autoglm_host::registry::load_plugin;
use autoglm_host::router::Router;
use autoglm_host::runtime::Runtime;
use autoglm_host::{DEFAULT_PLUGINS_DIR, open};

#[derive(Parser)]
#[command(
    name = "autoglm",
    version,
    about = "Host for sandboxed agent tools (WebAssembly components)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    /// Serve tools over HTTP (tool API, OpenAI-compatible chat, MCP).
    Serve {
        #[command(flatten)]
        host: HostArgs,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Show a component's contract version, tools and the WASI interfaces it imports.
    Inspect {
        /// The component file.
        file: PathBuf,
    },
}

#[derive(Args)]
struct HostArgs {
    /// Directory of plugin components (default: the config's, else target/plugins).
    #[arg(long, env = "AUTOGLM_PLUGINS")]
    plugins: Option<PathBuf>,
    /// Config file (default: ./autoglm.toml when present).
    #[arg(long, env = "AUTOGLM_CONFIG")]
    config: Option<PathBuf>,
}

impl HostArgs {
    async fn open(&self) -> anyhow::Result<Arc<Router>> {
        let config = Config::load_default_or(self.config.as_deref())?;
        let dir = (self.plugins.clone())
            .or_else(|| config.plugins_dir.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PLUGINS_DIR));
        let (plugins, errors) = open(&config, &dir).await?;
        for error in errors {
            tracing::error!(plugin = %error.plugin, kind = %error.kind, "{error}");
            eprintln!("warning: {error}");
        }
        Ok(plugins.router())
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Tools { host, json } => list_tools(&*host.open().await?, json),
        Command::Call { tool, args, host } => {
            let args: Value = serde_json::from_str(&args)
                .with_context(|| format!("the arguments are not valid JSON: {args}"))?;
            let router = host.open().await?;
            match router.call(&tool, &args).await {
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
        Command::Plugin { command: PluginCommand::Inspect { file } } => inspect(&file).await,
        Command::Serve { .. } => {
            anyhow::bail!(
                "`autoglm serve` is not built yet (the HTTP endpoint lands with issue #4)"
            )
        }
    }
}

fn list_tools(router: &Router, as_json: bool) -> anyhow::Result<ExitCode> {
    let targets = router.targets();
    if as_json {
        let tools: Vec<Value> = targets
            .iter()
            .map(|t| {
                let policy = t.plugin.sandbox.policy();
                json!({
                    "id": t.id(),
                    "name": router.short_name(t),
                    "plugin": t.plugin.name,
                    "description": t.tool().spec.description,
                    "input_schema": t.tool().input_schema,
                    "output_schema": t.tool().output_schema,
                    "granted": {
                        "dirs": policy.dirs.iter().map(|d| json!({"guest": d.guest, "host": d.host, "mode": format!("{:?}", d.mode)})).collect::<Vec<_>>(),
                        "env": policy.env.iter().map(|(k, _)| k).collect::<Vec<_>>(),
                    },
                })
            })
            .collect();
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

async fn inspect(file: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::default();
    let runtime = Runtime::new(&config.engine, Some(autoglm_host::default_cache_dir()))?;
    let plugin = load_plugin(&runtime, &config, file).await?;
    let tools: Vec<Value> = (plugin.tools.iter())
        .map(|t| {
            let caps = &t.spec.capabilities;
            json!({
                "name": t.spec.name,
                "description": t.spec.description,
                "input_schema": t.input_schema,
                "output_schema": t.output_schema,
                "needs": {
                    "directories": caps.directories.iter().map(|d| json!({"guest_path": d.guest_path, "access": format!("{:?}", d.access)})).collect::<Vec<_>>(),
                    "outbound_hosts": caps.outbound_hosts,
                    "env": caps.env,
                },
                "hints": format!("{:?}", t.spec.hints),
            })
        })
        .collect();
    let summary = json!({
        "plugin": plugin.name,
        "file": plugin.path,
        "bytes": plugin.size,
        "world": plugin.contract,
        "imports": plugin.imports,
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
