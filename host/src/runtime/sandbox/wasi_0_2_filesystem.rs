//! The filesystem audit, pinned to the WASI 0.2 filesystem version wasmtime-wasi 48 links:
//! a wasmtime upgrade that moves the version must move this file with it.

use super::CallState;

/// The WASI filesystem version whose `open-at` the host audits (wasmtime-wasi 48's).
const FILESYSTEM: &str = "wasi:filesystem/types@0.2.12";

/// Route `descriptor.open-at` through the host's audit: the call itself is
/// wasmtime-wasi's, and a refusal (a path that leaves a granted directory, a
/// write to a read-only one) is recorded as a denial. Paths outside every grant
/// never reach the host: the guest's libc finds no directory to resolve them in.
pub(crate) fn audit(linker: &mut wasmtime::component::Linker<CallState>) -> wasmtime::Result<()> {
    use wasmtime::component::Resource;
    use wasmtime_wasi::filesystem::WasiFilesystemView;
    use wasmtime_wasi::p2::bindings::filesystem::types::{
        Descriptor, DescriptorFlags, ErrorCode, Host, HostDescriptor, OpenFlags, PathFlags,
    };
    type Params = (Resource<Descriptor>, PathFlags, String, OpenFlags, DescriptorFlags);
    linker.allow_shadowing(true);
    linker.instance(FILESYSTEM)?.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store: wasmtime::StoreContextMut<'_, CallState>, (fd, path_flags, path, open, flags): Params| {
            Box::new(async move {
                let state = store.data_mut();
                let mut view = state.filesystem();
                let opened = HostDescriptor::open_at(&mut view, fd, path_flags, path.clone(), open, flags).await;
                let outcome = match opened {
                    Ok(descriptor) => Ok(descriptor),
                    Err(error) => Err(Host::convert_error_code(&mut view, error)?),
                };
                if let Err(code @ (ErrorCode::NotPermitted | ErrorCode::Access | ErrorCode::ReadOnly)) = &outcome {
                    state.denials.record(format!(
                        "opening `{path}` was refused ({code:?}): it is outside the directories granted to plugin \
                         `{}` or needs write access it was not granted",
                        state.policy.plugin
                    ));
                }
                Ok((outcome,))
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
