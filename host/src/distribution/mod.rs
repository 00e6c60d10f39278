//! Components in OCI registries: push one, sign it in cosign's keyed format, and pull it
//! pinned by digest into a plugins directory, where hot reload picks it up.
//!
//! The artifact layout is the one wkg (wasm-pkg-tools) and Wassette use: an OCI image
//! manifest whose config is `application/vnd.wasm.config.v0+json` and whose one layer is
//! the component (`application/wasm`). Signatures live under cosign's `sha256-<hex>.sig`
//! tag; [`crate::signing`] checks them.

mod lock;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use oci_client::client::{ClientConfig, ClientProtocol, Config as BlobConfig, ImageLayer};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use tokio_stream::StreamExt as _;

pub use lock::{LOCK_FILE, Lock, LockEntry};

use crate::config::PluginSource;
use crate::registry::is_valid_name;
use crate::signing::{
    self, Bundle, BundleSignature, PAYLOAD_MEDIA_TYPE, SIGNATURE_ANNOTATION, SigningError,
    SigningKeyFile, TrustedKey, WASM_LAYER_MEDIA_TYPE,
};

/// The config media type of a wasm component artifact.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The largest component a pull accepts (the registry's manifest states the size first).
pub const MAX_COMPONENT_BYTES: u64 = 256 << 20;
/// The largest signature payload read (cosign's are a few hundred bytes).
const MAX_PAYLOAD_BYTES: u64 = 64 << 10;
/// The most signatures of one manifest read.
const MAX_SIGNATURES: usize = 16;

/// Why a push, sign or pull failed. Each names the reference and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum DistributionError {
    /// The reference is not `oci://HOST/REPOSITORY(:TAG|@sha256:DIGEST)`.
    #[error(
        "`{0}` is not an OCI reference: write oci://HOST/REPOSITORY:TAG or \
         oci://HOST/REPOSITORY@sha256:DIGEST"
    )]
    BadReference(String),
    /// The plugin name derived from the reference or given is not a valid plugin name.
    #[error(
        "`{0}` cannot name a plugin (1-64 of [a-z0-9_-]); pass --name (or `name` in the source)"
    )]
    BadName(String),
    /// The registry could not be reached.
    #[error("{reference}: the registry did not answer ({reason}); is it running and reachable?")]
    Unreachable {
        /// The reference.
        reference: String,
        /// What the connection said.
        reason: String,
    },
    /// The registry refused or failed a request.
    #[error("{reference}: {reason}")]
    Registry {
        /// The reference.
        reference: String,
        /// What the registry said.
        reason: String,
    },
    /// The registry served bytes that do not hash to the digest they were asked by.
    #[error(
        "{reference}: {what} has digest {found}, but {expected} was asked for; refusing it \
         (the registry's copy is corrupt or was tampered with)"
    )]
    Tampered {
        /// The reference.
        reference: String,
        /// The manifest or the component's layer.
        what: &'static str,
        /// The digest in the manifest.
        expected: String,
        /// The digest of what arrived.
        found: String,
    },
    /// The artifact is not one component.
    #[error("{reference}: {reason}")]
    NotAComponent {
        /// The reference.
        reference: String,
        /// What it is instead.
        reason: String,
    },
    /// The signature check failed (the message names the reference and digest).
    #[error(transparent)]
    Signature(SigningError),
    /// The plugins directory holds a component of that name that this source did not put
    /// there.
    #[error(
        "{} exists and was not pulled from {repository}; remove it, or pull under another \
         --name (or `name` in the source)",
        path.display()
    )]
    Occupied {
        /// The file.
        path: PathBuf,
        /// The source's repository.
        repository: String,
    },
    /// Under `--locked`, a tag now points somewhere other than the lockfile says.
    #[error(
        "{reference}: the tag now resolves to {found}, but {lock} pins {locked}; refusing under \
         --locked (pull without --locked to accept the new digest, or pin the old one with \
         @{locked})"
    )]
    TagMoved {
        /// The reference.
        reference: String,
        /// The lockfile.
        lock: String,
        /// The digest locked.
        locked: String,
        /// The digest the tag has now.
        found: String,
    },
    /// Under `--locked`, a reference the lockfile does not know.
    #[error("{reference} is not in {lock}; pull it once without --locked to record its digest")]
    NotLocked {
        /// The reference.
        reference: String,
        /// The lockfile.
        lock: String,
    },
    /// The reference resolved to a digest other than the one configured.
    #[error("{reference} resolves to {found}, but the source expects {expected}")]
    UnexpectedDigest {
        /// The reference.
        reference: String,
        /// The digest configured.
        expected: String,
        /// The digest found.
        found: String,
    },
    /// Reading or writing local files failed.
    #[error("{}: {reason}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// A registry reference (`oci://HOST/REPOSITORY:TAG` or `...@sha256:DIGEST`) and a client
/// for its registry.
pub struct Remote {
    client: Client,
    auth: RegistryAuth,
    reference: Reference,
    /// As the user wrote it, for messages and the lockfile.
    pub text: String,
}

/// Credentials for a registry given on the command line (over the docker config file).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// User name and password for HTTP Basic (or token) auth.
    pub basic: Option<(String, String)>,
}

impl Remote {
    /// A client for `reference`'s registry. Plain HTTP only for a loopback registry or with
    /// `insecure`; credentials from `credentials`, else the docker config file.
    pub fn new(
        reference: &str,
        insecure: bool,
        credentials: &Credentials,
    ) -> Result<Self, DistributionError> {
        let bad = || DistributionError::BadReference(reference.to_string());
        let raw = reference.strip_prefix("oci://").ok_or_else(bad)?;
        let parsed: Reference = raw.parse().map_err(|_| bad())?;
        let registry = parsed.resolve_registry().to_string();
        // reqwest needs a TLS provider installed; ring is the one the host already links.
        // Installing fails harmlessly when one is there already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let loopback = is_loopback(&registry);
        let protocol = if insecure || loopback {
            ClientProtocol::HttpsExcept(vec![registry.clone()])
        } else {
            ClientProtocol::Https
        };
        let config = ClientConfig {
            protocol,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            // An index (several platforms) is not a component: refuse it rather than pick.
            platform_resolver: None,
            ..Default::default()
        };
        let client = Client::try_from(config).map_err(|e| DistributionError::Registry {
            reference: reference.to_string(),
            reason: format!("cannot set up the HTTP client: {e}"),
        })?;
        let auth = match &credentials.basic {
            Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
            // Stored credentials never travel in clear text off this machine; credentials
            // given on the command line for an --insecure registry are the user's choice.
            None if insecure && !loopback => RegistryAuth::Anonymous,
            None => docker_config_auth(&registry),
        };
        Ok(Self { client, auth, reference: parsed, text: reference.to_string() })
    }

    /// The digest the reference names: its own `@sha256:...`, or what its tag resolves to now.
    pub async fn resolve(&self) -> Result<String, DistributionError> {
        if let Some(digest) = self.reference.digest() {
            return Ok(digest.to_string());
        }
        (self.client.fetch_manifest_digest(&self.reference, &self.auth).await)
            .map_err(|e| self.error(e))
    }

    /// Publish `wasm` as a component artifact under this reference's tag; returns the
    /// manifest digest. The same file always gives the same digest.
    pub async fn push(&self, wasm: Vec<u8>) -> Result<String, DistributionError> {
        let layer = ImageLayer::new(wasm, WASM_LAYER_MEDIA_TYPE.into(), None);
        let layer_digest = layer.sha256_digest();
        // wkg's config shape. A fixed creation time keeps pushes reproducible, the way
        // builds honour SOURCE_DATE_EPOCH.
        let config = serde_json::json!({
            "created": "1970-01-01T00:00:00Z",
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": [layer_digest],
            "component": {"exports": [], "imports": [], "target": null},
        });
        let config = BlobConfig::new(
            serde_json::to_vec(&config).expect("JSON values serialize"),
            WASM_CONFIG_MEDIA_TYPE.into(),
            None,
        );
        let mut manifest = OciImageManifest::build(std::slice::from_ref(&layer), &config, None);
        manifest.media_type = Some(OCI_IMAGE_MEDIA_TYPE.into());
        self.push_image(&self.reference, &[layer], config, &manifest).await
    }

    /// Sign manifest `digest` of this repository with `key`, under cosign's
    /// `sha256-<hex>.sig` tag beside it. The digest comes from the signer (what `push`
    /// returned, or a reference pinned by digest), never from the registry: a key signs
    /// only what its holder chose.
    pub async fn sign(&self, key: &SigningKeyFile, digest: &str) -> Result<(), DistributionError> {
        let payload = signing::payload(&self.repository(), digest);
        let signature = key.sign(&payload);
        let annotations = [(SIGNATURE_ANNOTATION.to_string(), signature)].into();
        let layer = ImageLayer::new(payload, PAYLOAD_MEDIA_TYPE.into(), Some(annotations));
        let diff_id = layer.sha256_digest();
        // Verifiers ignore the config; this is the image config cosign's library writes.
        let config = serde_json::json!({
            "architecture": "", "os": "", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        });
        let config = BlobConfig::new(
            serde_json::to_vec(&config).expect("JSON values serialize"),
            "application/vnd.oci.image.config.v1+json".into(),
            None,
        );
        let mut manifest = OciImageManifest::build(std::slice::from_ref(&layer), &config, None);
        manifest.media_type = Some(OCI_IMAGE_MEDIA_TYPE.into());
        let tag = self.signature_reference(digest);
        self.push_image(&tag, &[layer], config, &manifest).await?;
        Ok(())
    }

    /// `registry/repository`, as a signature payload names it.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.reference.registry(), self.reference.repository())
    }

    /// The digest this reference is pinned to (`@sha256:...`), if it is.
    pub fn pinned(&self) -> Option<&str> {
        self.reference.digest()
    }

    async fn push_image(
        &self,
        target: &Reference,
        layers: &[ImageLayer],
        config: BlobConfig,
        manifest: &OciImageManifest,
    ) -> Result<String, DistributionError> {
        let registry = target.resolve_registry().to_string();
        self.client.store_auth_if_needed(&registry, &self.auth).await;
        for layer in layers {
            let digest = layer.sha256_digest();
            (self.client.push_blob(target, layer.data.clone(), &digest).await)
                .map_err(|e| self.error(e))?;
        }
        (self.client.push_blob(target, config.data.clone(), &manifest.config.digest).await)
            .map_err(|e| self.error(e))?;
        // Our own bytes, so the digest returned is the digest of what the registry stores.
        let body = serde_json::to_vec(manifest).expect("manifests serialize");
        let digest = signing::digest(&body);
        let content_type = http::HeaderValue::from_static(OCI_IMAGE_MEDIA_TYPE);
        (self.client.push_manifest_raw(target, body, content_type).await)
            .map_err(|e| self.error(e))?;
        Ok(digest)
    }

    fn signature_reference(&self, digest: &str) -> Reference {
        Reference::with_tag(
            self.reference.registry().to_string(),
            self.reference.repository().to_string(),
            signing::signature_tag(digest),
        )
    }

    fn at_digest(&self, digest: &str) -> Reference {
        Reference::with_digest(
            self.reference.registry().to_string(),
            self.reference.repository().to_string(),
            digest.to_string(),
        )
    }

    /// The manifest at `digest`, its exact bytes checked against the digest.
    async fn fetch_manifest(&self, digest: &str) -> Result<Vec<u8>, DistributionError> {
        let at = self.at_digest(digest);
        let (manifest, _) =
            (self.client.pull_manifest_raw(&at, &self.auth, &[OCI_IMAGE_MEDIA_TYPE]))
                .await
                .map_err(|e| self.error(e))?;
        let manifest = manifest.to_vec();
        let found = signing::digest(&manifest);
        if found != digest {
            return Err(DistributionError::Tampered {
                reference: self.text.clone(),
                what: "the manifest",
                expected: digest.to_string(),
                found,
            });
        }
        Ok(manifest)
    }

    /// The component `manifest` (of `digest`) names: its one wasm layer, digest checked.
    async fn fetch_component(
        &self,
        digest: &str,
        manifest: &[u8],
    ) -> Result<Vec<u8>, DistributionError> {
        let not_component = |reason: String| DistributionError::NotAComponent {
            reference: self.text.clone(),
            reason,
        };
        let parsed: OciImageManifest = serde_json::from_slice(manifest).map_err(|e| {
            not_component(format!("its manifest is not an OCI image manifest: {e}"))
        })?;
        let layer_digest =
            signing::wasm_layer_digest(manifest).map_err(|e| not_component(e.to_string()))?;
        let layer = (parsed.layers.iter()).find(|l| l.digest == layer_digest).ok_or_else(|| {
            not_component("its manifest's layers disagree with themselves".into())
        })?;
        self.fetch_blob(&self.at_digest(digest), layer, MAX_COMPONENT_BYTES).await
    }

    /// The blob `layer` describes, at most `max` bytes, its digest checked.
    async fn fetch_blob(
        &self,
        at: &Reference,
        layer: &OciDescriptor,
        max: u64,
    ) -> Result<Vec<u8>, DistributionError> {
        let refuse = |reason: String| DistributionError::NotAComponent {
            reference: self.text.clone(),
            reason,
        };
        // Foreign layers name other URLs to fetch from: nothing but the registry is asked.
        if layer.urls.as_ref().is_some_and(|urls| !urls.is_empty()) {
            return Err(refuse("its layer points at other URLs (a foreign layer)".into()));
        }
        let size = u64::try_from(layer.size)
            .map_err(|_| refuse(format!("its layer claims a size of {}", layer.size)))?;
        if size > max {
            return Err(refuse(format!(
                "its layer is {size} bytes, more than the {max} a pull accepts"
            )));
        }
        let mut stream =
            (self.client.pull_blob_stream(at, layer).await).map_err(|e| self.error(e))?.stream;
        // What the manifest claims is reserved only up to a first chunk's worth.
        let mut bytes = Vec::with_capacity(size.min(1 << 20) as usize);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.stream_error(e, &layer.digest, &bytes))?;
            if (bytes.len() + chunk.len()) as u64 > size {
                return Err(self.tampered(&layer.digest, &bytes));
            }
            bytes.extend_from_slice(&chunk);
        }
        if signing::digest(&bytes) != layer.digest {
            return Err(self.tampered(&layer.digest, &bytes));
        }
        Ok(bytes)
    }

    fn tampered(&self, expected: &str, bytes: &[u8]) -> DistributionError {
        DistributionError::Tampered {
            reference: self.text.clone(),
            what: "the component's layer",
            expected: expected.to_string(),
            found: signing::digest(bytes),
        }
    }

    fn stream_error(&self, e: std::io::Error, expected: &str, got: &[u8]) -> DistributionError {
        // The client checks the digest as the last bytes arrive and fails the stream.
        let digest_error = e
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<oci_client::errors::DigestError>().is_some());
        match digest_error {
            true => self.tampered(expected, got),
            false => DistributionError::Unreachable {
                reference: self.text.clone(),
                reason: e.to_string(),
            },
        }
    }

    /// Cosign's signatures of `digest`, empty when the registry holds none.
    async fn fetch_signatures(
        &self,
        digest: &str,
    ) -> Result<Vec<BundleSignature>, DistributionError> {
        let tag = self.signature_reference(digest);
        let manifest = match self.client.pull_image_manifest(&tag, &self.auth).await {
            Ok((manifest, _)) => manifest,
            Err(e) if is_not_found(&e) => return Ok(Vec::new()),
            Err(e) => return Err(self.error(e)),
        };
        let mut signatures = Vec::new();
        let layers = manifest.layers.iter().filter(|l| l.media_type == PAYLOAD_MEDIA_TYPE);
        // More than any signer adds; a registry cannot make a pull fetch thousands.
        for layer in layers.take(MAX_SIGNATURES) {
            let Some(signature) =
                layer.annotations.as_ref().and_then(|a| a.get(SIGNATURE_ANNOTATION))
            else {
                continue;
            };
            let payload = self.fetch_blob(&tag, layer, MAX_PAYLOAD_BYTES).await?;
            signatures.push(BundleSignature {
                payload: BASE64.encode(payload),
                signature: signature.clone(),
            });
        }
        Ok(signatures)
    }

    fn error(&self, e: OciDistributionError) -> DistributionError {
        let reference = self.text.clone();
        match e {
            OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
                DistributionError::Unreachable { reference, reason: e.to_string() }
            }
            OciDistributionError::RegistryError { envelope, .. } if is_unknown(&envelope) => {
                DistributionError::Registry {
                    reference,
                    reason: "the registry has no such repository, tag or digest (push it \
                             first, or check the reference)"
                        .into(),
                }
            }
            OciDistributionError::RegistryError { envelope, .. } => DistributionError::Registry {
                reference,
                reason: format!("the registry refused: {envelope}"),
            },
            OciDistributionError::UnauthorizedError { .. } => DistributionError::Registry {
                reference,
                reason: "the registry wants credentials: log in with `docker login` (autoglm \
                         reads the docker config file), or give `autoglm plugin` --username \
                         and AUTOGLM_REGISTRY_PASSWORD"
                    .into(),
            },
            other => DistributionError::Registry { reference, reason: other.to_string() },
        }
    }
}

/// What to pull and how to check it.
pub struct PullRequest<'a> {
    /// Where it comes from, with its expected digest and keys.
    pub source: &'a PluginSource,
    /// The plugins directory to install into.
    pub dir: &'a Path,
    /// The trusted keys (the config's and the source's).
    pub keys: &'a [TrustedKey],
    /// Whether an unsigned component is refused.
    pub require_signature: bool,
    /// Refuse to resolve tags again: use the lockfile's digests.
    pub locked: bool,
    /// Registry credentials from the command line.
    pub credentials: &'a Credentials,
}

/// What a pull did.
#[derive(Debug)]
pub struct Pulled {
    /// The plugin's name (its file is `NAME.wasm`).
    pub name: String,
    /// The installed file.
    pub path: PathBuf,
    /// The manifest digest.
    pub digest: String,
    /// The trusted key that signed it, when checked.
    pub signer: Option<String>,
    /// False when the directory already held exactly this component (nothing downloaded).
    pub downloaded: bool,
}

/// Pull `request.source` into its directory, recording its digest in `lock`.
pub async fn pull(request: &PullRequest<'_>, lock: &mut Lock) -> Result<Pulled, DistributionError> {
    let source = request.source;
    let remote = Remote::new(&source.reference, source.insecure, request.credentials)?;
    let name = source.plugin_name().to_string();
    if !is_valid_name(&name) {
        return Err(DistributionError::BadName(name));
    }
    let digest = resolve_digest(&remote, source, lock, request.locked).await?;
    let path = request.dir.join(format!("{name}.wasm"));
    let check = request.require_signature || !request.keys.is_empty();
    if let Some(signer) = installed(&path, &digest, request.keys, check) {
        lock.record(&name, &source.reference, &digest);
        return Ok(Pulled { name, path, digest, signer, downloaded: false });
    }
    if let Some(occupant) = occupant(&path, &remote.repository()) {
        return Err(occupant);
    }
    // The signature is checked against the manifest before the component is downloaded:
    // an unsigned or wrongly signed artifact costs a manifest, not its layer.
    let manifest = remote.fetch_manifest(&digest).await?;
    let bundle = Bundle {
        reference: source.reference.clone(),
        manifest: BASE64.encode(&manifest),
        signatures: remote.fetch_signatures(&digest).await?,
    };
    let signer = match check {
        true => Some(
            (bundle.signer(request.keys, &digest, Some(&remote.repository())))
                .map_err(DistributionError::Signature)?,
        ),
        false => None,
    };
    let wasm = remote.fetch_component(&digest, &manifest).await?;
    install(&path, &bundle, &wasm)?;
    lock.record(&name, &source.reference, &digest);
    Ok(Pulled { name, path, digest, signer, downloaded: true })
}

/// Why `path` may not be replaced by a pull from `repository`: it exists, and its
/// signature bundle (if any) says it came from elsewhere.
fn occupant(path: &Path, repository: &str) -> Option<DistributionError> {
    if !path.exists() {
        return None;
    }
    let ours = std::fs::read_to_string(signing::sig_path(path))
        .ok()
        .and_then(|text| serde_json::from_str::<Bundle>(&text).ok())
        .and_then(|bundle| bundle.reference.strip_prefix("oci://").map(str::to_string))
        .is_some_and(|reference| {
            reference.strip_prefix(repository).is_some_and(|rest| rest.starts_with([':', '@']))
        });
    (!ours).then(|| DistributionError::Occupied {
        path: path.to_path_buf(),
        repository: repository.to_string(),
    })
}

/// The digest to pull: pinned by the reference, the source or (under `locked`) the
/// lockfile; else what the tag resolves to now.
async fn resolve_digest(
    remote: &Remote,
    source: &PluginSource,
    lock: &Lock,
    locked: bool,
) -> Result<String, DistributionError> {
    let lock_name = || lock.path.display().to_string();
    let locked_digest = lock.get(&source.reference).map(|e| e.digest.clone());
    let pinned = remote.pinned().is_some() || source.digest.is_some();
    if locked && locked_digest.is_none() && !pinned {
        return Err(DistributionError::NotLocked {
            reference: source.reference.clone(),
            lock: lock_name(),
        });
    }
    let found = remote.resolve().await?;
    if let Some(expected) = &source.digest
        && *expected != found
    {
        return Err(DistributionError::UnexpectedDigest {
            reference: source.reference.clone(),
            expected: expected.clone(),
            found,
        });
    }
    match locked_digest {
        Some(locked_digest) if locked && locked_digest != found => {
            Err(DistributionError::TagMoved {
                reference: source.reference.clone(),
                lock: lock_name(),
                locked: locked_digest,
                found,
            })
        }
        _ => Ok(found),
    }
}

/// Whether `path` already holds the component of manifest `digest` (per its signature
/// bundle); the signer when `check`ed. Anything amiss means: pull again.
fn installed(
    path: &Path,
    digest: &str,
    keys: &[TrustedKey],
    check: bool,
) -> Option<Option<String>> {
    let text = std::fs::read_to_string(signing::sig_path(path)).ok()?;
    let bundle: Bundle = serde_json::from_str(&text).ok()?;
    let manifest = bundle.manifest_bytes().ok()?;
    if signing::digest(&manifest) != digest {
        return None;
    }
    let wasm = std::fs::read(path).ok()?;
    if signing::wasm_layer_digest(&manifest).ok()? != signing::digest(&wasm) {
        return None;
    }
    match check {
        true => Some(Some(bundle.verify(keys, &wasm).ok()?)),
        false => Some(None),
    }
}

/// Write the signature bundle, then the component, each through a temporary file renamed
/// into place: hot reload sees the component only once its signature is there.
fn install(path: &Path, bundle: &Bundle, wasm: &[u8]) -> Result<(), DistributionError> {
    let bundle = serde_json::to_vec_pretty(bundle).expect("bundles serialize");
    write_atomically(&signing::sig_path(path), &bundle)?;
    write_atomically(path, wasm)
}

/// Write `bytes` to `path` through a temporary file beside it (never `*.wasm`, so the
/// watcher ignores it) renamed over it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DistributionError> {
    let io = |e: std::io::Error| DistributionError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut temp = tempfile::Builder::new()
        .prefix(".autoglm-")
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(io)?;
    std::io::Write::write_all(&mut temp, bytes).map_err(io)?;
    // Temporary files are private; components, signatures and lockfiles are not secrets.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        temp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(io)?;
    }
    temp.as_file().sync_all().map_err(io)?;
    temp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// Whether `registry` (`host` or `host:port`) is this machine.
fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => registry.rsplit_once(':').map_or(registry, |(host, _)| host),
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_not_found(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RegistryError { envelope, .. } => is_unknown(envelope),
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::ServerError { code, .. } => *code == 404,
        _ => false,
    }
}

fn is_unknown(envelope: &oci_client::errors::OciEnvelope) -> bool {
    (envelope.errors.iter())
        .any(|e| matches!(e.code, OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown))
}

/// Credentials for `registry` from the docker config file (`$DOCKER_CONFIG/config.json` or
/// `~/.docker/config.json`); anonymous when it has none.
fn docker_config_auth(registry: &str) -> RegistryAuth {
    match docker_credential::get_credential(registry) {
        Ok(docker_credential::DockerCredential::UsernamePassword(user, password)) => {
            RegistryAuth::Basic(user, password)
        }
        Ok(docker_credential::DockerCredential::IdentityToken(token)) => {
            RegistryAuth::Bearer(token)
        }
        Err(_) => RegistryAuth::Anonymous,
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn only_this_machine_is_loopback() {
        for yes in ["127.0.0.1:5000", "localhost:80", "[::1]:5000", "127.3.4.5", "localhost"] {
            assert!(is_loopback(yes), "{yes}");
        }
        for no in ["ghcr.io", "10.0.0.1:5000", "localhost.example.com", "[2001:db8::1]:5000"] {
            assert!(!is_loopback(no), "{no}");
        }
    }
}
