//! The wasmtime engine shared by every plugin: configured once, compiled code cached
//! on disk, an epoch ticker for deadlines. Each call runs in a [`sandbox`].

pub mod sandbox;

use std::hash::{Hash, Hasher};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
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

/// The shared engine, linker and compile cache.
pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    cache_dir: Option<PathBuf>,
    pooled: bool,
}

impl Runtime {
    /// Configure the engine (pooling when it can reserve the address space) and
    /// start the epoch ticker. `cache_dir` keeps compiled components across restarts.
    pub fn new(settings: &WasmSettings, cache_dir: Option<PathBuf>) -> anyhow::Result<Self> {
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
        sandbox::wasi_0_2_filesystem::audit(&mut linker)?;
        sandbox::wasi_0_2_io::describe_errors(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        contract::Plugin::add_to_linker::<_, HasSelf<CallState>>(&mut linker, |s| s)?;

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
        Ok(Self { engine, linker, cache_dir, pooled })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Whether instances come from the pooling allocator.
    pub fn is_pooled(&self) -> bool {
        self.pooled
    }

    /// Compile `bytes`, or load the compiled code from the cache when this exact
    /// component was compiled before by this wasmtime with these settings.
    pub fn compile(&self, name: &str, bytes: &[u8]) -> anyhow::Result<Component> {
        let Some(dir) = &self.cache_dir else {
            return self.compile_fresh(name, bytes);
        };
        let path = dir.join(format!("{}.cwasm", self.cache_key(bytes)));
        if path.exists() {
            // SAFETY: the file was written by `Component::serialize` of an engine with
            // the same settings and version (both are in the key); wasmtime checks
            // the header again and we recompile if it refuses.
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

/// Write `bytes` to `path` through a temporary file, so readers never see half a file.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("cache path has no parent")?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.{}.tmp", std::process::id(), rand_suffix()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(())
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::AtomicU64;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}
