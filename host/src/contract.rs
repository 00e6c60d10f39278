//! The plugin contract: host-side bindings of the `autoglm:plugin` world (`wit/plugin.wit`)
//! and the version this host implements.

// Generated from wit/plugin.wit, whose comments document the contract.
#[allow(missing_docs)]
mod generated {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../wit",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

pub use generated::*;

pub use autoglm::plugin::host::LogLevel;
pub use exports::autoglm::plugin::tools::{Access, CallError, Capabilities, Hints, ToolSpec};

/// The WIT package this host implements; components must export its `tools` interface.
pub const PACKAGE: &str = "autoglm:plugin";
/// The package version this host implements.
pub const VERSION: &str = "0.1.0";
