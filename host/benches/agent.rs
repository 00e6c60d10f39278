//! Chat requests through the agent loop with the shipped demo model and the sample plugins:
//! requests/s and p50/p99 latency at 1, 4 and 16 concurrent requests, batching on
//! (max_batch 8) vs off (max_batch 1); and the seed's 2.5 scenario, a request answered
//! without a tool vs one that calls 3 tools, the difference split into model and plugin time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use autoglm_bench::{Chart, Section, Series, Table, percentiles, ratio, significant};
use autoglm_engine::{ChatMessage, Priority, Role, SamplingParams};
use autoglm_host::agent::{Agent, AgentRequest, TraceStep, Transcript};
use autoglm_host::app::Host;
use autoglm_host::invoke::Allowlist;
use autoglm_test_support::host::{
    AGENT_PLUGINS, QUESTIONS, demo_agent, host, notes_config, plugins_dir,
};
use autoglm_test_support::scripted::{ScriptedModel, call};
use serde_json::json;

const LEVELS: [usize; 3] = [1, 4, 16];

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let plugins = plugins_dir(AGENT_PLUGINS);
    let notes = tempfile::tempdir()?;
    let host = host(&notes_config(notes.path()), plugins.path()).await;

    let quick = autoglm_bench::quick();
    let per_level = if quick { 2 } else { 4 } * QUESTIONS.len();
    let mut table = Table::new(&["batching", "concurrent requests", "requests/s", "p50", "p99"]);
    let mut rates = Vec::new();
    for max_batch in [1, 8] {
        let agent = demo_agent(&host, max_batch, 5);
        for concurrency in LEVELS {
            let (rps, p50, p99) = load(&agent, concurrency, per_level).await;
            let label = if max_batch == 1 { "off (max_batch 1)" } else { "on (max_batch 8)" };
            table.row(vec![
                label.into(),
                concurrency.to_string(),
                significant(rps),
                format!("{} ms", significant(p50)),
                format!("{} ms", significant(p99)),
            ]);
            rates.push(rps);
        }
    }
    let gains: Vec<String> = (0..LEVELS.len())
        .map(|i| format!("{} concurrent {}", LEVELS[i], ratio(rates[LEVELS.len() + i], rates[i])))
        .collect();
    println!("chat requests through the agent ({per_level} per level)\n{}", table.text());
    let mut section = Section::new(
        "batching",
        "Chat requests: dynamic batching on vs off",
        &format!(
            "Chat requests through the agent loop (demo model on the CPU, sample plugins, greedy, \
             up to 96 new tokens): {per_level} requests from {} questions, some answered \
             directly, some with a tool call, at 1, 4 and 16 concurrent requests. Baseline: the \
             same scheduler with batching off (max_batch 1).",
            QUESTIONS.len()
        ),
    );
    section.tables.push(table);
    section.notes.push(format!("Throughput gain of batching (on ÷ off): {}.", gains.join(", ")));
    section.charts.push(Chart {
        file: "batching.png".into(),
        title: "Chat requests/s, batching off vs on".into(),
        unit: "requests/s".into(),
        log_scale: false,
        groups: LEVELS.iter().map(|c| format!("{c} concurrent")).collect(),
        series: vec![
            Series { name: "batching off".into(), values: rates[..LEVELS.len()].to_vec() },
            Series { name: "batching on (8)".into(), values: rates[LEVELS.len()..].to_vec() },
        ],
    });
    section.record()?;
    seed_scenario(&host, quick).await
}

/// The seed's 2.5 scenario: the latency a request gains by calling plugins.
async fn seed_scenario(host: &Host, quick: bool) -> anyhow::Result<()> {
    let (model_runs, scripted_runs) = if quick { (10, 100) } else { (20, 200) };
    let demo = demo_agent(host, 8, 5);
    let none = split(&demo, "Hello!", model_runs).await;
    let one = split(&demo, "What's the weather in Beijing?", model_runs).await;
    // Models that answer at once, the second after three tool calls: the difference between
    // the two requests is the tools' cost alone.
    let scripted = |calls| {
        let model = Arc::new(ScriptedModel::new(calls, "done"));
        Arc::new(Agent::new(model, host.invoker.clone(), 5))
    };
    let zero = split(&scripted(vec![]), "no tools", scripted_runs).await;
    let three_calls = vec![
        call("get_weather", json!({"location": "Beijing"})),
        call("evaluate", json!({"expression": "2*(3+4)"})),
        call("convert", json!({"value": 5, "from": "km", "to": "miles"})),
    ];
    let three = split(&scripted(three_calls), "three tools", scripted_runs).await;
    let mut table = Table::new(&["request", "total", "model", "plugins"]);
    let ms = |v: f64| format!("{} ms", significant(v));
    let rows = [
        ("scripted model, no tool", zero),
        ("scripted model, 3 tools in one turn", three),
        ("demo model, no tool (\"Hello!\")", none),
        ("demo model, 1 tool (weather) and an answer", one),
    ];
    for (label, (total, model, plugins)) in rows {
        table.row(vec![label.into(), ms(total), ms(model), ms(plugins)]);
    }
    println!("seed 2.5 scenario (medians)\n{}", table.text());
    let mut section = Section::new(
        "seed_scenario",
        "The seed's scenario: a request with 0 vs 3 plugin calls",
        &format!(
            "The seed document (2.5) measured 18 ms for a request without plugins and 37 ms with \
             three (8-12 ms per plugin call). Here the same request goes through the agent loop \
             twice, without and with tool calls. A scripted model that answers at once isolates \
             the plugins' cost ({scripted_runs} runs each: weather, calculator and units called \
             in one turn, each in a fresh sandbox); the demo model shows a whole request \
             ({model_runs} runs each). Medians."
        ),
    );
    section.tables.push(table);
    section.notes.push(format!(
        "Three plugin calls add {} to a request ({} with them against {} without), where the \
         seed measured 19 ms (37 against 18): {} less.",
        ms(three.0 - zero.0),
        ms(three.0),
        ms(zero.0),
        ratio(19.0, three.0 - zero.0)
    ));
    section.notes.push(format!(
        "With the demo model the request's time is the model's: the weather call took {} of \
         a {} request.",
        ms(one.2),
        ms(one.0)
    ));
    section.charts.push(Chart {
        file: "seed_scenario.png".into(),
        title: "Request latency without and with 3 plugin calls (ms, log scale)".into(),
        unit: "ms".into(),
        log_scale: true,
        groups: vec!["this host (scripted model)".into(), "seed document".into()],
        series: vec![
            Series { name: "no plugin".into(), values: vec![zero.0, 18.0] },
            Series { name: "3 plugin calls".into(), values: vec![three.0, 37.0] },
        ],
    });
    section.record()
}

fn request(question: &str) -> AgentRequest {
    AgentRequest {
        messages: vec![ChatMessage::new(Role::User, question)],
        params: SamplingParams::greedy(96),
        priority: Priority::Interactive,
        allowlist: Allowlist::everything("bench"),
        trace: None,
        durable: None,
        show_prompt: false,
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
    let rps = total as f64 / started.elapsed().as_secs_f64();
    let (p50, p99) = percentiles(latencies);
    (rps, p50.as_secs_f64() * 1e3, p99.as_secs_f64() * 1e3)
}

/// Median total, model and plugin time (ms) of `n` runs of `question`.
async fn split(agent: &Agent, question: &str, n: usize) -> (f64, f64, f64) {
    let mut runs: Vec<(f64, f64, f64)> = Vec::with_capacity(n);
    for _ in 0..n {
        let began = Instant::now();
        let outcome: Transcript =
            agent.run(request(question), None).await.expect("the request completes");
        let total = began.elapsed().as_secs_f64() * 1e3;
        let (mut model, mut plugins) = (0.0, 0.0f64);
        for step in &outcome.steps {
            match step {
                TraceStep::Model { latency_ms, .. } => model += latency_ms,
                // The calls of one turn run concurrently: their span is the longest.
                TraceStep::Tool { latency_ms, .. } => plugins = plugins.max(*latency_ms),
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
