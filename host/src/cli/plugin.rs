//! `autoglm plugin push|pull|sign|keygen`: components in OCI registries, and their
//! signatures (see `autoglm_host::distribution` and `autoglm_host::signing`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use autoglm_host::app::Settings;
use autoglm_host::config::PluginSource;
use autoglm_host::distribution::{self, Credentials, Lock, PullRequest, Remote};
use autoglm_host::signing::{self, SigningKeyFile, TrustedKey};

/// How to reach a registry.
#[derive(Args, Clone)]
pub struct RegistryArgs {
    /// Allow plain HTTP to a registry that is not on this machine (loopback registries
    /// always use plain HTTP).
    #[arg(long)]
    pub insecure: bool,
    /// User name for the registry (the password comes from AUTOGLM_REGISTRY_PASSWORD);
    /// without it, the docker config file's credentials are used.
    #[arg(long, requires = "password")]
    pub username: Option<String>,
    /// The registry password (prefer the environment variable).
    #[arg(long, env = "AUTOGLM_REGISTRY_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

impl RegistryArgs {
    fn credentials(&self) -> Credentials {
        Credentials { basic: self.username.clone().zip(self.password.clone()) }
    }
}

/// `autoglm plugin push FILE oci://... [--sign KEY]`: publish a component, and sign the
/// digest it was pushed as; prints the digest.
pub async fn push(
    file: &Path,
    reference: &str,
    sign: Option<&Path>,
    registry: &RegistryArgs,
) -> anyhow::Result<ExitCode> {
    let key = sign.map(SigningKeyFile::load).transpose()?;
    let wasm = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    anyhow::ensure!(
        wasm.starts_with(b"\0asm"),
        "{} is not a WebAssembly file; push a component built for this host",
        file.display()
    );
    let remote = Remote::new(reference, registry.insecure, &registry.credentials())?;
    let digest = remote.push(wasm).await?;
    eprintln!("pushed {} to {reference}", file.display());
    if let Some(key) = key {
        remote.sign(&key, &digest).await?;
        eprintln!("signed {digest} as {}", signing::signature_tag(&digest));
    }
    println!("{digest}");
    Ok(ExitCode::SUCCESS)
}

/// `autoglm plugin sign (oci://...@sha256:... | FILE) --key KEY`: sign a pushed component
/// (its manifest digest, under cosign's `.sig` tag) or a local file (`FILE.sig`).
pub async fn sign(target: &str, key: &Path, registry: &RegistryArgs) -> anyhow::Result<ExitCode> {
    let key = SigningKeyFile::load(key)?;
    if target.starts_with("oci://") {
        let remote = Remote::new(target, registry.insecure, &registry.credentials())?;
        // A tag names whatever the registry says it does: sign only a digest the signer
        // knows (the one `push` printed).
        let Some(digest) = remote.pinned().map(str::to_string) else {
            anyhow::bail!(
                "{target} is a tag: sign the digest `autoglm plugin push` printed \
                 (oci://HOST/REPOSITORY@sha256:...), or push with --sign KEY"
            );
        };
        remote.sign(&key, &digest).await?;
        eprintln!("signed {target} as {}", signing::signature_tag(&digest));
        return Ok(ExitCode::SUCCESS);
    }
    let file = Path::new(target);
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let sig = signing::sig_path(file);
    distribution::write_atomically(&sig, key.sign(&bytes).as_bytes())?;
    eprintln!("signed {} ({}) into {}", file.display(), signing::digest(&bytes), sig.display());
    Ok(ExitCode::SUCCESS)
}

/// `autoglm plugin keygen PREFIX`: a new ECDSA P-256 key pair, PREFIX.key and PREFIX.pub.
pub fn keygen(prefix: &Path) -> anyhow::Result<ExitCode> {
    let (private, public) = SigningKeyFile::generate()?;
    let with = |ext: &str| {
        let mut name = prefix.as_os_str().to_os_string();
        name.push(ext);
        PathBuf::from(name)
    };
    let (key, public_path) = (with(".key"), with(".pub"));
    for path in [&key, &public_path] {
        anyhow::ensure!(!path.exists(), "{} exists; choose another prefix", path.display());
    }
    write_private(&key, private.as_bytes())?;
    std::fs::write(&public_path, public)
        .with_context(|| format!("cannot write {}", public_path.display()))?;
    eprintln!(
        "wrote {} (keep it secret) and {} (give it to operators: [plugins] trusted_keys)",
        key.display(),
        public_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file =
        options.open(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}

/// What `autoglm plugin pull` was asked.
pub struct Pull<'a> {
    /// The reference.
    pub reference: String,
    /// The plugin name to install as.
    pub name: Option<String>,
    /// Extra trusted keys.
    pub keys: Vec<PathBuf>,
    /// Use autoglm.lock's digests.
    pub locked: bool,
    /// How to reach the registry.
    pub registry: &'a RegistryArgs,
}

/// `autoglm plugin pull oci://...`: install a component into the plugins directory,
/// checked against its digest and, where keys apply or the config requires it, its
/// signature; the digest goes into autoglm.lock.
pub async fn pull(settings: &Settings, pull: Pull<'_>) -> anyhow::Result<ExitCode> {
    let plugins = &settings.config.plugins;
    let configured = plugins.sources.iter().find(|s| s.reference == pull.reference);
    let mut source = configured.cloned().unwrap_or_else(|| PluginSource {
        reference: pull.reference.clone(),
        ..Default::default()
    });
    source.name = pull.name.or(source.name);
    source.insecure |= pull.registry.insecure;
    source.keys.extend(pull.keys);
    let name = source.plugin_name().to_string();
    let mut keys = plugins.keys_for(&name);
    keys.extend(source.keys.iter().cloned());
    keys.sort();
    keys.dedup();
    let keys = TrustedKey::load_all(&keys)?;
    let mut lock = Lock::load(&settings.lock_path)?;
    let credentials = pull.registry.credentials();
    let request = PullRequest {
        source: &source,
        dir: &settings.plugins_dir,
        keys: &keys,
        require_signature: plugins.require_signatures,
        locked: pull.locked,
        credentials: &credentials,
    };
    let pulled = distribution::pull(&request, &mut lock).await?;
    lock.save()?;
    let signer =
        pulled.signer.map_or("signature not checked".to_string(), |s| format!("signed by {s}"));
    match pulled.downloaded {
        true => eprintln!(
            "installed {} as {} ({}, {signer})",
            source.reference,
            pulled.path.display(),
            pulled.digest
        ),
        false => eprintln!("{} is up to date ({}, {signer})", pulled.path.display(), pulled.digest),
    }
    println!("{}", pulled.digest);
    Ok(ExitCode::SUCCESS)
}

/// The signature facts `autoglm plugin inspect` shows for `file`: where it was pulled from,
/// its digest and who signed it (checked with `keys` when given).
pub fn provenance(
    file: &Path,
    bytes: &[u8],
    keys: &[PathBuf],
) -> anyhow::Result<serde_json::Value> {
    let sig = signing::sig_path(file);
    if !sig.exists() {
        return Ok(serde_json::json!({"signed": false, "sha256": signing::digest(bytes)}));
    }
    let text = std::fs::read_to_string(&sig)?;
    let bundle: Option<signing::Bundle> = serde_json::from_str(&text).ok();
    let (reference, digest, layer) = match &bundle {
        Some(bundle) => {
            let manifest = bundle.manifest_bytes()?;
            let layer = signing::wasm_layer_digest(&manifest).ok();
            (Some(bundle.reference.clone()), Some(signing::digest(&manifest)), layer)
        }
        None => (None, None, None),
    };
    // A bundle beside other bytes (an interrupted or manual replacement) describes nothing.
    let describes_file = layer.as_deref().is_none_or(|layer| layer == signing::digest(bytes));
    let signer = match keys.is_empty() {
        true => serde_json::Value::from("not checked: pass --key PUBLIC_KEY"),
        false => {
            let keys = TrustedKey::load_all(keys)?;
            match signing::verify_file(&keys, file, bytes) {
                Ok(signer) => signer.into(),
                Err(e) => format!("NOT VERIFIED: {e}").into(),
            }
        }
    };
    Ok(serde_json::json!({
        "signed": true,
        "matches_file": describes_file,
        "signature": sig,
        "reference": reference,
        "digest": digest,
        "sha256": signing::digest(bytes),
        "signer": signer,
    }))
}
