//! What a caller adds to one call: who hears the guest's log records and progress reports
//! while it runs (an MCP request's stream), and the context the guest can ask for
//! (`host.context`: idempotency key, trace id, time left).

use std::time::Instant;

use tokio::sync::mpsc;

use crate::contract::LogLevel;

/// Events kept for a caller that reads them more slowly than the guest writes them; beyond
/// this they are dropped, so a guest can never block on, or grow, a slow client.
pub const EVENT_QUEUE: usize = 256;

/// What the caller of one call adds to it. The default: no listener, a fresh random
/// idempotency key, no trace id.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// The key `host.context` gives the guest: the same when the same call is run again
    /// (a task's stage after a crash); None for a fresh random one.
    pub idempotency_key: Option<String>,
    /// The trace id of the request the call serves.
    pub trace_id: Option<String>,
    /// Where the guest's log records and progress reports go, besides the host's log.
    pub events: Option<mpsc::Sender<CallEvent>>,
}

impl CallOptions {
    /// Options that send the call's events to a new channel, and its receiving end.
    pub fn listened() -> (CallOptions, mpsc::Receiver<CallEvent>) {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        (CallOptions { events: Some(tx), ..CallOptions::default() }, rx)
    }
}

/// Something the guest reported while it ran.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEvent {
    /// A `host.log` record.
    Log {
        /// Its level.
        level: LogLevel,
        /// Its message.
        message: String,
        /// Its extra key/value pairs.
        fields: Vec<(String, String)>,
    },
    /// A `host.report-progress` report.
    Progress {
        /// Units done.
        progress: f64,
        /// Units in all, when known.
        total: Option<f64>,
        /// A message for a person.
        message: Option<String>,
    },
}

/// The per-call part of [`CallOptions`] a Store holds.
pub(super) struct Scope {
    pub(super) idempotency_key: String,
    pub(super) trace_id: Option<String>,
    pub(super) deadline: Instant,
    events: Option<mpsc::Sender<CallEvent>>,
}

impl Scope {
    /// The scope of a call under `options` that must end by `deadline`.
    pub(super) fn new(options: &CallOptions, deadline: Instant) -> Self {
        let key = (options.idempotency_key.clone())
            .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
        Self {
            idempotency_key: key,
            trace_id: options.trace_id.clone(),
            deadline,
            events: options.events.clone(),
        }
    }

    /// Hand `event` to the listener, if there is one and it has room.
    pub(super) fn emit(&self, event: CallEvent) {
        if let Some(events) = &self.events {
            let _ = events.try_send(event);
        }
    }
}
