//! The wasmtime engine shared by every plugin: configured once, compiled code cached
//! on disk, an epoch ticker for deadlines. Each call runs in a [`sandbox`].
//!
//! A compile cache entry is native code the host maps and runs as it is: wasmtime checks
//! the entry's header (format, wasmtime version, engine settings), not the code. So the
//! cache directory is trusted only when no one but this user can write into it (see
//! [`Runtime::new`]); compiling and loading entries block for up to seconds and run
//! on tokio's blocking pool (see [`Runtime::compile_off_thread`]).

pub mod reflect;
pub mod sandbox;

use std::hash::{Hash, Hasher};
use std::io::{IsTerminal, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::config::WasmSettings;
use crate::contract;
use sandbox::CallState;

/// How often the epoch advances. Deadlines are checked (and long guests yield to
/// the async executor) at this granularity.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The largest linear memory a pooled instance slot can hold. Per-plugin caps are
/// enforced below this by the sandbox's limiter.
const POOL_MAX_MEMORY: usize = 512 << 20;

/// Idle pooled slots kept warm (resident, with their plugin's memory image)
/// for reuse; more idle slots than this are decommitted when freed.
const WARM_SLOTS: u32 = 16;

/// Bytes of memory, tables and stack per pooled slot kept resident between calls
/// and reset in place: covers a compiled Rust guest's stack and early heap.
const KEEP_RESIDENT: usize = 2 << 20;

/// Permission bits that let users other than the owner write into a directory.
const GROUP_OTHER_WRITE: u32 = 0o022;

/// The permission bit that lets anyone write into a directory.
const OTHER_WRITE: u32 = 0o002;

/// The sticky bit: in such a directory (`/tmp`) only an entry's owner may rename or
/// remove it, so other users' write access does not let them swap our entries.
const STICKY: u32 = 0o1000;

/// The shared engine, linker and compile cache. Cloning is cheap (the engine and the
/// linker are shared), so a clone can compile on a blocking thread.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<CallState>>,
    cache_dir: Option<PathBuf>,
    pooled: bool,
}

impl Runtime {
    /// Configure the engine (pooling when it can reserve the address space) and
    /// start the epoch ticker. `cache_dir` keeps compiled components across restarts; it
    /// is created `0700` when missing and refused (an error) when users other than this
    /// one could write into it or swap it for another directory.
    pub fn new(settings: &WasmSettings, cache_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        // Refuse rather than run without the cache: the operator asked for a cache that
        // cannot be had safely, and running on silently would hide both a planted-code
        // attempt and why every start now recompiles for seconds. The error says the fix.
        if let Some(dir) = &cache_dir {
            trusted_cache_dir(dir)?;
        }
        let (engine, pooled) = match settings.pooling {
            true => match Engine::new(&engine_config(Some(settings.pool_instances))) {
                Ok(engine) => (engine, true),
                Err(error) => {
                    // Small address spaces (some containers, 32-bit-ish limits) cannot
                    // reserve the pool; on-demand allocation still isolates calls.
                    tracing::warn!(%error, "pooling allocator unavailable; allocating on demand");
                    (Engine::new(&engine_config(None))?, false)
                }
            },
            false => (Engine::new(&engine_config(None))?, false),
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        sandbox::wasi_0_2_filesystem::hook(&mut linker)?;
        sandbox::wasi_0_2_io::describe_errors(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        contract::Plugin::add_to_linker::<_, HasSelf<CallState>>(&mut linker, |s| s)?;
        contract::v0_1::Plugin::add_to_linker::<_, HasSelf<CallState>>(&mut linker, |s| s)?;

        // The ticker lives as long as the engine: compiled plugins keep it alive
        // after the `Runtime` itself is gone.
        let weak = engine.weak();
        std::thread::Builder::new().name("epoch-ticker".into()).spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })?;
        Ok(Self { engine, linker: Arc::new(linker), cache_dir, pooled })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Whether instances come from the pooling allocator.
    pub fn is_pooled(&self) -> bool {
        self.pooled
    }

    /// [`Runtime::compile`] on tokio's blocking pool, so a compilation (seconds for an
    /// interpreter-sized component) or a cache load never stalls the async workers that
    /// serve requests. Dropping the future does not stop a compilation under way: it
    /// finishes on its thread and is discarded (Cranelift cannot be interrupted).
    pub async fn compile_off_thread(
        &self,
        name: &str,
        bytes: impl AsRef<[u8]> + Send + 'static,
    ) -> anyhow::Result<Component> {
        let (runtime, name) = (self.clone(), name.to_string());
        // The caller's span, so the compile's log lines still say which load they are for.
        let span = tracing::Span::current();
        let compile = move || span.in_scope(|| runtime.compile(&name, bytes.as_ref()));
        match tokio::task::spawn_blocking(compile).await {
            Ok(compiled) => compiled,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => anyhow::bail!("compilation cancelled: the host is shutting down"),
        }
    }

    /// Compile `bytes`, or load the compiled code from the cache when this exact
    /// component was compiled before by this wasmtime with these settings. Blocks; from
    /// async code use [`Runtime::compile_off_thread`].
    pub fn compile(&self, name: &str, bytes: &[u8]) -> anyhow::Result<Component> {
        let Some(dir) = &self.cache_dir else {
            return self.compile_fresh(name, bytes);
        };
        let path = dir.join(format!("{}.cwasm", self.cache_key(bytes)));
        if path.exists() {
            // SAFETY: only this user can write into the directory (checked in `new`),
            // so the file was written by `Component::serialize` of an engine with the
            // same settings and version (both are in the key). wasmtime checks the
            // header again and we recompile if it refuses; the code itself it does not
            // check, which is why the directory must be ours alone.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(component) => return Ok(component),
                Err(error) => {
                    tracing::warn!(%error, path = %path.display(), "stale compile cache entry")
                }
            }
        }
        let component = self.compile_fresh(name, bytes)?;
        if let Err(error) = write_atomically(&path, &component.serialize()?) {
            tracing::warn!(%error, dir = %dir.display(), "cannot write the compile cache");
        }
        Ok(component)
    }

    /// Compile with Cranelift, showing a spinner on a terminal: an interpreter-sized
    /// component takes seconds.
    fn compile_fresh(&self, name: &str, bytes: &[u8]) -> anyhow::Result<Component> {
        let started = std::time::Instant::now();
        let spinner = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_message(format!("compiling plugin {name} ({} KiB)", bytes.len() >> 10));
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        let component = Component::new(&self.engine, bytes);
        if let Some(bar) = spinner {
            bar.finish_and_clear();
        }
        let ms = started.elapsed().as_millis() as u64;
        tracing::info!(plugin = name, bytes = bytes.len(), ms, "compiled plugin");
        Ok(component?)
    }

    /// Link `component` against the host's imports once, so each call only instantiates.
    pub fn prepare(&self, component: &Component) -> anyhow::Result<InstancePre<CallState>> {
        self.linker.instantiate_pre(component).map_err(Into::into)
    }

    fn cache_key(&self, bytes: &[u8]) -> String {
        let mut settings = std::hash::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut settings);
        let mut hash = Sha256::new();
        hash.update(bytes);
        hash.update(settings.finish().to_le_bytes());
        hash.update(env!("CARGO_PKG_VERSION"));
        format!("{:x}", hash.finalize())
    }
}

fn engine_config(pool_instances: Option<u32>) -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .memory_init_cow(true)
        .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Disable);
    if let Some(instances) = pool_instances {
        let mut pool = PoolingAllocationConfig::default();
        // Interpreted guests (componentize-py, componentize-js) instantiate dozens of
        // core modules per component; compiled Rust guests a handful.
        pool.total_component_instances(instances)
            .total_core_instances(instances * 4)
            .total_memories(instances * 2)
            .total_tables(instances * 4)
            .max_core_instances_per_component(64)
            .max_memories_per_component(8)
            .max_tables_per_component(32)
            .max_memory_size(POOL_MAX_MEMORY)
            .total_stacks(instances)
            .max_unused_warm_slots(WARM_SLOTS)
            // Reset the pages a call dirtied in place instead of unmapping them: no
            // page faults on the next call and no TLB shootdowns (p50 of a trivial
            // call 29.5 -> 12.8 us here). Only with PAGEMAP_SCAN, which finds the
            // dirty pages; without it the whole kept range would be memset per call.
            .pagemap_scan(wasmtime::Enabled::Auto);
        if kernel_has_pagemap_scan() {
            // Not stacks: they are handed out without regard to the plugin, so over
            // time every stack in the pool would stay resident (a deep recursion
            // leaves half a megabyte behind in each).
            pool.linear_memory_keep_resident(KEEP_RESIDENT).table_keep_resident(KEEP_RESIDENT);
        }
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// Whether this is Linux 6.7 or newer, which has the `PAGEMAP_SCAN` ioctl.
fn kernel_has_pagemap_scan() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut numbers = release.split(['.', '-']).map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    (major, minor) >= (6, 7)
}

/// Check that `dir` may hold compiled code this host will run, creating it (and any
/// missing parents) `0700` when it does not exist.
///
/// Refused: a directory owned by another user, or writable by group or others; and a
/// directory whose ancestors let another user rename it away and put their own in its
/// place (an ancestor owned by neither this user nor root, or writable by group or
/// others without the sticky bit, e.g. a `/tmp/autoglm` someone else created first).
/// Group and others may still read: compiled code reveals no more than the plugins.
/// This is the whole defence of the cache (entries carry no checksum: hashing them on
/// every start costs ~1 ms per MiB, over the start-up budget with 50 plugins, and a
/// checksum written beside an entry protects nothing from whoever can write the entry).
fn trusted_cache_dir(dir: &Path) -> anyhow::Result<()> {
    let refuse = |why: String, fix: String| {
        anyhow::anyhow!(
            "refusing the compile cache directory {}: {why}, so another user could plant \
             native code this host would run; {fix}, or set another `cache_dir` in the config",
            dir.display()
        )
    };
    if !dir.exists() {
        create_private_dir(dir)
            .with_context(|| format!("cannot create the compile cache {}", dir.display()))?;
    }
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("cannot read the compile cache {}", dir.display()))?;
    anyhow::ensure!(meta.is_dir(), "the compile cache {} is not a directory", dir.display());
    let me = current_uid(dir)?;
    if meta.uid() != me {
        return Err(refuse(
            format!("it is owned by uid {}, not by this user (uid {me})", meta.uid()),
            format!("remove it (the host recreates it) or `chown` it to uid {me}"),
        ));
    }
    if meta.mode() & GROUP_OTHER_WRITE != 0 {
        return Err(refuse(
            format!("group or others may write into it (mode {:o})", meta.mode() & 0o7777),
            format!("run `chmod 700 {}`", dir.display()),
        ));
    }
    // Both the path as given and as resolved: a symlink on the way can be repointed by
    // whoever may write the directory holding it.
    let (given, real) = (std::path::absolute(dir)?, dir.canonicalize()?);
    for ancestor in given.ancestors().skip(1).chain(real.ancestors().skip(1)) {
        let meta = std::fs::metadata(ancestor)?;
        let at = ancestor.display();
        if meta.uid() != me && meta.uid() != 0 {
            return Err(refuse(
                format!("{at} above it is owned by uid {}, who can swap it out", meta.uid()),
                "put the cache in a directory of your own".to_string(),
            ));
        }
        // Group-writable parents are common where each user has a group of their own
        // (umask 002), so only parents anyone may write are refused.
        if meta.mode() & OTHER_WRITE != 0 && meta.mode() & STICKY == 0 {
            return Err(refuse(
                format!(
                    "{at} above it is writable by anyone (mode {:o}), who can swap it out",
                    meta.mode() & 0o7777
                ),
                format!("run `chmod o-w {at}`"),
            ));
        }
    }
    Ok(())
}

/// Create `dir` and its missing parents `0700` (the umask can only take bits away).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// The uid this process creates files as: the owner of a fresh anonymous temporary
/// file (std has no getuid without libc). That is exactly the owner our cache entries
/// get, unlike `/proc/self`, which shows root for a non-dumpable process. The system temp
/// directory first, so nothing is left in `dir`; `dir` itself when that is unusable.
fn current_uid(dir: &Path) -> anyhow::Result<u32> {
    let probe = tempfile::tempfile().or_else(|_| tempfile::tempfile_in(dir));
    let probe = probe.with_context(|| {
        format!(
            "cannot create a file to learn this user's uid (tried the temp dir and {})",
            dir.display()
        )
    })?;
    Ok(probe.metadata()?.uid())
}

/// Write `bytes` to `path` through a temporary file, so readers never see half a file.
/// The file is `0600`: compiled code is readable by this user alone.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("cache path has no parent")?;
    // Recreated `0700`, as in `trusted_cache_dir`, if it was removed while we ran.
    create_private_dir(dir)?;
    let tmp = dir.join(format!(".{}.{}.tmp", std::process::id(), rand_suffix()));
    let written = (std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600))
        .open(&tmp)
        .and_then(|mut file| file.write_all(bytes));
    written.and_then(|()| std::fs::rename(&tmp, path)).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(())
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::AtomicU64;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}
