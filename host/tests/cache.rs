//! The compile cache: compiled native code is loaded only from a directory no other user
//! can write to, damaged entries are recompiled, and compiling never blocks the async
//! workers.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use autoglm_host::config::Config;
use autoglm_host::registry::load_plugin;
use autoglm_host::runtime::Runtime;
use autoglm_test_support::host::{call, host, plugins_dir, sample};
use serde_json::json;

/// A test config whose compile cache is `dir` (not the cache shared by the other tests,
/// so each test sees its own first compilation).
fn config_with_cache(dir: &Path) -> Config {
    let mut config = autoglm_test_support::host::config("");
    config.cache_dir = Some(dir.to_path_buf());
    config
}

/// The compiled entries (`*.cwasm`) in `dir`.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = (std::fs::read_dir(dir).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    found.sort();
    found
}

/// The one entry in `dir`; fails when there is not exactly one.
fn only_entry(dir: &Path) -> PathBuf {
    let found = entries(dir);
    assert_eq!(found.len(), 1, "one compiled entry in {}: {found:?}", dir.display());
    found.into_iter().next().unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The uid this test runs as: the owner of a file it creates.
fn my_uid() -> u32 {
    tempfile::tempfile().unwrap().metadata().unwrap().uid()
}

fn refusal(config: &Config) -> String {
    match autoglm_host::app::runtime(config) {
        Ok(_) => panic!("the cache {:?} must be refused", config.cache_dir),
        Err(error) => format!("{error:#}"),
    }
}

#[test]
fn a_cache_directory_others_can_write_to_is_refused_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    for loose in [0o777, 0o770, 0o720, 0o702] {
        let dir = tmp.path().join(format!("cache-{loose:o}"));
        std::fs::create_dir(&dir).unwrap();
        chmod(&dir, loose);
        let message = refusal(&config_with_cache(&dir));
        assert!(message.contains(&dir.display().to_string()), "names the directory: {message}");
        assert!(message.contains(&format!("chmod 700 {}", dir.display())), "the fix: {message}");
        assert!(message.contains("`cache_dir`"), "the other way out: {message}");
        assert_eq!(mode(&dir), loose, "the host leaves a refused directory as it was");
    }
    // Others may read (a cache made by an earlier version, 0755): code reveals nothing
    // the plugins do not, and it cannot be planted.
    let readable = tmp.path().join("cache-755");
    std::fs::create_dir(&readable).unwrap();
    chmod(&readable, 0o755);
    autoglm_host::app::runtime(&config_with_cache(&readable)).unwrap();
}

#[test]
fn a_cache_directory_another_user_can_swap_out_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    // Our own 0700 cache inside a directory everyone may write to (and rename in).
    let shared = tmp.path().join("shared");
    let dir = shared.join("cache");
    std::fs::create_dir_all(&dir).unwrap();
    chmod(&dir, 0o700);
    chmod(&shared, 0o777);
    let message = refusal(&config_with_cache(&dir));
    assert!(message.contains(&dir.display().to_string()), "names the directory: {message}");
    assert!(message.contains(&format!("chmod o-w {}", shared.display())), "the fix: {message}");
    // The sticky bit (as on /tmp) stops others renaming what is not theirs.
    chmod(&shared, 0o1777);
    autoglm_host::app::runtime(&config_with_cache(&dir)).unwrap();
}

#[test]
fn a_cache_directory_owned_by_another_user_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = match my_uid() {
        // As root we can make one; otherwise `/` is someone else's (root's).
        0 => {
            let dir = tmp.path().join("theirs");
            std::fs::create_dir(&dir).unwrap();
            chmod(&dir, 0o700);
            std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
            dir
        }
        _ => PathBuf::from("/"),
    };
    let message = refusal(&config_with_cache(&dir));
    assert!(message.contains(&dir.display().to_string()), "names the directory: {message}");
    assert!(message.contains("owned by uid"), "says why: {message}");
    assert!(message.contains("`cache_dir`"), "the way out: {message}");
}

#[test]
fn a_fresh_cache_is_private_and_a_restart_loads_from_it() {
    let tmp = tempfile::tempdir().unwrap();
    // Two missing parents: every directory the host creates is 0700.
    let dir = tmp.path().join("a/b/components");
    let config = config_with_cache(&dir);
    let bytes = std::fs::read(sample("weather")).unwrap();

    let runtime = Runtime::new(&config.wasm, config.cache_dir.clone()).unwrap();
    for created in [tmp.path().join("a"), tmp.path().join("a/b"), dir.clone()] {
        assert_eq!(mode(&created), 0o700, "{} is private", created.display());
    }
    runtime.compile("weather", &bytes).unwrap();
    let entry = only_entry(&dir);
    assert_eq!(mode(&entry), 0o600, "compiled code is readable by this user alone");
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "no temporary files left behind: {names:?}");
    let written = std::fs::metadata(&entry).unwrap();
    drop(runtime);

    // A restart: the entry is loaded, not rewritten (a rewrite renames a new file in).
    let restarted = Runtime::new(&config.wasm, config.cache_dir.clone()).unwrap();
    restarted.compile("weather", &bytes).unwrap();
    let loaded = std::fs::metadata(only_entry(&dir)).unwrap();
    assert_eq!(
        (loaded.ino(), loaded.modified().unwrap()),
        (written.ino(), written.modified().unwrap())
    );
    assert_eq!(mode(&dir), 0o700);
}

/// A fresh host (a restart) over `plugins`, asked for Beijing's weather.
async fn weather(config: &Config, plugins: &Path) -> serde_json::Value {
    let host = host(config, plugins).await;
    let answer = call(&host, "weather.get_weather", &json!({"location": "Beijing"})).await;
    answer.unwrap_or_else(|e| panic!("weather answers: {e:?}"))
}

/// wasmtime refuses an entry whose header or layout is damaged (it does not check the
/// code itself: bytes flipped inside `.text` load as they are, which is why only a
/// directory no one else can write to is trusted). A refused entry is recompiled and
/// replaced, and the plugin serves.
#[tokio::test]
async fn a_damaged_entry_is_recompiled_and_the_plugin_still_works() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let config = config_with_cache(&dir);
    let plugins = plugins_dir(&["weather"]);
    let first = weather(&config, plugins.path()).await;
    let entry = only_entry(&dir);
    let good = std::fs::read(&entry).unwrap();

    let truncated = good[..good.len() / 2].to_vec();
    let mut bad_header = good.clone();
    bad_header[..64].iter_mut().for_each(|b| *b ^= 0xa5);
    for (damage, bytes) in [("truncated in the middle", truncated), ("bad header", bad_header)] {
        std::fs::write(&entry, &bytes).unwrap();
        let damaged = std::fs::metadata(&entry).unwrap().ino();
        let answer = weather(&config, plugins.path()).await;
        assert_eq!(answer, first, "{damage}: the recompiled plugin answers as before");
        let replaced = std::fs::metadata(only_entry(&dir)).unwrap();
        assert_ne!(replaced.ino(), damaged, "{damage}: the entry was rewritten");
        assert_eq!(replaced.len(), good.len() as u64, "{damage}: rewritten whole");
        assert_eq!(replaced.mode() & 0o777, 0o600);
    }
}

/// On a single-threaded runtime, a timer task keeps firing while a plugin compiles: the
/// compilation runs on the blocking pool, not on the one async worker. Ticks are counted
/// only while the cache holds no entry yet, i.e. before the compilation finished; had the
/// compilation run on the worker, no task could run until it had written the entry.
#[tokio::test(flavor = "current_thread")]
async fn async_tasks_keep_running_while_a_plugin_compiles() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let config = config_with_cache(&dir);
    let runtime = Runtime::new(&config.wasm, config.cache_dir.clone()).unwrap();
    assert!(entries(&dir).is_empty(), "an empty cache: the load compiles");

    let ticks_while_compiling = Arc::new(AtomicUsize::new(0));
    let ticker = tokio::spawn({
        let (ticks, dir) = (ticks_while_compiling.clone(), dir.clone());
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                if entries(&dir).is_empty() {
                    ticks.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    let plugin = load_plugin(&runtime, &config, &sample("weather")).await.unwrap();
    ticker.abort();
    assert_eq!(plugin.name, "weather");
    only_entry(&dir);
    let ticks = ticks_while_compiling.load(Ordering::Relaxed);
    assert!(ticks >= 1, "the timer fired {ticks} times while the plugin compiled");
}
