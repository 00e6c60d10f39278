//! Chat requests through the agent loop with the shipped demo model and the sample plugins:
//! requests/s and p50/p99 latency at 1, 4 and 16 concurrent requests, batching on
//! (max_batch 8) vs off (max_batch 1); and the seed's 2.5 scenario, a request answered
//! without a tool vs one that calls 3 tools, the difference split into model and plugin time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use autoglm_host::agent::{Agent, AgentRequest, Outcome, Step};
use autoglm_host::config::{Config, ModelSettings};
use autoglm_host::engine::chat::{ChatModel, Turn, TurnReply, TurnRequest};
use autoglm_host::engine::scheduler::{BatchSettings, Priority};
use autoglm_host::engine::{ChatMessage, Role, SamplingParams, ToolCall};
use autoglm_host::error::CallError;
use serde_json::json;
use tokio::sync::mpsc::UnboundedSender;

const QUESTIONS: &[&str] = &[
    "What's the weather in Paris?",
    "Calculate 3*(4+5)",
    "Convert 5 km to miles",
    "Hello!",
    "Count the words in: the quick brown fox",
    "How hot is it in Nairobi?",
    "What is 2^10?",
    "Who are you?",
];

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let notes = tempfile::tempdir()?;
    let config: Config = toml::from_str(&format!(
        "cache_dir = {:?}\n[[plugins.notes.dirs]]\nhost = {:?}\nguest = \"/notes\"\nmode = \"rw\"\n",
        root.join("target/test-component-cache"),
        notes.path()
    ))?;
    let (plugins, errors) = autoglm_host::open(&config, &root.join("target/plugins")).await?;
    anyhow::ensure!(errors.is_empty(), "plugins failed to load: {errors:?}; run `just plugins`");

    println!(
        "chat requests (demo model, CPU, sample plugins), {} requests per level",
        4 * QUESTIONS.len()
    );
    println!(
        "{:<9} {:>11} {:>8} {:>9} {:>9}",
        "batching", "concurrent", "req/s", "p50 ms", "p99 ms"
    );
    let mut rates = Vec::new();
    for max_batch in [1, 8] {
        let settings = ModelSettings {
            path: Some(root.join("models/autoglm-demo")),
            batching: BatchSettings { max_batch, max_wait_ms: 2, queue: 256 },
            ..Default::default()
        };
        let opened = autoglm_host::open_model(&settings, |_, _| {})?.expect("a local model");
        let agent = Arc::new(Agent::new(opened.model, plugins.clone(), 5));
        for concurrency in [1, 4, 16] {
            let (rps, p50, p99) = load(&agent, concurrency, 4 * QUESTIONS.len()).await;
            let label = if max_batch == 1 { "off" } else { "on (8)" };
            println!("{label:<9} {concurrency:>11} {rps:>8.1} {p50:>9.1} {p99:>9.1}");
            rates.push(rps);
        }
    }
    println!(
        "batching gain (on / off): 1 concurrent {:.2}x, 4 concurrent {:.2}x, 16 concurrent {:.2}x",
        rates[3] / rates[0],
        rates[4] / rates[1],
        rates[5] / rates[2]
    );

    println!("\nseed 2.5 scenario: added latency of tool calls (medians of 20 requests)");
    let settings =
        ModelSettings { path: Some(root.join("models/autoglm-demo")), ..Default::default() };
    let demo = Arc::new(Agent::new(
        autoglm_host::open_model(&settings, |_, _| {})?.expect("a local model").model,
        plugins.clone(),
        5,
    ));
    let none = split(&demo, "Hello!", 20).await;
    let one = split(&demo, "What's the weather in Beijing?", 20).await;
    println!("{:<44} {:>9} {:>9} {:>10}", "request", "total ms", "model ms", "plugins ms");
    println!(
        "{:<44} {:>9.2} {:>9.2} {:>10.3}",
        "demo model, no tool (\"Hello!\")", none.0, none.1, none.2
    );
    println!(
        "{:<44} {:>9.2} {:>9.2} {:>10.3}",
        "demo model, 1 tool (weather)", one.0, one.1, one.2
    );
    let scripted = Arc::new(Agent::new(Arc::new(Scripted), plugins.clone(), 5));
    let zero = split(&scripted, "no tools", 200).await;
    let three = split(&scripted, "three tools", 200).await;
    println!("{:<44} {:>9.3} {:>9.3} {:>10.3}", "scripted model, no tool", zero.0, zero.1, zero.2);
    println!(
        "{:<44} {:>9.3} {:>9.3} {:>10.3}",
        "scripted model, 3 tools in one turn", three.0, three.1, three.2
    );
    println!(
        "3 tool calls add {:.3} ms to a request (seed document: 19 ms for 3 plugins, 8-12 ms per call)",
        three.0 - zero.0
    );
    Ok(())
}

fn request(question: &str) -> AgentRequest {
    AgentRequest {
        messages: vec![ChatMessage::new(Role::User, question)],
        params: SamplingParams::greedy(96),
        priority: Priority::Interactive,
        tool_filter: None,
        trace: None,
    }
}

/// Requests/s, p50 and p99 latency (ms) for `total` requests, `concurrency` at a time.
async fn load(agent: &Arc<Agent>, concurrency: usize, total: usize) -> (f64, f64, f64) {
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (agent, next) = (agent.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= total {
                        return latencies;
                    }
                    let began = Instant::now();
                    agent
                        .run(request(QUESTIONS[i % QUESTIONS.len()]), None)
                        .await
                        .expect("the request completes");
                    latencies.push(began.elapsed());
                }
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.expect("worker"));
    }
    latencies.sort();
    let ms =
        |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    (total as f64 / started.elapsed().as_secs_f64(), ms(0.5), ms(0.99))
}

/// Median total, model and plugin time (ms) of `n` runs of `question`.
async fn split(agent: &Agent, question: &str, n: usize) -> (f64, f64, f64) {
    let mut runs: Vec<(f64, f64, f64)> = Vec::with_capacity(n);
    for _ in 0..n {
        let began = Instant::now();
        let outcome: Outcome =
            agent.run(request(question), None).await.expect("the request completes");
        let total = began.elapsed().as_secs_f64() * 1e3;
        let (mut model, mut plugins) = (0.0, 0.0f64);
        for step in &outcome.steps {
            match step {
                Step::Model { latency_ms, .. } => model += latency_ms,
                // The calls of one turn run concurrently: their span is the longest.
                Step::Tool { latency_ms, .. } => plugins = plugins.max(*latency_ms),
            }
        }
        runs.push((total, model, plugins));
    }
    let median = |f: fn(&(f64, f64, f64)) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    (median(|r| r.0), median(|r| r.1), median(|r| r.2))
}

/// A model that answers at once, with three tool calls first when asked to: so the
/// difference between the two requests is the tools' cost alone.
struct Scripted;

#[async_trait]
impl ChatModel for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    async fn turn(
        &self,
        request: TurnRequest,
        _: Option<UnboundedSender<String>>,
    ) -> Result<Turn, CallError> {
        let asked_for_tools = request.messages[0].content == "three tools";
        let first_turn = request.messages.len() == 1;
        let call = |name: &str, arguments: serde_json::Value| ToolCall {
            name: name.into(),
            arguments: arguments.as_object().cloned().unwrap_or_default(),
        };
        let reply = if asked_for_tools && first_turn {
            TurnReply::Calls(vec![
                call("get_weather", json!({"location": "Beijing"})),
                call("evaluate", json!({"expression": "2*(3+4)"})),
                call("convert", json!({"value": 5, "from": "km", "to": "miles"})),
            ])
        } else {
            TurnReply::Text("done".into())
        };
        Ok(Turn { reply, prompt_tokens: 0, completion_tokens: 0, truncated: false })
    }
}
