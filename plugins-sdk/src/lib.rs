#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use schemars::{self, JsonSchema};
pub use serde::{self, Deserialize};
pub use serde_json;

/// Generated bindings of the `autoglm:plugin` world; used by [`export_plugin!`].
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_plugin_world",
        default_bindings_module: "autoglm_sdk::bindings",
    });
}

use bindings::autoglm::plugin::host;
use bindings::exports::autoglm::plugin::tools as wit;

/// Everything a plugin usually needs, in one import.
pub mod prelude {
    pub use crate::{
        Access, Deserialize, JsonSchema, Tool, ToolError, config, context, export_plugin, log,
        progress,
    };
    pub use serde::Serialize;
}

/// Why a tool call produced no result.
///
/// Any [`std::error::Error`] converts into [`ToolError::Failed`], so `?` works on
/// I/O and parse errors inside a tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolError {
    /// The caller sent arguments the tool cannot accept; it should change them.
    InvalidArguments(String),
    /// The arguments were fine but the tool could not do its work.
    Failed(String),
}

impl ToolError {
    /// The caller should change its arguments: `message` says how.
    pub fn invalid(message: impl fmt::Display) -> Self {
        Self::InvalidArguments(message.to_string())
    }

    /// The tool could not do its work: `message` says why.
    pub fn failed(message: impl fmt::Display) -> Self {
        Self::Failed(message.to_string())
    }
}

impl<E: std::error::Error> From<E> for ToolError {
    fn from(error: E) -> Self {
        Self::Failed(error.to_string())
    }
}

/// How much access a tool needs to a granted directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read files only.
    ReadOnly,
    /// Create, write and remove files too.
    ReadWrite,
}

type Handler = Box<dyn Fn(&str) -> Result<String, ToolError>>;

/// One tool: its name, description, schemas, needs and the function that runs it.
pub struct Tool {
    /// Everything but the schemas, which are generated only when listed: every call
    /// runs in a fresh instance, so per-call work must stay small.
    spec: wit::ToolSpec,
    input_schema: fn() -> String,
    output_schema: Option<fn() -> String>,
    handler: Handler,
}

impl Tool {
    /// A tool named `name` (unique within the plugin, `[a-z0-9_-]`) that runs `run`.
    ///
    /// The input schema is derived from `A`; arguments that do not decode into `A`
    /// are answered with [`ToolError::InvalidArguments`] before `run` is called.
    pub fn new<A, R, F>(name: &str, description: &str, run: F) -> Self
    where
        A: DeserializeOwned + JsonSchema,
        R: Serialize,
        F: Fn(A) -> Result<R, ToolError> + 'static,
    {
        let handler = move |args: &str| {
            let args: A = serde_json::from_str(args).map_err(|e| {
                ToolError::invalid(format!("arguments do not match the schema: {e}"))
            })?;
            let result = run(args)?;
            serde_json::to_string(&result)
                .map_err(|e| ToolError::failed(format!("result is not valid JSON: {e}")))
        };
        Tool {
            spec: wit::ToolSpec {
                name: name.to_string(),
                description: description.to_string(),
                input_schema: String::new(),
                output_schema: None,
                capabilities: wit::Capabilities {
                    directories: Vec::new(),
                    outbound_hosts: Vec::new(),
                    env: Vec::new(),
                },
                hints: wit::Hints::empty(),
            },
            input_schema: schema_of::<A>,
            output_schema: None,
            handler: Box::new(handler),
        }
    }

    /// Promise that results match the JSON Schema of `R` (MCP's `outputSchema`).
    pub fn output<R: JsonSchema>(mut self) -> Self {
        self.output_schema = Some(schema_of::<R>);
        self
    }

    /// The tool opens `guest_path` (a directory the operator grants) with `access`.
    pub fn directory(mut self, guest_path: &str, access: Access) -> Self {
        let access = match access {
            Access::ReadOnly => wit::Access::ReadOnly,
            Access::ReadWrite => wit::Access::ReadWrite,
        };
        self.spec
            .capabilities
            .directories
            .push(wit::DirectoryNeed { guest_path: guest_path.to_string(), access });
        self
    }

    /// The tool contacts `host` over HTTP; `*` means the host the caller names.
    pub fn outbound_host(mut self, host: &str) -> Self {
        self.spec.capabilities.outbound_hosts.push(host.to_string());
        self
    }

    /// The tool reads the environment variable `key`.
    pub fn env(mut self, key: &str) -> Self {
        self.spec.capabilities.env.push(key.to_string());
        self
    }

    /// The tool changes nothing.
    pub fn read_only(self) -> Self {
        self.hint(wit::Hints::READ_ONLY)
    }

    /// The tool may delete or overwrite data.
    pub fn destructive(self) -> Self {
        self.hint(wit::Hints::DESTRUCTIVE)
    }

    /// Repeating a call with the same arguments has no further effect.
    pub fn idempotent(self) -> Self {
        self.hint(wit::Hints::IDEMPOTENT)
    }

    /// The tool reaches systems outside the host.
    pub fn open_world(self) -> Self {
        self.hint(wit::Hints::OPEN_WORLD)
    }

    fn hint(mut self, hint: wit::Hints) -> Self {
        self.spec.hints |= hint;
        self
    }
}

/// The JSON Schema of `T`, self-contained (no `$ref`) so models and clients read it at once.
fn schema_of<T: JsonSchema>() -> String {
    let generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    let mut schema = generator.into_root_schema_for::<T>();
    // The Rust type name ("Args") tells a model nothing.
    schema.remove("title");
    schema.to_value().to_string()
}

/// Write `message` to the host's log at `level`, tagged with this plugin and tool.
pub fn log(level: host::LogLevel, message: &str) {
    host::log(level, message, &[]);
}

pub use host::LogLevel;

/// The operator's configuration value `key` for this plugin, if set.
pub fn config(key: &str) -> Option<String> {
    host::get_config(key)
}

pub use host::CallContext;

/// What the host knows about the call being run: its idempotency key (the same when the
/// host runs this call again, e.g. a task's stage after a crash: pass it on to services
/// with side effects so they happen once), the trace id and the milliseconds left.
pub fn context() -> CallContext {
    host::context()
}

/// Tell the caller how far a long call has come: `done` of `total` units (when known),
/// with an optional message. Reports should grow; the host forwards them to callers that
/// asked (MCP progress notifications) and drops them otherwise.
pub fn progress(done: f64, total: Option<f64>, message: Option<&str>) {
    host::report_progress(done, total, message);
}

#[doc(hidden)]
pub mod __private {
    use super::*;

    pub fn list_tools(tools: Vec<Tool>) -> Vec<wit::ToolSpec> {
        (tools.into_iter())
            .map(|t| wit::ToolSpec {
                input_schema: (t.input_schema)(),
                output_schema: t.output_schema.map(|schema| schema()),
                ..t.spec
            })
            .collect()
    }

    pub fn call(tools: Vec<Tool>, name: &str, args: &str) -> Result<String, wit::CallError> {
        let Some(tool) = tools.iter().find(|t| t.spec.name == name) else {
            let known: Vec<&str> = tools.iter().map(|t| t.spec.name.as_str()).collect();
            return Err(wit::CallError::InvalidArguments(format!(
                "this plugin has no tool `{name}`; it offers: {}",
                known.join(", ")
            )));
        };
        (tool.handler)(args).map_err(|e| match e {
            ToolError::InvalidArguments(m) => wit::CallError::InvalidArguments(m),
            ToolError::Failed(m) => wit::CallError::Failed(m),
        })
    }
}

/// Export the tools returned by `$tools` (a `fn() -> Vec<Tool>`) as this component's
/// `autoglm:plugin/tools` interface. Use it once per plugin crate.
#[macro_export]
macro_rules! export_plugin {
    ($tools:path) => {
        struct __AutoglmPlugin;

        impl $crate::bindings::exports::autoglm::plugin::tools::Guest for __AutoglmPlugin {
            fn list_tools() -> ::std::vec::Vec<$crate::bindings::exports::autoglm::plugin::tools::ToolSpec> {
                $crate::__private::list_tools($tools())
            }

            fn call(
                tool: ::std::string::String,
                args_json: ::std::string::String,
            ) -> ::std::result::Result<
                ::std::string::String,
                $crate::bindings::exports::autoglm::plugin::tools::CallError,
            > {
                $crate::__private::call($tools(), &tool, &args_json)
            }
        }

        $crate::bindings::__export_plugin_world!(__AutoglmPlugin with_types_in $crate::bindings);
    };
}
