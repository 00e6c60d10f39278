//! The registry as it changes: a plugins directory watched for added, changed and
//! removed components, each change swapped in atomically.
//!
//! Callers take a [`Registry`] snapshot per request; a reload publishes a new
//! snapshot and never touches the old one, so in-flight calls finish on the
//! version they started on. A component that fails to load leaves its previous
//! version serving.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::Watcher;
use tokio::sync::{Mutex, watch};

use super::{Fingerprint, LoadError, Registry, component_files, load_plugin};
use crate::config::Config;
use crate::runtime::Runtime;

/// Changes closer together than this are handled in one reload (a copy in
/// progress fires many events).
const DEBOUNCE: Duration = Duration::from_millis(100);

/// The plugins of one directory, reloaded as the directory changes.
pub struct LiveRegistry {
    runtime: Runtime,
    config: Config,
    dir: PathBuf,
    current: ArcSwap<Registry>,
    reloading: Mutex<()>,
    generation: watch::Sender<u64>,
    /// Plugins found at start-up that are still compiling.
    pending: std::sync::Mutex<BTreeSet<String>>,
    /// True once every plugin found at start-up has loaded or failed to.
    ready: watch::Sender<bool>,
    /// The last load of each component file that failed, until that file loads or goes.
    failures: std::sync::Mutex<BTreeMap<String, LoadError>>,
}

/// What one reload changed.
#[derive(Debug, Default)]
pub struct Reload {
    /// Plugins loaded for the first time.
    pub added: Vec<String>,
    /// Plugins whose component changed and now serve the new version.
    pub replaced: Vec<String>,
    /// Plugins whose file disappeared.
    pub removed: Vec<String>,
    /// Components that failed to load; a previous version, if any, still serves.
    pub failed: Vec<LoadError>,
}

impl Reload {
    /// Whether the set of tools changed.
    pub fn changed(&self) -> bool {
        !(self.added.is_empty() && self.replaced.is_empty() && self.removed.is_empty())
    }
}

/// Keeps a directory watched; dropping it stops watching.
pub struct Watch {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LiveRegistry {
    /// Load every component in `dir`. Failures are returned and logged; the rest serve.
    pub async fn open(
        runtime: Runtime,
        config: Config,
        dir: PathBuf,
    ) -> anyhow::Result<(Arc<Self>, Vec<LoadError>)> {
        let (registry, errors) = Registry::load_dir(&runtime, &config, &dir).await?;
        let live = Self::with(runtime, config, dir, registry);
        for error in &errors {
            live.failed(error.clone());
        }
        Ok((live, errors))
    }

    /// Start with no plugins and load the directory's components in the background,
    /// each one serving as soon as it is compiled; then, once `more` is done (pulls from a
    /// registry, which may add or replace components), the components it changed. Until
    /// both are done [`LiveRegistry::is_loading`] says so, and [`LiveRegistry::is_ready`]
    /// is false. What the directory held serves meanwhile, however long `more` takes.
    pub fn open_in_background(
        runtime: Runtime,
        config: Config,
        dir: PathBuf,
        more: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<Arc<Self>> {
        let files = component_files(&dir)?;
        let live = Self::with(runtime, config, dir, Registry::default());
        live.ready.send_replace(false);
        let loader = live.clone();
        tokio::spawn(async move {
            let before: Vec<(PathBuf, Option<Fingerprint>)> =
                files.iter().map(|f| (f.clone(), Fingerprint::of(f).ok())).collect();
            loader.load_each(files).await;
            more.await;
            let changed = (component_files(&loader.dir).unwrap_or_default().into_iter())
                .filter(|f| !before.contains(&(f.clone(), Fingerprint::of(f).ok())))
                .collect();
            loader.load_each(changed).await;
            loader.ready.send_replace(true);
        });
        Ok(live)
    }

    /// Load `files` one at a time, each serving as soon as it is compiled.
    async fn load_each(&self, files: Vec<PathBuf>) {
        *self.pending_set() = files.iter().filter_map(|f| stem(f)).collect();
        for path in files {
            let _one_at_a_time = self.reloading.lock().await;
            match load_plugin(&self.runtime, &self.config, &path).await {
                Ok(plugin) => {
                    self.failures_map().remove(&plugin.name);
                    let mut plugins = self.plugins_by_name();
                    plugins.insert(plugin.name.clone(), Arc::new(plugin));
                    self.publish(plugins);
                }
                Err(error) => {
                    tracing::error!(plugin = %error.plugin, kind = %error.kind, "{error}");
                    self.failed(error);
                }
            }
            if let Some(name) = stem(&path) {
                self.pending_set().remove(&name);
            }
        }
    }

    fn with(runtime: Runtime, config: Config, dir: PathBuf, registry: Registry) -> Arc<Self> {
        Arc::new(Self {
            runtime,
            config,
            dir,
            current: ArcSwap::from_pointee(registry),
            reloading: Mutex::new(()),
            generation: watch::Sender::new(0),
            pending: Default::default(),
            ready: watch::Sender::new(true),
            failures: Default::default(),
        })
    }

    fn failures_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, LoadError>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn failed(&self, error: LoadError) {
        self.failures_map().insert(error.plugin.clone(), error);
    }

    /// Component files whose last load failed, each with why; a plugin of the same name
    /// that loaded earlier still serves.
    pub fn failures(&self) -> Vec<LoadError> {
        self.failures_map().values().cloned().collect()
    }

    fn pending_set(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether plugin `name` was found at start-up and is still compiling.
    pub fn is_loading(&self, name: &str) -> bool {
        self.pending_set().contains(name)
    }

    /// Whether every plugin found at start-up has been loaded (or failed to).
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Resolves once [`LiveRegistry::is_ready`] is true.
    pub async fn wait_ready(&self) {
        let mut ready = self.ready.subscribe();
        // The sender lives as long as `self`, so this cannot fail while we wait.
        let _ = ready.wait_for(|ready| *ready).await;
    }

    fn plugins_by_name(&self) -> BTreeMap<String, Arc<super::Plugin>> {
        self.current.load().plugins().map(|p| (p.name.clone(), p.clone())).collect()
    }

    fn publish(&self, plugins: BTreeMap<String, Arc<super::Plugin>>) {
        self.current.store(Arc::new(Registry { plugins }));
        self.generation.send_modify(|g| *g += 1);
    }

    /// The current plugins; hold the snapshot for the duration of one request.
    pub fn registry(&self) -> Arc<Registry> {
        self.current.load_full()
    }

    /// The watched directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A receiver that sees a new value each time the set of tools changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Bring the registry in line with the directory: load new and changed
    /// components, drop removed ones, keep the rest as they are.
    pub async fn reload(&self) -> anyhow::Result<Reload> {
        let _one_at_a_time = self.reloading.lock().await;
        let mut report = Reload::default();
        let mut plugins = self.plugins_by_name();
        let files = component_files(&self.dir)?;
        let present: Vec<String> = files.iter().filter_map(|f| stem(f)).collect();
        self.failures_map().retain(|name, _| present.contains(name));
        for name in plugins.keys().filter(|n| !present.contains(n)).cloned().collect::<Vec<_>>() {
            plugins.remove(&name);
            report.removed.push(name);
        }
        for path in files {
            let existing = present_plugin(&plugins, &path);
            let unchanged = existing.is_some_and(|p| {
                p.path == path && Fingerprint::of(&path).ok() == Some(p.fingerprint)
            });
            if unchanged {
                continue;
            }
            match load_plugin(&self.runtime, &self.config, &path).await {
                Ok(plugin) => {
                    let name = plugin.name.clone();
                    self.failures_map().remove(&name);
                    match plugins.insert(name.clone(), Arc::new(plugin)) {
                        Some(_) => report.replaced.push(name),
                        None => report.added.push(name),
                    }
                }
                Err(error) => {
                    tracing::error!(plugin = %error.plugin, kind = %error.kind, "{error}; the previous version, if any, keeps serving");
                    self.failed(error.clone());
                    report.failed.push(error);
                }
            }
        }
        if report.changed() {
            tracing::info!(added = ?report.added, replaced = ?report.replaced, removed = ?report.removed, "plugins reloaded");
            self.publish(plugins);
        }
        Ok(report)
    }

    /// Watch the directory and reload on every change until the returned guard drops.
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<Watch> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|e| !e.kind.is_access()) {
                    let _ = tx.send(());
                }
            })?;
        watcher.watch(&self.dir, notify::RecursiveMode::NonRecursive)?;
        let live = self.clone();
        let task = tokio::spawn(async move {
            while rx.recv().await.is_some() {
                tokio::time::sleep(DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
                if let Err(error) = live.reload().await {
                    tracing::error!(dir = %live.dir.display(), "reload failed: {error:#}");
                }
            }
        });
        Ok(Watch { _watcher: watcher, task })
    }
}

fn present_plugin<'a>(
    plugins: &'a BTreeMap<String, Arc<super::Plugin>>,
    path: &Path,
) -> Option<&'a Arc<super::Plugin>> {
    plugins.get(&stem(path)?)
}

/// The plugin name a component file gives: its file stem.
fn stem(path: &Path) -> Option<String> {
    path.file_stem()?.to_str().map(str::to_string)
}
