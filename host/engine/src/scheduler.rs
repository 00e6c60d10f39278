//! Dynamic batching for the local engine (the seed's 2.4): requests queue by priority and
//! are stepped together on one engine thread. A partial batch waits at most `max_wait` for
//! company; sequences join and leave between decode steps (continuous batching); a full
//! queue turns requests away at once so callers can answer `overloaded`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::prefix::PrefixCache;
use tokio::sync::mpsc::UnboundedSender;

use crate::turn::{Priority, TurnRequest};
use crate::{Engine, EngineError, FinishReason, Sequence, TextStream};

/// How the scheduler batches.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchSettings {
    /// Most sequences stepped together.
    pub max_batch: usize,
    /// Longest an idle engine waits for more requests before running a partial batch.
    pub max_wait_ms: u64,
    /// Requests that may wait for a place in the batch; more are refused.
    pub queue: usize,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self { max_batch: 8, max_wait_ms: 2, queue: 64 }
    }
}

/// One generation request.
pub struct Job {
    /// The conversation, tools, settings and priority.
    pub request: TurnRequest,
    /// Where text and the end are reported; dropping the receiver cancels the job.
    pub events: UnboundedSender<JobEvent>,
}

/// What a job reports.
#[derive(Debug)]
pub enum JobEvent {
    /// More generated text.
    Text(String),
    /// The job ended.
    Done(Result<Finished, EngineError>),
}

/// A finished job.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The whole generated text.
    pub text: String,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Why it stopped.
    pub finish: FinishReason,
    /// Time spent waiting for a place in a batch.
    pub queued: Duration,
}

/// Counters the server exports.
#[derive(Debug, Default)]
pub struct SchedulerStats {
    /// Requests waiting now.
    pub queued: AtomicUsize,
    /// Sequences in the running batch now.
    pub running: AtomicUsize,
    /// Forward passes run.
    pub passes: AtomicUsize,
    /// Sequence-steps run (sum of batch sizes over passes).
    pub sequence_steps: AtomicUsize,
    /// Tokens generated.
    pub tokens: AtomicUsize,
    /// Requests refused because the queue was full.
    pub refused: AtomicUsize,
    /// The engine's prefix cache, for its counters and for emptying it.
    pub prefix: Option<Arc<PrefixCache>>,
}

struct Waiting {
    job: Job,
    since: Instant,
}

#[derive(Default)]
struct Queues {
    interactive: VecDeque<Waiting>,
    batch: VecDeque<Waiting>,
    closed: bool,
}

impl Queues {
    fn len(&self) -> usize {
        self.interactive.len() + self.batch.len()
    }

    fn pop(&mut self) -> Option<Waiting> {
        self.interactive.pop_front().or_else(|| self.batch.pop_front())
    }
}

struct Shared {
    queues: Mutex<Queues>,
    wake: Condvar,
    settings: BatchSettings,
    stats: Arc<SchedulerStats>,
}

/// The batching front of a local engine; cheap to share, stops its thread when dropped.
pub struct Scheduler {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Scheduler {
    /// Start the engine thread.
    pub fn start(engine: Arc<Engine>, settings: BatchSettings) -> Self {
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues::default()),
            wake: Condvar::new(),
            settings,
            stats: Arc::new(SchedulerStats {
                prefix: Some(engine.prefix_cache().clone()),
                ..SchedulerStats::default()
            }),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("autoglm-engine".into())
            .spawn(move || run(&engine, &worker))
            .expect("spawning the engine thread");
        Self { shared, thread: Some(thread) }
    }

    /// Queue a job, or refuse it at once if the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), EngineError> {
        let mut queues = lock(&self.shared.queues);
        let waiting = queues.len();
        if waiting >= self.shared.settings.queue {
            self.shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            return Err(EngineError::Overloaded { waiting });
        }
        let entry = Waiting { job, since: Instant::now() };
        match entry.job.request.priority {
            Priority::Interactive => queues.interactive.push_back(entry),
            Priority::Batch => queues.batch.push_back(entry),
        }
        self.shared.stats.queued.store(queues.len(), Ordering::Relaxed);
        drop(queues);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Live counters.
    pub fn stats(&self) -> &Arc<SchedulerStats> {
        &self.shared.stats
    }

    /// The batching settings.
    pub fn settings(&self) -> &BatchSettings {
        &self.shared.settings
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        lock(&self.shared.queues).closed = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock(queues: &Mutex<Queues>) -> std::sync::MutexGuard<'_, Queues> {
    // A panic elsewhere cannot leave the queues half-updated: take them as they are.
    queues.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A sequence in the running batch.
struct Running {
    seq: Sequence,
    stream: TextStream,
    events: UnboundedSender<JobEvent>,
    queued: Duration,
}

fn run(engine: &Engine, shared: &Shared) {
    let settings = &shared.settings;
    let mut batch: Vec<Running> = Vec::new();
    loop {
        let admitted = {
            let mut queues = lock(&shared.queues);
            if batch.is_empty() {
                while queues.len() == 0 && !queues.closed {
                    queues = shared.wake.wait(queues).unwrap_or_else(|p| p.into_inner());
                }
                // An idle engine gives a partial batch a moment to fill.
                let deadline = Instant::now() + Duration::from_millis(settings.max_wait_ms);
                while queues.len() < settings.max_batch && !queues.closed {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    queues =
                        shared.wake.wait_timeout(queues, left).unwrap_or_else(|p| p.into_inner()).0;
                }
            }
            if queues.closed {
                return;
            }
            let mut admitted = Vec::new();
            while batch.len() + admitted.len() < settings.max_batch {
                let Some(waiting) = queues.pop() else { break };
                admitted.push(waiting);
            }
            shared.stats.queued.store(queues.len(), Ordering::Relaxed);
            admitted
        };
        let mut joining: Vec<Running> = admitted
            .into_iter()
            .filter_map(|Waiting { job, since }| {
                match engine.start_chat(
                    &job.request.messages,
                    &job.request.tools,
                    &job.request.params,
                ) {
                    Ok(seq) => Some(Running {
                        seq,
                        stream: TextStream::default(),
                        events: job.events,
                        queued: since.elapsed(),
                    }),
                    Err(e) => {
                        let _ = job.events.send(JobEvent::Done(Err(e)));
                        None
                    }
                }
            })
            .collect();
        // Prompts are prefilled in a pass of their own: mixed with one-token decode rows
        // they would pad every row to the longest prompt.
        if !joining.is_empty() {
            advance(engine, shared, &mut joining);
        }
        if !batch.is_empty() {
            advance(engine, shared, &mut batch);
        }
        batch.append(&mut joining);
        batch.retain(|r| r.seq.finish_reason().is_none() && !r.events.is_closed());
        shared.stats.running.store(batch.len(), Ordering::Relaxed);
    }
}

/// One forward pass for `group`; report new text and finished sequences.
fn advance(engine: &Engine, shared: &Shared, group: &mut [Running]) {
    let mut seqs: Vec<&mut Sequence> = group.iter_mut().map(|r| &mut r.seq).collect();
    let result = engine.step(&mut seqs);
    shared.stats.passes.fetch_add(1, Ordering::Relaxed);
    shared.stats.sequence_steps.fetch_add(group.len(), Ordering::Relaxed);
    let tokens = match result {
        Ok(tokens) => tokens,
        Err(e) => {
            // A failed pass fails its sequences, not the engine.
            let message = e.to_string();
            for running in group.iter_mut() {
                let _ =
                    running.events.send(JobEvent::Done(Err(EngineError::Batch(message.clone()))));
                running.seq.abort();
            }
            return;
        }
    };
    for (running, token) in group.iter_mut().zip(tokens) {
        let Some(token) = token else { continue };
        let finish = running.seq.finish_reason();
        if !matches!(finish, Some(FinishReason::Stop(_))) {
            shared.stats.tokens.fetch_add(1, Ordering::Relaxed);
            match running.stream.push(engine.tokenizer(), token) {
                Ok(Some(text)) => {
                    let _ = running.events.send(JobEvent::Text(text));
                }
                Ok(None) => {}
                Err(e) => {
                    let _ = running.events.send(JobEvent::Done(Err(e)));
                    running.seq.abort();
                    continue;
                }
            }
        }
        if let Some(finish) = finish {
            let done = engine.tokenizer().decode(running.seq.generated()).map(|text| Finished {
                text,
                prompt_tokens: running.seq.prompt_len(),
                completion_tokens: running.seq.generated().len(),
                finish,
                queued: running.queued,
            });
            let _ = running.events.send(JobEvent::Done(done));
        }
    }
}
