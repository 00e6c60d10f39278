//! Host-side bindings of the `autoglm:plugin` world (`wit/plugin.wit`).

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../wit",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use autoglm::plugin::host::LogLevel;
pub use exports::autoglm::plugin::tools::{Access, CallError, Capabilities, Hints, ToolSpec};

/// The WIT package this host implements; components must export its `tools` interface.
pub const PACKAGE: &str = "autoglm:plugin";
/// The package version this host implements.
pub const VERSION: &str = "0.1.0";
