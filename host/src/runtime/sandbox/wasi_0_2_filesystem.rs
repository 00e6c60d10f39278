//! The host's hooks on the WASI 0.2 filesystem, pinned to the version wasmtime-wasi 48
//! links: a wasmtime upgrade that moves the version must move this file with it.
//!
//! Each hook runs wasmtime-wasi's own implementation and adds what the host enforces:
//! the audit of `open-at` (a refusal becomes a recorded denial), and the disk quota of
//! writable directories, charged at write time ([`quota`](super::quota)). Operations that
//! change what a quota'd directory holds run one at a time per directory and measure the
//! change before and after, so concurrent calls can neither overshoot the quota together
//! nor be refunded twice for one freed file.

use std::sync::Arc;

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, LinkerInstance, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemView};
use wasmtime_wasi::p2::DynOutputStream;
use wasmtime_wasi::p2::FsResult;
use wasmtime_wasi::p2::bindings::filesystem::preopens;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    DescriptorFlags, DescriptorStat, DescriptorType, ErrorCode, HostDescriptor, OpenFlags,
    PathFlags,
};

use super::CallState;
use super::quota::Quota;
use crate::policy::quota::{BLOCK_BYTES, FileId, footprint};

/// The WASI filesystem version whose operations the host hooks (wasmtime-wasi 48's).
const FILESYSTEM: &str = "wasi:filesystem/types@0.2.12";
/// The preopens interface of the same version.
const PREOPENS: &str = "wasi:filesystem/preopens@0.2.12";

type Store<'a> = StoreContextMut<'a, CallState>;
type Fd = Resource<Descriptor>;
type Outcome<T> = wasmtime::Result<(Result<T, ErrorCode>,)>;

/// Install every hook, shadowing wasmtime-wasi's definitions of the same functions.
pub(crate) fn hook(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.instance(PREOPENS)?.func_wrap("get-directories", |mut store: Store<'_>, (): ()| {
        let state = store.data_mut();
        let dirs = preopens::Host::get_directories(&mut state.filesystem())?;
        for (fd, guest) in &dirs {
            state.quotas.preopened(fd.rep(), guest);
        }
        Ok((dirs,))
    })?;
    let mut types = linker.instance(FILESYSTEM)?;
    // Closing a descriptor lets its directory refund a deleted file it held open.
    types.resource(
        "descriptor",
        wasmtime::component::ResourceType::host::<Descriptor>(),
        |mut store: Store<'_>, rep: u32| {
            let state = store.data_mut();
            state.quotas.closed(rep);
            HostDescriptor::drop(&mut state.filesystem(), Resource::new_own(rep))
        },
    )?;
    open_at(&mut types)?;
    writes(&mut types)?;
    entries(&mut types)?;
    rename_at(&mut types)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// `open-at`: audited, its descriptor mapped to its parent's quota, and a file it
/// creates or truncates charged or refunded.
fn open_at(types: &mut LinkerInstance<'_, CallState>) -> wasmtime::Result<()> {
    type Params = (Fd, PathFlags, String, OpenFlags, DescriptorFlags);
    types.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store: Store<'_>, (fd, path_flags, path, open, flags): Params| {
            Box::new(async move {
                let state = store.data_mut();
                let parent = fd.rep();
                let quota = state.quotas.of(parent);
                // wasmtime opens a file it creates or truncates writable whatever the
                // descriptor flags ask, so those are charged whatever the flags say.
                let changes = open.intersects(OpenFlags::CREATE | OpenFlags::TRUNCATE);
                let changing = quota.as_ref().filter(|_| changes);
                let _turn = match changing {
                    Some(quota) => Some(quota.turn().await),
                    None => None,
                };
                let follow = path_flags.contains(PathFlags::SYMLINK_FOLLOW);
                let before = match changing {
                    Some(_) => stat_at(state, &fd, follow, &path).await.map(|s| content(&s)),
                    None => None,
                };
                // A new file holds an inode before it holds a byte.
                let charged = match (changing, before) {
                    (Some(quota), None) if open.contains(OpenFlags::CREATE) => {
                        match quota.charge(BLOCK_BYTES) {
                            Ok(charged) => charged,
                            Err(code) => return Ok((Err(code),)),
                        }
                    }
                    _ => 0,
                };
                let opened = HostDescriptor::open_at(
                    &mut state.filesystem(),
                    fd,
                    path_flags,
                    path.clone(),
                    open,
                    flags,
                )
                .await;
                let outcome = code(opened)?;
                match &outcome {
                    Ok(child) => {
                        state.quotas.opened(parent, child.rep());
                        let file = file_of(state, child);
                        if let Some(quota) = changing {
                            let after = file.as_ref().map_or(BLOCK_BYTES, |f| footprint(size(f)));
                            quota.settle(charged, before.unwrap_or(0), after);
                        }
                        // An open file keeps its blocks when deleted: its directory
                        // refunds them when the file is closed.
                        if let (Some(quota), Some(_)) = (&quota, file)
                            && let Some(id) = identity(state, child).await
                        {
                            state.quotas.holds(child.rep(), quota, id);
                        }
                    }
                    Err(code @ (ErrorCode::NotPermitted | ErrorCode::Access | ErrorCode::ReadOnly)) => {
                        state.denials.record(format!(
                            "opening `{path}` was refused ({code:?}): it is outside the directories \
                             granted to plugin `{}` or needs write access it was not granted",
                            state.policy.plugin
                        ));
                    }
                    Err(_) => {}
                }
                if let (Err(_), Some(quota)) = (&outcome, changing) {
                    quota.refund(charged);
                }
                Ok((outcome,))
            })
        },
    )
}

/// What writes bytes: `write`, `set-size`, and the streams of `write-via-stream` and
/// `append-via-stream`.
fn writes(types: &mut LinkerInstance<'_, CallState>) -> wasmtime::Result<()> {
    types.func_wrap_async(
        "[method]descriptor.write",
        |mut store: Store<'_>, (fd, bytes, offset): (Fd, Vec<u8>, u64)| {
            Box::new(async move {
                let state = store.data_mut();
                let Some((quota, file)) = metered_file(state, &fd) else {
                    return Ok((code(
                        HostDescriptor::write(&mut state.filesystem(), fd, bytes, offset).await,
                    )?,));
                };
                let _turn = quota.turn().await;
                let end = offset.saturating_add(bytes.len() as u64);
                resize(&quota, &file, end, async {
                    code(HostDescriptor::write(&mut state.filesystem(), fd, bytes, offset).await)
                })
                .await
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.set-size",
        |mut store: Store<'_>, (fd, length): (Fd, u64)| {
            Box::new(async move {
                let state = store.data_mut();
                let Some((quota, file)) = metered_file(state, &fd) else {
                    return Ok((code(
                        HostDescriptor::set_size(&mut state.filesystem(), fd, length).await,
                    )?,));
                };
                let _turn = quota.turn().await;
                resize(&quota, &file, length, async {
                    code(HostDescriptor::set_size(&mut state.filesystem(), fd, length).await)
                })
                .await
            })
        },
    )?;
    types.func_wrap(
        "[method]descriptor.write-via-stream",
        |mut store: Store<'_>, (fd, offset): (Fd, u64)| {
            stream(store.data_mut(), fd, Some(offset), |view, fd| {
                HostDescriptor::write_via_stream(view, fd, offset)
            })
        },
    )?;
    types.func_wrap("[method]descriptor.append-via-stream", |mut store: Store<'_>, (fd,): (Fd,)| {
        stream(store.data_mut(), fd, None, |view, fd| HostDescriptor::append_via_stream(view, fd))
    })
}

/// Run `change`, which makes `file` at most `end` bytes long (it may shrink it), with
/// the growth charged first and the ledger corrected to the size measured after.
async fn resize<T>(
    quota: &Quota,
    file: &std::fs::File,
    end: u64,
    change: impl Future<Output = wasmtime::Result<Result<T, ErrorCode>>>,
) -> Outcome<T> {
    let before = size(file);
    let charged = match quota.charge(footprint(before.max(end)) - footprint(before)) {
        Ok(charged) => charged,
        Err(code) => return Ok((Err(code),)),
    };
    let outcome = change.await;
    quota.settle(charged, footprint(before), footprint(size(file)));
    Ok((outcome?,))
}

/// A stream made by `make` on `fd`, metered when `fd` writes into a quota'd directory.
fn stream(
    state: &mut CallState,
    fd: Fd,
    at: Option<u64>,
    make: impl FnOnce(
        &mut wasmtime_wasi::filesystem::WasiFilesystemCtxView<'_>,
        Fd,
    ) -> FsResult<Resource<DynOutputStream>>,
) -> Outcome<Resource<DynOutputStream>> {
    let metered = metered_file(state, &fd);
    let stream = match (code(make(&mut state.filesystem(), fd))?, metered) {
        (Ok(stream), Some(metered)) => (stream, metered),
        (outcome, _) => return Ok((outcome,)),
    };
    let (stream, (quota, file)) = stream;
    // wasmtime-wasi's stream writes in the background, past any check made when the
    // write is queued; the metered one writes under the directory's turn.
    let _own = state.table.delete(stream)?;
    Ok((Ok(state.table.push(quota.writer(file, at))?),))
}

/// What adds or removes a directory entry in place: `create-directory-at`,
/// `symlink-at`, `link-at`, `unlink-file-at`, `remove-directory-at`.
fn entries(types: &mut LinkerInstance<'_, CallState>) -> wasmtime::Result<()> {
    types.func_wrap_async(
        "[method]descriptor.create-directory-at",
        |mut store: Store<'_>, (fd, path): (Fd, String)| {
            Box::new(async move {
                let state = store.data_mut();
                let quota = state.quotas.of(fd.rep());
                add_entry(quota, async {
                    code(
                        HostDescriptor::create_directory_at(&mut state.filesystem(), fd, path)
                            .await,
                    )
                })
                .await
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.symlink-at",
        |mut store: Store<'_>, (fd, target, path): (Fd, String, String)| {
            Box::new(async move {
                let state = store.data_mut();
                let quota = state.quotas.of(fd.rep());
                add_entry(quota, async {
                    code(
                        HostDescriptor::symlink_at(&mut state.filesystem(), fd, target, path).await,
                    )
                })
                .await
            })
        },
    )?;
    type Link = (Fd, PathFlags, String, Fd, String);
    types.func_wrap_async(
        "[method]descriptor.link-at",
        |mut store: Store<'_>, (fd, flags, old, new_fd, new): Link| {
            Box::new(async move {
                let state = store.data_mut();
                let (from, to) = (state.quotas.of(fd.rep()), state.quotas.of(new_fd.rep()));
                // A second name in another quota'd directory would count the file's
                // bytes there as well: across directories, a link is a copy's job.
                if let (Some(from), Some(to)) = (&from, &to)
                    && !from.same(to)
                {
                    return Ok((Err(ErrorCode::CrossDevice),));
                }
                add_entry(to, async {
                    code(
                        HostDescriptor::link_at(
                            &mut state.filesystem(),
                            fd,
                            flags,
                            old,
                            new_fd,
                            new,
                        )
                        .await,
                    )
                })
                .await
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.unlink-file-at",
        |mut store: Store<'_>, (fd, path): (Fd, String)| {
            Box::new(async move {
                let state = store.data_mut();
                let Some(quota) = state.quotas.of(fd.rep()) else {
                    return Ok((code(
                        HostDescriptor::unlink_file_at(&mut state.filesystem(), fd, path).await,
                    )?,));
                };
                let _turn = quota.turn().await;
                let freed = stat_at(state, &fd, false, &path).await.map_or(0, |s| cost(&s));
                let id = identity_at(state, &fd, &path).await;
                let outcome =
                    code(HostDescriptor::unlink_file_at(&mut state.filesystem(), fd, path).await)?;
                if outcome.is_ok() {
                    quota.free(id, freed);
                }
                Ok((outcome,))
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.remove-directory-at",
        |mut store: Store<'_>, (fd, path): (Fd, String)| {
            Box::new(async move {
                let state = store.data_mut();
                let quota = state.quotas.of(fd.rep());
                let _turn = match &quota {
                    Some(quota) => Some(quota.turn().await),
                    None => None,
                };
                let outcome = code(
                    HostDescriptor::remove_directory_at(&mut state.filesystem(), fd, path).await,
                )?;
                if let (Ok(()), Some(quota)) = (&outcome, &quota) {
                    quota.refund(BLOCK_BYTES);
                }
                Ok((outcome,))
            })
        },
    )
}

/// Run `add`, which makes one new directory entry, with its block charged first.
async fn add_entry(
    quota: Option<Quota>,
    add: impl Future<Output = wasmtime::Result<Result<(), ErrorCode>>>,
) -> Outcome<()> {
    let Some(quota) = quota else { return Ok((add.await?,)) };
    let _turn = quota.turn().await;
    let charged = match quota.charge(BLOCK_BYTES) {
        Ok(charged) => charged,
        Err(code) => return Ok((Err(code),)),
    };
    let outcome = add.await;
    if !matches!(outcome, Ok(Ok(()))) {
        quota.refund(charged);
    }
    Ok((outcome?,))
}

/// `rename-at`: a replaced entry is refunded; a file moved between two quota'd
/// directories is charged to one and refunded to the other. A directory is not moved
/// between them (`cross-device`, as between filesystems): its contents would have to be
/// measured under both directories' turns.
fn rename_at(types: &mut LinkerInstance<'_, CallState>) -> wasmtime::Result<()> {
    types.func_wrap_async(
        "[method]descriptor.rename-at",
        |mut store: Store<'_>, (fd, old, new_fd, new): (Fd, String, Fd, String)| {
            Box::new(async move {
                let state = store.data_mut();
                let (from, to) = (state.quotas.of(fd.rep()), state.quotas.of(new_fd.rep()));
                let (Some(from), Some(to)) = (from, to) else {
                    return Ok((code(
                        HostDescriptor::rename_at(&mut state.filesystem(), fd, old, new_fd, new)
                            .await,
                    )?,));
                };
                let across = !from.same(&to);
                // Two turns are always taken in one order, so two renames in opposite
                // directions cannot wait on each other.
                let (first, second) = match Arc::as_ptr(from.usage()) < Arc::as_ptr(to.usage()) {
                    true => (&from, &to),
                    false => (&to, &from),
                };
                let _first = first.turn().await;
                let _second = match across {
                    true => Some(second.turn().await),
                    false => None,
                };
                let source = stat_at(state, &fd, false, &old).await;
                let target = stat_at(state, &new_fd, false, &new).await;
                let moved = source.as_ref().map_or(0, cost);
                // Only a plain file moves between two quotas: a directory's contents, a
                // further name of a file, or a file still open (its descriptors charge
                // where they were opened) would leave part of it counted on the wrong side.
                let source_id = identity_at(state, &fd, &old).await;
                let movable = source
                    .as_ref()
                    .is_some_and(|s| s.type_ != DescriptorType::Directory && s.link_count <= 1)
                    && !source_id.is_some_and(|id| from.usage().is_open(id));
                if across && !movable {
                    return Ok((Err(ErrorCode::CrossDevice),));
                }
                // Renaming a name onto another name of the same file changes nothing.
                let target_id = identity_at(state, &new_fd, &new).await;
                let replaced = match target {
                    Some(target) if target_id.is_none() || target_id != source_id => cost(&target),
                    _ => 0,
                };
                let charged = match across {
                    true => match to.charge(moved) {
                        Ok(charged) => charged,
                        Err(code) => return Ok((Err(code),)),
                    },
                    false => 0,
                };
                let outcome = code(
                    HostDescriptor::rename_at(&mut state.filesystem(), fd, old, new_fd, new).await,
                )?;
                match outcome {
                    Ok(()) => {
                        to.free(target_id, replaced);
                        if across {
                            from.refund(moved);
                        }
                    }
                    Err(_) => to.refund(charged),
                }
                Ok((outcome,))
            })
        },
    )
}

/// The quota and open file behind `fd`, when it is a file in a quota'd directory.
fn metered_file(state: &CallState, fd: &Fd) -> Option<(Quota, Arc<std::fs::File>)> {
    let quota = state.quotas.of(fd.rep())?;
    Some((quota, file_of(state, fd)?))
}

fn file_of(state: &CallState, fd: &Fd) -> Option<Arc<std::fs::File>> {
    match state.table.get(fd).ok()? {
        Descriptor::File(file) => Some(file.file.clone()),
        Descriptor::Dir(_) => None,
    }
}

fn size(file: &std::fs::File) -> u64 {
    file.metadata().map_or(0, |m| m.len())
}

/// What the contents of the entry described by `stat` cost, whatever its names.
fn content(stat: &DescriptorStat) -> u64 {
    match stat.type_ {
        DescriptorType::RegularFile => footprint(stat.size),
        _ => BLOCK_BYTES,
    }
}

/// What the entry described by `stat` costs: a file with one name its footprint, any
/// other entry (a directory, a link, a further name of a file) one block.
fn cost(stat: &DescriptorStat) -> u64 {
    match stat.type_ {
        DescriptorType::RegularFile if stat.link_count <= 1 => footprint(stat.size),
        _ => BLOCK_BYTES,
    }
}

async fn stat_at(
    state: &mut CallState,
    fd: &Fd,
    follow: bool,
    path: &str,
) -> Option<DescriptorStat> {
    let flags = if follow { PathFlags::SYMLINK_FOLLOW } else { PathFlags::empty() };
    let fd = Resource::new_borrow(fd.rep());
    HostDescriptor::stat_at(&mut state.filesystem(), fd, flags, path.to_string()).await.ok()
}

/// The identity of the file at `path` under `fd` (the link itself, not its target).
async fn identity_at(state: &mut CallState, fd: &Fd, path: &str) -> Option<FileId> {
    let fd = Resource::new_borrow(fd.rep());
    let view = &mut state.filesystem();
    let hash = HostDescriptor::metadata_hash_at(view, fd, PathFlags::empty(), path.to_string());
    hash.await.ok().map(|h| (h.lower, h.upper))
}

/// The identity of the open file `fd`.
async fn identity(state: &mut CallState, fd: &Fd) -> Option<FileId> {
    let fd = Resource::new_borrow(fd.rep());
    let hash = HostDescriptor::metadata_hash(&mut state.filesystem(), fd).await;
    hash.ok().map(|h| (h.lower, h.upper))
}

/// wasmtime-wasi's result as the guest receives it: an error code, or a trap.
fn code<T>(result: FsResult<T>) -> wasmtime::Result<Result<T, ErrorCode>> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(error) => error.downcast().map(Err),
    }
}
