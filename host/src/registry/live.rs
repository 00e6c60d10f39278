//! The registry as it changes: a plugins directory watched for added, changed and
//! removed components, each change swapped in atomically.
//!
//! Callers take a [`Router`] snapshot per request; a reload publishes a new
//! snapshot and never touches the old one, so in-flight calls finish on the
//! version they started on. A component that fails to load leaves its previous
//! version serving.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::Watcher;
use tokio::sync::{Mutex, watch};

use super::{Fingerprint, LoadError, Registry, component_files, load_plugin};
use crate::config::Config;
use crate::router::Router;
use crate::runtime::Runtime;

/// Changes closer together than this are handled in one reload (a copy in
/// progress fires many events).
const DEBOUNCE: Duration = Duration::from_millis(100);

/// The plugins of one directory, reloaded as the directory changes.
pub struct LiveRegistry {
    runtime: Runtime,
    config: Config,
    dir: PathBuf,
    current: ArcSwap<Router>,
    reloading: Mutex<()>,
    generation: watch::Sender<u64>,
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
        let live = Arc::new(Self {
            runtime,
            config,
            dir,
            current: ArcSwap::from_pointee(Router::new(registry)),
            reloading: Mutex::new(()),
            generation: watch::Sender::new(0),
        });
        Ok((live, errors))
    }

    /// The current snapshot; hold it for the duration of one request.
    pub fn router(&self) -> Arc<Router> {
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
        let old = self.router();
        let mut report = Reload::default();
        let mut plugins: BTreeMap<String, Arc<super::Plugin>> =
            old.registry().plugins().map(|p| (p.name.clone(), p.clone())).collect();
        let files = component_files(&self.dir)?;
        let present: Vec<String> = (files.iter())
            .filter_map(|f| f.file_stem().and_then(|s| s.to_str()).map(str::to_string))
            .collect();
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
                    match plugins.insert(name.clone(), Arc::new(plugin)) {
                        Some(_) => report.replaced.push(name),
                        None => report.added.push(name),
                    }
                }
                Err(error) => {
                    tracing::error!(plugin = %error.plugin, kind = %error.kind, "{error}; the previous version, if any, keeps serving");
                    report.failed.push(error);
                }
            }
        }
        if report.changed() {
            tracing::info!(added = ?report.added, replaced = ?report.replaced, removed = ?report.removed, "plugins reloaded");
            self.current.store(Arc::new(Router::new(Registry { plugins })));
            self.generation.send_modify(|g| *g += 1);
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
    plugins.get(path.file_stem()?.to_str()?)
}
