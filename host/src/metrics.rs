//! Prometheus metrics: tool calls by outcome, latency, fuel, memory high-water,
//! in-flight calls and HTTP requests, rendered in the text exposition format.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry as MetricRegistry;

use crate::metered::Metered;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    plugin: String,
    tool: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    plugin: String,
    tool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

/// What the tasks' runner reports: counts by state, stage latency, retries, compensations,
/// resumes and lease takeovers.
pub struct TaskMetrics {
    states: Family<StateLabels, Gauge>,
    stage_latency: Histogram,
    retries: Counter,
    compensations: Counter,
    resumes: Counter,
    takeovers: Counter,
}

impl TaskMetrics {
    fn new() -> Self {
        Self {
            // 100 us to ~30 min: a stage is a tool call, queueing and retries included.
            stage_latency: Histogram::new(exponential_buckets(0.0001, 4.0, 12)),
            states: Family::default(),
            retries: Counter::default(),
            compensations: Counter::default(),
            resumes: Counter::default(),
            takeovers: Counter::default(),
        }
    }

    fn register(&self, registry: &mut MetricRegistry) {
        registry.register("tasks", "Tasks in the journal by state", self.states.clone());
        registry.register(
            "task_stage_seconds",
            "Time from a stage's start to its result, retries included",
            self.stage_latency.clone(),
        );
        registry.register(
            "task_stage_retries",
            "Stage and compensation retries",
            self.retries.clone(),
        );
        registry.register(
            "task_compensations",
            "Compensation calls that succeeded",
            self.compensations.clone(),
        );
        registry.register(
            "task_resumes",
            "Tasks resumed by an operator (resume, retry, abort)",
            self.resumes.clone(),
        );
        registry.register(
            "task_lease_takeovers",
            "Tasks taken over from a replica whose lease expired",
            self.takeovers.clone(),
        );
    }

    /// Set the count of tasks in `state`.
    pub fn set_state(&self, state: &str, count: u64) {
        let gauge = self.states.get_or_create(&StateLabels { state: state.to_string() });
        gauge.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// A stage ended (succeeded, or failed past its retries) after `seconds`.
    pub fn stage_done(&self, seconds: f64) {
        self.stage_latency.observe(seconds);
    }

    /// A stage or compensation is retried.
    pub fn retried(&self) {
        self.retries.inc();
    }

    /// A compensation succeeded.
    pub fn compensated(&self) {
        self.compensations.inc();
    }

    /// An operator resumed, retried or aborted a task.
    pub fn resumed(&self) {
        self.resumes.inc();
    }

    /// A replica took a task over from one whose lease expired.
    pub fn taken_over(&self) {
        self.takeovers.inc();
    }
}

/// The local engine's batching counters at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ModelCounters {
    /// Requests waiting for a place in the batch.
    pub queued: usize,
    /// Sequences in the running batch.
    pub running: usize,
    /// Forward passes run.
    pub passes: usize,
    /// Sequences stepped, summed over passes.
    pub sequence_steps: usize,
    /// Tokens generated.
    pub tokens: usize,
    /// Requests refused because the queue was full.
    pub refused: usize,
    /// The prefix cache's counters.
    pub prefix: autoglm_engine::PrefixStats,
}

/// Every metric the host exports.
pub struct Metrics {
    registry: MetricRegistry,
    calls: Family<CallLabels, Counter>,
    latency: Family<ToolLabels, Histogram>,
    fuel: Family<ToolLabels, Counter>,
    memory_peak: Family<PluginLabels, Gauge<u64, AtomicU64>>,
    in_flight: Gauge,
    http: Family<HttpLabels, Counter>,
    connections: Gauge,
    model: [(&'static str, Gauge); 10],
    tasks: TaskMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = MetricRegistry::with_prefix("autoglm");
        let calls = Family::<CallLabels, Counter>::default();
        // 10 us to ~20 s: sandboxed calls are microseconds, hostile ones hit seconds-long deadlines.
        let latency = Family::<ToolLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.00001, 4.0, 12))
        });
        let fuel = Family::<ToolLabels, Counter>::default();
        let memory_peak = Family::<PluginLabels, Gauge<u64, AtomicU64>>::default();
        let in_flight = Gauge::default();
        let http = Family::<HttpLabels, Counter>::default();
        let connections = Gauge::default();
        registry.register(
            "tool_calls",
            "Tool calls by plugin, tool and outcome kind",
            calls.clone(),
        );
        registry.register(
            "tool_call_seconds",
            "Tool call latency, queueing included",
            latency.clone(),
        );
        registry.register("tool_fuel", "Fuel consumed by tool calls", fuel.clone());
        registry.register(
            "plugin_memory_peak_bytes",
            "Largest guest memory seen per plugin",
            memory_peak.clone(),
        );
        registry.register(
            "tool_calls_in_flight",
            "Tool calls running or queued now",
            in_flight.clone(),
        );
        registry.register("http_requests", "HTTP requests by route and status", http.clone());
        registry.register("http_connections", "HTTP connections open now", connections.clone());
        let model = [
            ("model_queue_depth", "Chat requests waiting for a place in the batch"),
            ("model_batch_size", "Sequences in the running batch"),
            ("model_forward_passes", "Forward passes the local engine ran"),
            (
                "model_sequence_steps",
                "Sequences stepped, summed over passes (divide by passes for the mean batch)",
            ),
            ("model_generated_tokens", "Tokens the local engine generated"),
            ("model_refused_requests", "Chat requests refused because the queue was full"),
            ("model_prefix_cache_hits", "Prompts that reused cached blocks of an earlier prompt"),
            ("model_prefix_cache_misses", "Prompts that found no cached beginning"),
            ("model_prefix_cache_reused_tokens", "Prompt tokens whose prefill the cache skipped"),
            ("model_prefix_cache_bytes", "Bytes of keys and values the prefix cache holds"),
        ]
        .map(|(name, help)| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            (name, gauge)
        });
        let tasks = TaskMetrics::new();
        tasks.register(&mut registry);
        Self {
            registry,
            calls,
            latency,
            fuel,
            memory_peak,
            in_flight,
            http,
            connections,
            model,
            tasks,
        }
    }
}

/// Decrements the open-connections gauge when the connection ends.
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Decrements the in-flight gauge when the call ends, however it ends.
pub struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// Count a call as in flight until the returned guard drops.
    pub fn start_call(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    /// Record a finished call of `plugin.tool`.
    pub fn record_call<T>(&self, plugin: &str, tool: &str, metered: &Metered<T>) {
        let outcome = match &metered.outcome {
            Ok(_) => "ok".to_string(),
            Err(e) => e.kind.as_str().to_string(),
        };
        let tool_labels = ToolLabels { plugin: plugin.to_string(), tool: tool.to_string() };
        self.calls
            .get_or_create(&CallLabels { plugin: plugin.into(), tool: tool.into(), outcome })
            .inc();
        self.latency.get_or_create(&tool_labels).observe(metered.elapsed.as_secs_f64());
        self.fuel.get_or_create(&tool_labels).inc_by(metered.usage.fuel);
        let peak = self.memory_peak.get_or_create(&PluginLabels { plugin: plugin.to_string() });
        let memory = metered.usage.memory_bytes as u64;
        peak.inner().fetch_max(memory, Ordering::Relaxed);
    }

    /// The tasks' metrics.
    pub fn tasks(&self) -> &TaskMetrics {
        &self.tasks
    }

    /// Count an HTTP connection as open until the returned guard drops.
    pub fn open_connection(&self) -> OpenConnection {
        self.connections.inc();
        OpenConnection(self.connections.clone())
    }

    /// Record an HTTP request answered with `status` on `route`.
    pub fn record_http(&self, route: &str, status: u16) {
        self.http.get_or_create(&HttpLabels { route: route.to_string(), status }).inc();
    }

    /// Copy the local engine's batching counters into the exported gauges.
    pub fn observe_model(&self, counters: &ModelCounters) {
        let values = [
            counters.queued,
            counters.running,
            counters.passes,
            counters.sequence_steps,
            counters.tokens,
            counters.refused,
            counters.prefix.hits as usize,
            counters.prefix.misses as usize,
            counters.prefix.reused_tokens as usize,
            counters.prefix.bytes as usize,
        ];
        for ((_, gauge), value) in self.model.iter().zip(values) {
            gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        }
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
