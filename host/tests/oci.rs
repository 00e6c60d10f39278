//! Plugins from an OCI registry: Debian's `docker-registry` (the CNCF distribution registry,
//! 2.8) on 127.0.0.1, the `autoglm` binary pushing, signing and pulling, and hosts and a
//! real `autoglm serve` loading what it installed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use autoglm_host::config::Config;
use autoglm_test_support::host::{ServeProcess, autoglm_bin, call, config, host, http, sample};
use serde_json::{Value, json};

/// A registry on a free loopback port with its storage in a temporary directory.
struct Registry {
    child: Child,
    addr: SocketAddr,
    storage: tempfile::TempDir,
    _config: tempfile::TempDir,
}

impl Registry {
    async fn start() -> Registry {
        let addr = free_addr();
        let storage = tempfile::tempdir().unwrap();
        let config = tempfile::tempdir().unwrap();
        let file = config.path().join("registry.yml");
        let yaml = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  \
             filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            storage.path().display()
        );
        std::fs::write(&file, yaml).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry runs (just test installs Debian's docker-registry)");
        let registry = Registry { child, addr, storage, _config: config };
        let started = Instant::now();
        while !answers(addr).await {
            assert!(started.elapsed() < Duration::from_secs(20), "the registry never started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        registry
    }

    fn reference(&self, repository_and_tag: &str) -> String {
        format!("oci://{}/{repository_and_tag}", self.addr)
    }

    /// Where the registry keeps the blob `digest` on disk.
    fn blob(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        (self.storage.path().join("docker/registry/v2/blobs/sha256"))
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn answers(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_ok()
        && http(addr, "GET", "/v2/", &[], "").await.status == 200
}

/// A loopback address nothing listens on (yet).
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Run `autoglm ARGS` without the user's docker credentials.
fn autoglm<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(autoglm_bin())
        .args(args)
        .env("DOCKER_CONFIG", "/nonexistent")
        .env_remove("AUTOGLM_CONFIG")
        .env_remove("AUTOGLM_PLUGINS")
        .output()
        .unwrap()
}

/// `autoglm ARGS`, which must succeed; its stdout, trimmed.
fn ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let output = autoglm(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "autoglm failed: {stderr}");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// `autoglm ARGS`, which must fail; its stderr.
fn refused<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let output = autoglm(args);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!output.status.success(), "autoglm should have failed: {stderr}");
    stderr
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A work directory with key pairs `ops` and `other`, a plugins directory, and a config
/// that requires signatures by `ops`.
struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Work {
        let work = Work { dir: tempfile::tempdir().unwrap() };
        for name in ["ops", "other"] {
            ok(["plugin", "keygen", s(&work.path(name))]);
        }
        std::fs::create_dir(work.plugins()).unwrap();
        work.config("[plugins]\nrequire_signatures = true\ntrusted_keys = [\"ops.pub\"]\n");
        work
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn plugins(&self) -> PathBuf {
        self.path("plugins")
    }

    fn config(&self, toml: &str) -> PathBuf {
        let path = self.path("autoglm.toml");
        std::fs::write(&path, toml).unwrap();
        path
    }

    /// `autoglm plugin pull REFERENCE EXTRA...` under this work's config and plugins.
    fn pull_args(&self, reference: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> =
            ["plugin", "pull", reference, "--config"].into_iter().map(String::from).collect();
        args.push(s(&self.path("autoglm.toml")).into());
        args.extend(["--plugins".into(), s(&self.plugins()).into()]);
        args.extend(extra.iter().map(|e| e.to_string()));
        args
    }

    fn lock(&self) -> String {
        std::fs::read_to_string(self.path("autoglm.lock")).unwrap()
    }
}

/// Push sample `plugin` to `repository:tag`, signed by `key` when given; its digest.
fn publish(
    registry: &Registry,
    work: &Work,
    plugin: &str,
    target: &str,
    key: Option<&str>,
) -> String {
    let reference = registry.reference(target);
    let file = sample(plugin);
    let digest = match key {
        Some(key) => {
            let key = work.path(&format!("{key}.key"));
            ok(["plugin", "push", s(&file), &reference, "--sign", s(&key)])
        }
        None => ok(["plugin", "push", s(&file), &reference]),
    };
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{digest}");
    digest
}

#[tokio::test]
async fn a_signed_component_is_pushed_pulled_loaded_and_called() {
    let registry = Registry::start().await;
    let work = Work::new();
    let reference = registry.reference("tools/weather:v1");
    let digest = publish(&registry, &work, "weather", "tools/weather:v1", Some("ops"));
    assert_eq!(
        ok(["plugin", "push", s(&sample("weather")), &reference]),
        digest,
        "the same file pushes to the same digest"
    );
    // A tag is whatever the registry says: only a digest is signed.
    let ops_key = work.path("ops.key");
    let by_tag = refused(["plugin", "sign", &reference, "--key", s(&ops_key)]);
    assert!(by_tag.contains("is a tag"), "{by_tag}");
    let by_digest = format!("oci://{}/tools/weather@{digest}", registry.addr);
    ok(["plugin", "sign", &by_digest, "--key", s(&ops_key)]);

    assert_eq!(ok(work.pull_args(&reference, &[])), digest);
    let installed = work.plugins().join("weather.wasm");
    assert_eq!(std::fs::read(&installed).unwrap(), std::fs::read(sample("weather")).unwrap());
    assert!(work.plugins().join("weather.wasm.sig").is_file(), "the signature is installed");
    let lock = work.lock();
    assert!(lock.contains(&reference) && lock.contains(&digest), "{lock}");

    // Loaded under the same policy as `serve`, and called.
    let mut loaded = Config::load(&work.path("autoglm.toml")).unwrap();
    loaded.cache_dir = config("").cache_dir;
    let host = host(&loaded, &work.plugins()).await;
    let weather = call(&host, "weather.get_weather", &json!({"location": "Oslo"})).await.unwrap();
    assert_eq!(weather["city"], "Oslo");

    let inspect = ok(["plugin", "inspect", s(&installed), "--key", s(&work.path("ops.pub"))]);
    let provenance = &serde_json::from_str::<Value>(&inspect).unwrap()["provenance"];
    assert_eq!(provenance["reference"], reference.as_str());
    assert_eq!(provenance["digest"], digest.as_str());
    assert!(provenance["signer"].as_str().unwrap().ends_with("ops.pub"), "{provenance}");

    // Pulling again downloads nothing: the file is not rewritten.
    let modified = std::fs::metadata(&installed).unwrap().modified().unwrap();
    let again = autoglm(work.pull_args(&reference, &[]));
    assert!(String::from_utf8_lossy(&again.stderr).contains("up to date"));
    assert_eq!(std::fs::metadata(&installed).unwrap().modified().unwrap(), modified);
    // Pinned by digest it needs no registry at all.
    let pinned = format!("oci://{}/tools/weather@{digest}", registry.addr);
    drop(registry);
    assert_eq!(ok(work.pull_args(&pinned, &[])), digest);
    assert_eq!(std::fs::metadata(&installed).unwrap().modified().unwrap(), modified);
}

#[tokio::test]
async fn unsigned_wrongly_signed_tampered_and_unreachable_components_are_refused() {
    let registry = Registry::start().await;
    let work = Work::new();
    publish(&registry, &work, "weather", "tools/weather:v1", Some("ops"));
    ok(work.pull_args(&registry.reference("tools/weather:v1"), &[]));
    let weather = std::fs::read(work.plugins().join("weather.wasm")).unwrap();

    publish(&registry, &work, "calculator", "tools/calculator:v1", None);
    let unsigned = refused(work.pull_args(&registry.reference("tools/calculator:v1"), &[]));
    assert!(unsigned.contains("tools/calculator") && unsigned.contains("not signed"), "{unsigned}");

    publish(&registry, &work, "units", "tools/units:v1", Some("other"));
    let wrong = refused(work.pull_args(&registry.reference("tools/units:v1"), &[]));
    assert!(wrong.contains("not by a trusted key") && wrong.contains("ops.pub"), "{wrong}");

    // A layer changed in the registry's storage, same length: its digest no longer matches.
    publish(&registry, &work, "text", "tools/text:v1", Some("ops"));
    let text = std::fs::read(sample("text")).unwrap();
    let layer = registry.blob(&autoglm_host::signing::digest(&text));
    let mut bytes = std::fs::read(&layer).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&layer, bytes).unwrap();
    let tampered = refused(work.pull_args(&registry.reference("tools/text:v1"), &[]));
    assert!(tampered.contains("tampered"), "{tampered}");

    let down = format!("oci://{}/tools/gone:v1", free_addr());
    let unreachable = refused(work.pull_args(&down, &[]));
    assert!(unreachable.contains("did not answer"), "{unreachable}");

    for name in ["calculator", "units", "text", "gone"] {
        let file = work.plugins().join(format!("{name}.wasm"));
        assert!(!file.exists() && !autoglm_host::signing::sig_path(&file).exists(), "{name}");
    }
    assert_eq!(std::fs::read(work.plugins().join("weather.wasm")).unwrap(), weather);
}

#[tokio::test]
async fn a_moved_tag_is_refused_under_locked() {
    let registry = Registry::start().await;
    let work = Work::new();
    work.config("");
    let reference = registry.reference("tools/moving:v1");
    let first = publish(&registry, &work, "weather", "tools/moving:v1", None);
    assert_eq!(ok(work.pull_args(&reference, &[])), first);
    let second = publish(&registry, &work, "text", "tools/moving:v1", None);
    assert_ne!(first, second);

    let moved = refused(work.pull_args(&reference, &["--locked"]));
    assert!(
        moved.contains(&first) && moved.contains(&second) && moved.contains("--locked"),
        "{moved}"
    );
    let installed = work.plugins().join("moving.wasm");
    assert_eq!(std::fs::read(&installed).unwrap(), std::fs::read(sample("weather")).unwrap());
    assert!(work.lock().contains(&first));

    let other = registry.reference("tools/other:v1");
    let unknown = refused(work.pull_args(&other, &["--locked"]));
    assert!(unknown.contains("autoglm.lock"), "{unknown}");

    assert_eq!(ok(work.pull_args(&reference, &[])), second);
    assert_eq!(std::fs::read(&installed).unwrap(), std::fs::read(sample("text")).unwrap());
    assert!(work.lock().contains(&second) && !work.lock().contains(&first));
}

#[tokio::test]
async fn serve_pulls_its_sources_and_checks_the_directory_s_signatures() {
    let registry = Registry::start().await;
    let work = Work::new();
    publish(&registry, &work, "weather", "tools/weather:v1", Some("ops"));
    // Local files: one signed by ops, one unsigned, one signed by another key.
    for (plugin, key) in [("calculator", Some("ops")), ("units", None), ("notes", Some("other"))] {
        let file = work.plugins().join(format!("{plugin}.wasm"));
        std::fs::copy(sample(plugin), &file).unwrap();
        if let Some(key) = key {
            ok(["plugin", "sign", s(&file), "--key", s(&work.path(&format!("{key}.key")))]);
        }
    }
    let gone = format!("oci://{}/tools/gone:v1", free_addr());
    let config = work.config(&format!(
        "cache_dir = {:?}\n[plugins]\nrequire_signatures = true\ntrusted_keys = [\"ops.pub\"]\n\
         [[plugins.sources]]\nreference = {:?}\n[[plugins.sources]]\nreference = {gone:?}\n",
        config("").cache_dir.unwrap(),
        registry.reference("tools/weather:v1"),
    ));
    let serve = ServeProcess::start(["--config", s(&config), "--plugins", s(&work.plugins())]);
    serve.ready().await;
    let tool = |name: &str| format!("/v1/tools/{name}/call");
    let weather =
        http(serve.addr, "POST", &tool("weather.get_weather"), &[], r#"{"location": "Lima"}"#)
            .await;
    assert_eq!(weather.status, 200, "{}", weather.body);
    assert_eq!(weather.json()["result"]["city"], "Lima");
    let sum =
        http(serve.addr, "POST", &tool("calculator.evaluate"), &[], r#"{"expression": "2+3"}"#)
            .await;
    assert_eq!(sum.status, 200, "{}", sum.body);
    for refused in ["units.convert", "notes.list"] {
        let reply = http(serve.addr, "POST", &tool(refused), &[], "{}").await;
        assert_eq!(reply.status, 404, "{refused} must not load: {}", reply.body);
    }
    let log = serve.log.lock().unwrap().join("\n");
    assert!(log.contains("untrusted_plugin") && log.contains("units.wasm.sig"), "{log}");
    assert!(log.contains("not by a trusted key") && log.contains("ops.pub"), "{log}");
    assert!(log.contains("tools/gone") && log.contains("did not answer"), "{log}");
    assert!(work.lock().contains("tools/weather:v1"), "the lockfile is beside the config");
}
