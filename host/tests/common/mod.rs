//! Shared test setup: the sample plugins built by `just plugins`, a host over them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use std::sync::Arc;

use autoglm_host::config::Config;
use autoglm_host::registry::LiveRegistry;
use autoglm_host::router::Router;

/// The workspace's `target/` directory.
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
}

/// `target/plugins/<name>.wasm`, which `just plugins` builds from source.
pub fn sample(name: &str) -> PathBuf {
    let path = target_dir().join("plugins").join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run `just plugins` (or `just test`) first",
        path.display()
    );
    path
}

/// A directory holding only the named sample plugins.
pub fn plugins_dir(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in names {
        std::fs::copy(sample(name), dir.path().join(format!("{name}.wasm"))).unwrap();
    }
    dir
}

/// `config_toml` parsed, with the compile cache shared by all tests.
pub fn config(config_toml: &str) -> Config {
    let mut config: Config = toml::from_str(config_toml).expect("test config parses");
    config.cache_dir = Some(target_dir().join("test-component-cache"));
    config
}

/// A host over `dir` under `config`; fails the test if any plugin fails to load.
pub async fn host(config: &Config, dir: &Path) -> (Arc<LiveRegistry>, Arc<Router>) {
    let (live, errors) = autoglm_host::open(config, dir).await.unwrap();
    assert!(errors.is_empty(), "plugins failed to load: {errors:?}");
    let router = live.router();
    (live, router)
}

/// `target/test-plugins/<name>.wasm`, which `just test-plugins` builds from `tests/plugins/`.
pub fn test_plugin(name: &str) -> PathBuf {
    let path = target_dir().join("test-plugins").join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run `just test-plugins` (or `just test`) first",
        path.display()
    );
    path
}

/// A directory holding only the named test plugins.
pub fn test_plugins_dir(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in names {
        std::fs::copy(test_plugin(name), dir.path().join(format!("{name}.wasm"))).unwrap();
    }
    dir
}
