//! What a guest learns of a host-side I/O error, pinned to the WASI 0.2 io version
//! wasmtime-wasi 48 links: a wasmtime upgrade that moves the version must move this file.
//!
//! wasmtime-wasi answers `error.to-debug-string` with the error's `Debug` form, which
//! carries the host's stack backtrace whenever `RUST_BACKTRACE` is set, and a guest can
//! pass it on to clients in its own error message. The guest gets the error chain instead:
//! what failed and why, nothing of the host's internals.

use wasmtime::component::Resource;
use wasmtime_wasi::p2::IoError as Error;

use super::CallState;

/// The WASI io version whose `error.to-debug-string` the host answers itself.
const IO_ERROR: &str = "wasi:io/error@0.2.12";

/// Answer `error.to-debug-string` with the error chain (`outer: inner: cause`).
pub(crate) fn describe_errors(
    linker: &mut wasmtime::component::Linker<CallState>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.instance(IO_ERROR)?.func_wrap(
        "[method]error.to-debug-string",
        |store: wasmtime::StoreContextMut<'_, CallState>, (error,): (Resource<Error>,)| {
            let error = store.data().table.get(&error)?;
            Ok((format!("{error:#}"),))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
