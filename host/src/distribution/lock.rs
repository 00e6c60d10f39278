//! `autoglm.lock`: the digests the plugin sources resolved to, beside the config file, so
//! a restart or another replica loads byte-identical components.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{DistributionError, write_atomically};

/// The lockfile's name (it lives beside the config file).
pub const LOCK_FILE: &str = "autoglm.lock";

/// The lockfile's entries, and where it is kept.
#[derive(Debug, Default)]
pub struct Lock {
    /// Where it is read from and written to.
    pub path: PathBuf,
    entries: Vec<LockEntry>,
    changed: bool,
}

/// One pulled source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockEntry {
    /// The plugin's name.
    pub name: String,
    /// The reference as configured (`oci://host/repo:tag`).
    pub reference: String,
    /// The manifest digest it resolved to.
    pub digest: String,
}

#[derive(Serialize, Deserialize)]
struct LockFile {
    #[serde(default, rename = "plugin")]
    plugins: Vec<LockEntry>,
}

impl Lock {
    /// The lockfile at `path`; empty when there is none yet.
    pub fn load(path: &Path) -> Result<Self, DistributionError> {
        let io = |reason: String| DistributionError::Io { path: path.to_path_buf(), reason };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(e.to_string())),
        };
        let file: LockFile = toml::from_str(&text).map_err(|e| {
            io(format!("not a lockfile autoglm wrote ({e}); remove it to start over"))
        })?;
        Ok(Self { path: path.to_path_buf(), entries: file.plugins, changed: false })
    }

    /// The entry of `reference`.
    pub fn get(&self, reference: &str) -> Option<&LockEntry> {
        self.entries.iter().find(|e| e.reference == reference)
    }

    /// Record that `reference` (installed as `name`) resolved to `digest`.
    pub fn record(&mut self, name: &str, reference: &str, digest: &str) {
        let entry = LockEntry {
            name: name.to_string(),
            reference: reference.to_string(),
            digest: digest.to_string(),
        };
        if self.get(reference) == Some(&entry) {
            return;
        }
        self.entries.retain(|e| e.reference != reference && e.name != name);
        self.entries.push(entry);
        self.entries.sort_by(|a, b| a.name.cmp(&b.name));
        self.changed = true;
    }

    /// Write the lockfile if anything was recorded since it was read.
    pub fn save(&mut self) -> Result<(), DistributionError> {
        if !self.changed {
            return Ok(());
        }
        let body = toml::to_string(&LockFile { plugins: self.entries.clone() })
            .expect("lock entries serialize");
        let text = format!(
            "# Written by autoglm: the digests the plugin sources resolved to. Commit it; \
             `--locked` refuses to resolve tags again.\n{body}"
        );
        write_atomically(&self.path, text.as_bytes())?;
        self.changed = false;
        Ok(())
    }
}
