//! The stable error taxonomy shared by the CLI, HTTP and MCP surfaces.
//!
//! Every failed tool call is a [`CallError`]: a machine-readable [`ErrorKind`] (whose
//! string form never changes once released) and a message written for the person
//! who has to act on it — which plugin, which tool, which limit, which setting.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What went wrong with a tool call, as a stable machine-readable kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No loaded plugin offers a tool by that name.
    UnknownTool,
    /// A bare tool name matches tools of several plugins.
    AmbiguousTool,
    /// The arguments do not match the tool's schema or the tool refused them.
    InvalidArguments,
    /// The tool ran and reported that it could not do its work.
    ToolError,
    /// The guest used up its fuel (CPU budget).
    OutOfFuel,
    /// The call ran past its wall-clock deadline.
    Timeout,
    /// The guest tried to grow its memory past the cap.
    MemoryLimit,
    /// The guest held more host resources (files, streams, requests) than its cap.
    ResourceLimit,
    /// The result was larger than the output cap.
    OutputTooLarge,
    /// The guest trapped (panic, unreachable, stack overflow, ...).
    Trap,
    /// The tool needs, or tried to use, something the operator did not grant.
    PermissionDenied,
    /// The plugin's concurrency limit and queue are full.
    Overloaded,
    /// The component does not implement a compatible `autoglm:plugin` version.
    IncompatiblePlugin,
    /// The component is not signed by a key the operator trusts (`require_signatures`).
    UntrustedPlugin,
    /// The plugin is still being compiled.
    Loading,
    /// The request is malformed (e.g. its body is not JSON).
    BadRequest,
    /// The request carries no valid API key.
    Unauthorized,
    /// The request comes from a browser origin that is not allowed.
    ForbiddenOrigin,
    /// No such route.
    NotFound,
    /// The request body is larger than the server accepts.
    BodyTooLarge,
    /// The request body did not arrive within the server's body read timeout.
    BodyTimeout,
    /// The API key sent too many requests or has too many in flight.
    RateLimited,
    /// No language model is configured or it is not ready.
    EngineUnavailable,
    /// The language model failed while generating.
    EngineError,
    /// The remote (upstream) model answered with an error or not at all.
    UpstreamError,
    /// The task is not in a state that allows the action (resume a task that is running).
    Conflict,
    /// The tasks' journal (SQLite or Postgres) cannot be reached or read.
    JournalUnavailable,
}

impl ErrorKind {
    /// The stable string form (`unknown_tool`, `out_of_fuel`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownTool => "unknown_tool",
            Self::AmbiguousTool => "ambiguous_tool",
            Self::InvalidArguments => "invalid_arguments",
            Self::ToolError => "tool_error",
            Self::OutOfFuel => "out_of_fuel",
            Self::Timeout => "timeout",
            Self::MemoryLimit => "memory_limit",
            Self::OutputTooLarge => "output_too_large",
            Self::ResourceLimit => "resource_limit",
            Self::Trap => "trap",
            Self::PermissionDenied => "permission_denied",
            Self::Overloaded => "overloaded",
            Self::IncompatiblePlugin => "incompatible_plugin",
            Self::UntrustedPlugin => "untrusted_plugin",
            Self::Loading => "loading",
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::ForbiddenOrigin => "forbidden_origin",
            Self::NotFound => "not_found",
            Self::BodyTooLarge => "body_too_large",
            Self::BodyTimeout => "body_timeout",
            Self::RateLimited => "rate_limited",
            Self::EngineUnavailable => "engine_unavailable",
            Self::EngineError => "engine_error",
            Self::UpstreamError => "upstream_error",
            Self::Conflict => "conflict",
            Self::JournalUnavailable => "journal_unavailable",
        }
    }

    /// The HTTP status this kind is answered with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidArguments | Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::PermissionDenied | Self::ForbiddenOrigin => 403,
            Self::UnknownTool | Self::NotFound => 404,
            Self::AmbiguousTool | Self::Conflict => 409,
            Self::BodyTimeout => 408,
            Self::BodyTooLarge => 413,
            Self::ToolError => 422,
            Self::Overloaded | Self::RateLimited => 429,
            Self::Loading | Self::EngineUnavailable | Self::JournalUnavailable => 503,
            Self::Timeout => 504,
            Self::OutOfFuel
            | Self::MemoryLimit
            | Self::OutputTooLarge
            | Self::ResourceLimit
            | Self::Trap
            | Self::IncompatiblePlugin
            | Self::UntrustedPlugin
            | Self::EngineError => 500,
            Self::UpstreamError => 502,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed tool call: its kind, a message saying what to change, and where it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallError {
    /// The stable kind.
    pub kind: ErrorKind,
    /// What happened and what to change.
    pub message: String,
    /// The plugin involved, when known.
    pub plugin: Option<String>,
    /// The tool involved, when known.
    pub tool: Option<String>,
}

impl CallError {
    /// An error of `kind` with `message`, not yet tied to a plugin or tool.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), plugin: None, tool: None }
    }

    /// Tie the error to `plugin` and `tool`.
    pub fn at(mut self, plugin: &str, tool: &str) -> Self {
        self.plugin = Some(plugin.to_string());
        self.tool = Some(tool.to_string());
        self
    }

    /// The error as a model reads it in the observation turn after its call:
    /// `{"error": {"kind": …, "message": …}}`. The agent, the evaluation and the demo
    /// model's training data all take it from here, so the model is served the shape it
    /// learned.
    pub fn observation(&self) -> serde_json::Value {
        serde_json::json!({"error": {"kind": self.kind.as_str(), "message": self.message}})
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.plugin, &self.tool) {
            (Some(p), Some(t)) => write!(f, "{} ({p}.{t}): {}", self.kind, self.message),
            (Some(p), None) => write!(f, "{} ({p}): {}", self.kind, self.message),
            _ => write!(f, "{}: {}", self.kind, self.message),
        }
    }
}

impl std::error::Error for CallError {}
