//! What every request handler can reach: the plugins, the invocation path, the metrics,
//! the access rules, MCP sessions and the agent.

use std::sync::Arc;

use autoglm_engine::scheduler::SchedulerStats;
use tokio::sync::watch;

use super::access::Access;
use super::mcp;
use crate::agent::Agent;
use crate::config::ServerSettings;
use crate::invoke::Invoker;
use crate::tasks::Tasks;

/// Everything a request handler can reach.
pub struct AppState {
    /// Runs every tool call, whichever route it comes in on; holds the plugins and metrics.
    pub invoker: Arc<Invoker>,
    /// Keys, origins and limits.
    pub access: Access,
    /// Body limit, timeouts.
    pub settings: ServerSettings,
    /// MCP sessions (legacy revisions) and in-flight requests.
    pub mcp: mcp::Sessions,
    /// Turns true when the server starts shutting down; long-lived streams end.
    pub stopping: watch::Sender<bool>,
    /// The agent behind `/v1/chat/completions`, when a model is configured.
    pub agent: Option<Arc<Agent>>,
    /// The local engine's batching counters, for `/metrics`.
    pub model_stats: Option<Arc<SchedulerStats>>,
    /// The tasks behind `/v1/tasks`, or why there are none (the journal cannot be opened):
    /// tool calls serve either way.
    pub tasks: Result<Arc<Tasks>, String>,
}

impl AppState {
    /// State for serving the tools `invoker` runs under `settings`; `loopback` says
    /// whether the listening address is local (keys are required otherwise).
    pub fn new(
        invoker: Arc<Invoker>,
        settings: ServerSettings,
        loopback: bool,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            invoker,
            access: Access::new(&settings, loopback)?,
            mcp: mcp::Sessions::new(
                settings.sessions_per_key,
                std::time::Duration::from_millis(settings.session_ttl_ms),
            ),
            settings,
            stopping: watch::Sender::new(false),
            agent: None,
            model_stats: None,
            tasks: Err("this server was started without tasks".into()),
        })
    }

    /// Serve `/v1/tasks` with `tasks`, or answer it with why not.
    pub fn with_tasks(mut self, tasks: Result<Arc<Tasks>, String>) -> Self {
        self.tasks = tasks;
        self
    }

    /// Answer chat requests with `agent`; `stats` are the local engine's counters.
    pub fn with_agent(mut self, agent: Arc<Agent>, stats: Option<Arc<SchedulerStats>>) -> Self {
        self.agent = Some(agent);
        self.model_stats = stats;
        self
    }
}
