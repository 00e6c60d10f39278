//! The plugin contract: host-side bindings of the `autoglm:plugin` world (`wit/plugin.wit`,
//! revision 0.2.0) and of the revision before it (`wit/0.1.0/plugin.wit`), which the host
//! still serves.
//!
//! The two revisions differ only in the `host` interface a guest imports; their `tools`
//! interfaces have the same types, and component types are structural, so one set of
//! types (0.2.0's) calls the `tools` export of either.

// Generated from wit/plugin.wit, whose comments document the contract.
#[allow(missing_docs)]
mod generated {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../wit/plugin.wit",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

/// The previous revision, for the `host@0.1.0` import of components built against it.
#[allow(missing_docs)]
pub mod v0_1 {
    wasmtime::component::bindgen!({
        world: "plugin",
        path: "../wit/0.1.0/plugin.wit",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

pub use generated::*;

pub use autoglm::plugin::host::{CallContext, LogLevel};
pub use exports::autoglm::plugin::tools::{
    Access, CallError, Capabilities, DirectoryNeed, Hints, ToolSpec,
};

/// The WIT package this host implements; components must export its `tools` interface.
pub const PACKAGE: &str = "autoglm:plugin";
/// The package version this host implements.
pub const VERSION: &str = "0.2.0";
/// Every revision this host serves, newest first.
pub const VERSIONS: [&str; 2] = [VERSION, "0.1.0"];
