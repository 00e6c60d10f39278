//! What an MCP client hears while one of its tool calls runs: the guest's log records and
//! the host's line for the call as `notifications/message` (at or above the level the
//! client chose), and `notifications/progress` when the request carries a progress token.
//!
//! The session-based revisions choose the level per session (`logging/setLevel`); the
//! stateless revision has no session, so a request chooses it in its own `_meta`
//! (`io.modelcontextprotocol/logLevel`) and a request without one hears no log records.

use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::contract::LogLevel;
use crate::metered::Metered;
use crate::runtime::sandbox::CallEvent;

/// The `_meta` key a stateless request names its log level with.
pub const LOG_LEVEL_META: &str = "io.modelcontextprotocol/logLevel";

/// MCP's log levels (RFC 5424's severities), least severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// `debug`
    Debug,
    /// `info`
    Info,
    /// `notice`
    Notice,
    /// `warning`
    Warning,
    /// `error`
    Error,
    /// `critical`
    Critical,
    /// `alert`
    Alert,
    /// `emergency`
    Emergency,
}

const NAMES: [(&str, Level); 8] = [
    ("debug", Level::Debug),
    ("info", Level::Info),
    ("notice", Level::Notice),
    ("warning", Level::Warning),
    ("error", Level::Error),
    ("critical", Level::Critical),
    ("alert", Level::Alert),
    ("emergency", Level::Emergency),
];

impl Level {
    /// The level MCP names `name`.
    pub fn parse(name: &str) -> Result<Level, String> {
        NAMES.iter().find(|(n, _)| *n == name).map(|(_, level)| *level).ok_or_else(|| {
            let names: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
            format!("unknown log level `{name}`; use one of {}", names.join(", "))
        })
    }

    fn name(self) -> &'static str {
        NAMES.iter().find(|(_, level)| *level == self).map_or("info", |(n, _)| n)
    }

    fn of_guest(level: LogLevel) -> Level {
        match level {
            LogLevel::Trace | LogLevel::Debug => Level::Debug,
            LogLevel::Info => Level::Info,
            LogLevel::Warn => Level::Warning,
            LogLevel::Error => Level::Error,
        }
    }
}

/// Sends one call's notifications to its client.
pub struct Notifier {
    out: mpsc::Sender<String>,
    level: Option<Level>,
    token: Option<Value>,
    /// The last progress sent: MCP requires each report to be larger than the one before.
    last: f64,
    total: Option<f64>,
}

impl Notifier {
    /// Notifications on `out` for a call whose client hears logs at `level` and up (none
    /// when None) and progress under `token` (none when None).
    pub fn new(out: mpsc::Sender<String>, level: Option<Level>, token: Option<Value>) -> Self {
        Self { out, level, token, last: 0.0, total: None }
    }

    /// Tell the client the call has started (progress 0).
    pub fn started(&mut self, tool: &str) {
        if let Some(token) = &self.token {
            let report = progress(token, 0.0, None, Some(format!("calling {tool}")));
            self.send(report);
        }
    }

    /// Forward what the guest reported.
    pub fn event(&mut self, tool: &str, event: CallEvent) {
        match event {
            CallEvent::Log { level, message, fields } => {
                let fields: Map<String, Value> =
                    fields.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
                self.log(
                    Level::of_guest(level),
                    tool,
                    json!({"message": message, "fields": fields}),
                );
            }
            CallEvent::Progress { progress: done, total, message } => {
                // Reports that do not move forward are dropped rather than break the rule.
                let Some(token) = &self.token else { return };
                if done <= self.last {
                    return;
                }
                let report = progress(token, done, total, message);
                (self.last, self.total) = (done, total.or(self.total));
                self.send(report);
            }
        }
    }

    /// The host's line for the finished call, and the last progress report (the whole).
    pub fn finished(&mut self, tool: &str, metered: &Metered<Value>) {
        let (level, outcome) = match &metered.outcome {
            Ok(_) => (Level::Info, "ok".to_string()),
            Err(error) => (Level::Warning, format!("{}: {}", error.kind, error.message)),
        };
        let micros = u64::try_from(metered.elapsed.as_micros()).unwrap_or(u64::MAX);
        let line = json!({"message": "tool call", "tool": tool, "outcome": outcome,
            "fuel": metered.usage.fuel, "memory_bytes": metered.usage.memory_bytes, "micros": micros});
        self.log(level, "autoglm", line);
        if let Some(token) = &self.token {
            let whole = self.total.unwrap_or(self.last).max(self.last);
            let (done, total) = match whole > self.last {
                true => (whole, whole),
                false if self.last == 0.0 => (1.0, 1.0),
                false => return,
            };
            let report = progress(token, done, Some(total), Some("done".to_string()));
            self.send(report);
        }
    }

    fn log(&self, level: Level, logger: &str, data: Value) {
        if self.level.is_some_and(|wanted| level >= wanted) {
            let params = json!({"level": level.name(), "logger": logger, "data": data});
            self.send(
                json!({"jsonrpc": "2.0", "method": "notifications/message", "params": params}),
            );
        }
    }

    fn send(&self, notification: Value) {
        // Never awaited: a client that stops reading must not stall the call (its deadline
        // runs inside it), so what does not fit is dropped. The answer comes after.
        let _ = self.out.try_send(notification.to_string());
    }
}

fn progress(token: &Value, done: f64, total: Option<f64>, message: Option<String>) -> Value {
    let mut params = json!({"progressToken": token, "progress": done});
    if let Some(total) = total {
        params["total"] = json!(total);
    }
    if let Some(message) = message {
        params["message"] = json!(message);
    }
    json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": params})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn progress_only_moves_forward_and_ends_at_the_whole() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut notifier = Notifier::new(tx, None, Some(json!("t")));
        notifier.started("p.t");
        for (done, total) in [(2.0, Some(4.0)), (1.0, None), (3.0, None)] {
            let event = CallEvent::Progress { progress: done, total, message: None };
            notifier.event("p.t", event);
        }
        notifier.finished(
            "p.t",
            &Metered {
                outcome: Ok(json!(1)),
                usage: Default::default(),
                elapsed: Default::default(),
            },
        );
        drop(notifier);
        let mut seen = Vec::new();
        while let Some(line) = rx.recv().await {
            let value: Value = serde_json::from_str(&line).unwrap();
            seen.push(value["params"]["progress"].as_f64().unwrap());
        }
        assert_eq!(seen, [0.0, 2.0, 3.0, 4.0], "the backward report is dropped");
    }

    #[test]
    fn levels_parse_by_name_and_order_by_severity() {
        assert_eq!(Level::parse("warning"), Ok(Level::Warning));
        assert!(Level::parse("warn").unwrap_err().contains("emergency"));
        assert!(Level::Debug < Level::Info && Level::Error < Level::Emergency);
    }
}
