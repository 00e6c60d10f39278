//! Signatures on components, in cosign's keyed formats: ECDSA P-256 over SHA-256, keys as
//! PEM (PKCS#8 private, SPKI public), signatures as base64 of their ASN.1 DER encoding.
//!
//! Two things are signed:
//! - a local file (`autoglm plugin sign FILE`): the signature of its bytes, base64, in
//!   `FILE.sig` beside it, which is what `cosign sign-blob --key` prints;
//! - a component in a registry: cosign's simple-signing payload naming the manifest digest
//!   (the `sha256-<hex>.sig` tag holds it). A pull installs that payload, its signature and
//!   the manifest as a [`Bundle`] in `FILE.sig`, so the chain from a trusted key to the
//!   file's bytes can be checked again at every load, offline.
//!
//! This module does no I/O on the network; `crate::distribution` talks to registries.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{DerSignature, Signature, SigningKey, VerifyingKey};
use p256::elliptic_curve::Generate as _;
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The annotation of a signature layer that holds the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The media type of a signature layer (the payload).
pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The `critical.type` of a payload that signs a manifest.
pub const PAYLOAD_TYPE: &str = "cosign container image signature";
/// The media type of a component layer (the wasm OCI artifact layout of wkg and Wassette).
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";

/// Why a signature, a key or a bundle was refused.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// A key file could not be read or is not a P-256 key in the expected PEM form.
    #[error("key {}: {reason}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The component has no signature where one is required.
    #[error(
        "it is not signed ({digest}): no {} beside it (sign it with `autoglm plugin sign FILE \
         --key KEY`, or pull it from a registry where it is signed)",
        sig.display()
    )]
    Unsigned {
        /// Where the signature was looked for.
        sig: PathBuf,
        /// The file's digest.
        digest: String,
    },
    /// A pulled component whose registry holds no signature of it.
    #[error(
        "{reference} ({digest}) is not signed: its registry has no {tag} tag (sign it with \
         `autoglm plugin sign {reference} --key KEY`)"
    )]
    UnsignedImage {
        /// The reference.
        reference: String,
        /// The manifest digest.
        digest: String,
        /// The signature tag looked for.
        tag: String,
    },
    /// The signature is well formed but no trusted key made it.
    #[error("{what} is signed, but not by a trusted key (expected one of: {})", keys.join(", "))]
    WrongKey {
        /// What was signed: a file, or a manifest digest.
        what: String,
        /// The trusted keys tried, by file.
        keys: Vec<String>,
    },
    /// No trusted key is configured, so nothing can be verified.
    #[error(
        "no trusted keys are configured to check its signature: add public keys (PEM) to \
         [plugins] trusted_keys or pass --key"
    )]
    NoKeys,
    /// A signature, payload or bundle is not in the expected form.
    #[error("{0}")]
    Malformed(String),
    /// What is signed is not what was fetched or installed.
    #[error("{what} has digest {found}, but its signature is for {expected}")]
    DigestMismatch {
        /// Which object.
        what: String,
        /// The digest the signature names.
        expected: String,
        /// The digest of the bytes at hand.
        found: String,
    },
}

/// A public key whose signatures are trusted, with the file it came from (for messages).
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// Where the key came from, as the operator wrote it.
    pub name: String,
    key: VerifyingKey,
}

impl TrustedKey {
    /// Read an SPKI PEM public key (`-----BEGIN PUBLIC KEY-----`, as `cosign.pub` is).
    pub fn load(path: &Path) -> Result<Self, SigningError> {
        let key_error = |reason: String| SigningError::Key { path: path.to_path_buf(), reason };
        let pem = std::fs::read_to_string(path).map_err(|e| key_error(e.to_string()))?;
        let key = VerifyingKey::from_public_key_pem(&pem).map_err(|e| {
            key_error(format!("not an ECDSA P-256 public key in SPKI PEM form ({e})"))
        })?;
        Ok(Self { name: path.display().to_string(), key })
    }

    /// Read every key of `paths`.
    pub fn load_all(paths: &[PathBuf]) -> Result<Vec<Self>, SigningError> {
        paths.iter().map(|p| Self::load(p)).collect()
    }
}

/// A private key that signs (PKCS#8 PEM, `-----BEGIN PRIVATE KEY-----`).
pub struct SigningKeyFile {
    key: SigningKey,
}

impl SigningKeyFile {
    /// Read a PKCS#8 PEM private key. Cosign's own encrypted `cosign.key` is not read:
    /// convert it, or make one with `autoglm plugin keygen`.
    pub fn load(path: &Path) -> Result<Self, SigningError> {
        let key_error = |reason: String| SigningError::Key { path: path.to_path_buf(), reason };
        let pem = std::fs::read_to_string(path).map_err(|e| key_error(e.to_string()))?;
        if pem.contains("ENCRYPTED SIGSTORE PRIVATE KEY") || pem.contains("ENCRYPTED COSIGN") {
            return Err(key_error(
                "this is cosign's encrypted key format, which autoglm does not read; use a \
                 PKCS#8 PEM key (`autoglm plugin keygen`, or `openssl genpkey -algorithm EC \
                 -pkeyopt ec_paramgen_curve:P-256`)"
                    .into(),
            ));
        }
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
            key_error(format!("not an ECDSA P-256 private key in PKCS#8 PEM form ({e})"))
        })?;
        Ok(Self { key })
    }

    /// A new random key pair as PEM: (private PKCS#8, public SPKI).
    pub fn generate() -> Result<(String, String), SigningError> {
        let key = SigningKey::generate();
        let malformed = |e: String| SigningError::Malformed(format!("encoding the key: {e}"));
        let private = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| malformed(e.to_string()))?;
        let public = (key.verifying_key().to_public_key_pem(LineEnding::LF))
            .map_err(|e| malformed(e.to_string()))?;
        Ok((private.to_string(), public))
    }

    /// The base64 DER signature of `bytes`.
    pub fn sign(&self, bytes: &[u8]) -> String {
        let signature: DerSignature = self.key.sign(bytes);
        BASE64.encode(signature.as_bytes())
    }
}

/// The trusted key of `keys` that made `signature` (base64 DER) over `bytes`.
pub fn verify<'k>(
    keys: &'k [TrustedKey],
    bytes: &[u8],
    signature: &str,
    what: &str,
) -> Result<&'k TrustedKey, SigningError> {
    if keys.is_empty() {
        return Err(SigningError::NoKeys);
    }
    let der = BASE64.decode(signature.trim()).map_err(|e| {
        SigningError::Malformed(format!("the signature of {what} is not base64: {e}"))
    })?;
    let signature = Signature::from_der(&der).map_err(|_| {
        SigningError::Malformed(format!(
            "the signature of {what} is not an ASN.1 DER ECDSA signature"
        ))
    })?;
    keys.iter().find(|k| k.key.verify(bytes, &signature).is_ok()).ok_or_else(|| {
        SigningError::WrongKey {
            what: what.to_string(),
            keys: keys.iter().map(|k| k.name.clone()).collect(),
        }
    })
}

/// `sha256:<hex>` of `bytes`, the form OCI digests take.
pub fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Cosign's simple-signing payload for the manifest `digest` of `repository`
/// (`registry/repo`), byte for byte as cosign writes it (Go's field order, no spaces).
pub fn payload(repository: &str, digest: &str) -> Vec<u8> {
    let payload = Payload {
        critical: Critical {
            identity: Identity { docker_reference: repository.to_string() },
            image: Image { docker_manifest_digest: digest.to_string() },
            kind: PAYLOAD_TYPE.to_string(),
        },
        optional: None,
    };
    serde_json::to_vec(&payload).expect("a payload of strings serializes")
}

/// What a verified payload signs: the repository it names (`registry/repo`) and the
/// manifest digest; refuses payloads of another type.
pub fn signed_image(payload: &[u8]) -> Result<(String, String), SigningError> {
    let payload: Payload = serde_json::from_slice(payload).map_err(|e| {
        SigningError::Malformed(format!("the signature payload is not cosign's JSON: {e}"))
    })?;
    if payload.critical.kind != PAYLOAD_TYPE {
        return Err(SigningError::Malformed(format!(
            "the signature payload is a `{}`, not a `{PAYLOAD_TYPE}`",
            payload.critical.kind
        )));
    }
    Ok((payload.critical.identity.docker_reference, payload.critical.image.docker_manifest_digest))
}

#[derive(Serialize, Deserialize)]
struct Payload {
    critical: Critical,
    optional: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Serialize, Deserialize)]
struct Critical {
    identity: Identity,
    image: Image,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Serialize, Deserialize)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Serialize, Deserialize)]
struct Image {
    // Cosign's own spec spells it with a capital D; cosign writes it in lower case.
    #[serde(rename = "docker-manifest-digest", alias = "Docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// What a pull installs beside a component (`FILE.sig`): where it came from, the manifest
/// that names its layer, and cosign's signatures of that manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bundle {
    /// The reference it was pulled by (`oci://host/repo:tag`).
    pub reference: String,
    /// The manifest, base64 of its exact bytes (its sha256 is the digest signed).
    pub manifest: String,
    /// The signatures found: payload (base64 of its exact bytes) and signature (base64 DER).
    pub signatures: Vec<BundleSignature>,
}

/// One cosign signature of a manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleSignature {
    /// The simple-signing payload, base64 of its exact bytes.
    pub payload: String,
    /// Base64 DER ECDSA signature of the payload.
    pub signature: String,
}

/// The signature file of a component file: `FILE.sig` (`echo.wasm.sig`).
pub fn sig_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_os_string();
    name.push(".sig");
    PathBuf::from(name)
}

/// Check `bytes` (the component file at `file`) against its `FILE.sig`: a blob signature
/// (base64) or a pulled [`Bundle`], signed by one of `keys`; the signer's name.
///
/// A signature vouches for the bytes, not for the file's name: whoever may write the
/// plugins directory (the operator) decides which name, and so which grants, they get.
pub fn verify_file(keys: &[TrustedKey], file: &Path, bytes: &[u8]) -> Result<String, SigningError> {
    let sig = sig_path(file);
    let text = match std::fs::read_to_string(&sig) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SigningError::Unsigned { sig, digest: digest(bytes) });
        }
        Err(e) => {
            return Err(SigningError::Malformed(format!("cannot read {}: {e}", sig.display())));
        }
    };
    if !text.trim_start().starts_with('{') {
        let what = format!("the file (digest {})", digest(bytes));
        return Ok(verify(keys, bytes, &text, &what)?.name.clone());
    }
    let bundle: Bundle = serde_json::from_str(&text).map_err(|e| {
        SigningError::Malformed(format!("{} is not a signature bundle: {e}", sig.display()))
    })?;
    bundle.verify(keys, bytes)
}

impl Bundle {
    /// The manifest's exact bytes.
    pub fn manifest_bytes(&self) -> Result<Vec<u8>, SigningError> {
        BASE64.decode(&self.manifest).map_err(|e| {
            SigningError::Malformed(format!("the bundle's manifest is not base64: {e}"))
        })
    }

    /// Check that a trusted key signed the manifest and that the manifest's one wasm layer
    /// is `bytes`; the signer's name.
    pub fn verify(&self, keys: &[TrustedKey], bytes: &[u8]) -> Result<String, SigningError> {
        let manifest = self.manifest_bytes()?;
        let manifest_digest = digest(&manifest);
        let layer = wasm_layer_digest(&manifest)?;
        let file_digest = digest(bytes);
        if layer != file_digest {
            return Err(SigningError::DigestMismatch {
                what: format!("the component file of {}", self.reference),
                expected: layer,
                found: file_digest,
            });
        }
        self.signer(keys, &manifest_digest, None)
    }

    /// The trusted key that signed `manifest_digest` among the bundle's signatures, where
    /// the payload names `identity` (`registry/repo`) when one is given. Signatures that do
    /// not check out are passed over, so a junk one cannot hide a good one.
    pub fn signer(
        &self,
        keys: &[TrustedKey],
        manifest_digest: &str,
        identity: Option<&str>,
    ) -> Result<String, SigningError> {
        let what = format!("{} ({manifest_digest})", self.reference);
        if self.signatures.is_empty() {
            return Err(SigningError::UnsignedImage {
                reference: self.reference.clone(),
                digest: manifest_digest.to_string(),
                tag: signature_tag(manifest_digest),
            });
        }
        let (mut wrong_key, mut other) = (None, None);
        for one in &self.signatures {
            let checked = BASE64
                .decode(&one.payload)
                .map_err(|e| {
                    SigningError::Malformed(format!("a signature payload is not base64: {e}"))
                })
                .and_then(|payload| {
                    let key = verify(keys, &payload, &one.signature, &what)?;
                    let (signed_identity, signed) = signed_image(&payload)?;
                    if signed != manifest_digest {
                        return Err(SigningError::DigestMismatch {
                            what: format!("the manifest of {}", self.reference),
                            expected: signed,
                            found: manifest_digest.to_string(),
                        });
                    }
                    if identity.is_some_and(|identity| identity != signed_identity) {
                        return Err(SigningError::Malformed(format!(
                            "{what} carries a signature for {signed_identity}, another \
                             repository: the registry serves another component under this name"
                        )));
                    }
                    Ok(key.name.clone())
                });
            // A trusted signature of something else says more than a stranger's signature.
            match checked {
                Ok(signer) => return Ok(signer),
                Err(e @ SigningError::WrongKey { .. }) => {
                    wrong_key.get_or_insert(e);
                }
                Err(e) => {
                    other.get_or_insert(e);
                }
            }
        }
        Err(other.or(wrong_key).unwrap_or(SigningError::NoKeys))
    }
}

/// The tag cosign keeps the signatures of `digest` under: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replace(':', "-"))
}

/// The digest of the one `application/wasm` layer of an OCI manifest.
pub fn wasm_layer_digest(manifest: &[u8]) -> Result<String, SigningError> {
    let value: serde_json::Value = serde_json::from_slice(manifest)
        .map_err(|e| SigningError::Malformed(format!("the manifest is not JSON: {e}")))?;
    let layers = value["layers"].as_array().map(Vec::as_slice).unwrap_or_default();
    let wasm: Vec<&serde_json::Value> =
        layers.iter().filter(|l| l["mediaType"] == WASM_LAYER_MEDIA_TYPE).collect();
    match wasm.as_slice() {
        [layer] => layer["digest"].as_str().map(str::to_string).ok_or_else(|| {
            SigningError::Malformed("the manifest's wasm layer has no digest".into())
        }),
        _ => Err(SigningError::Malformed(format!(
            "the manifest has {} layers of type {WASM_LAYER_MEDIA_TYPE}; a component has exactly \
             one (push it with `autoglm plugin push`)",
            wasm.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (SigningKeyFile, TrustedKey) {
        let (private, public) = SigningKeyFile::generate().unwrap();
        let (key, pubkey) = (dir.join(format!("{name}.key")), dir.join(format!("{name}.pub")));
        std::fs::write(&key, private).unwrap();
        std::fs::write(&pubkey, public).unwrap();
        (SigningKeyFile::load(&key).unwrap(), TrustedKey::load(&pubkey).unwrap())
    }

    #[test]
    fn a_blob_signature_verifies_only_with_its_key_and_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, ours_pub) = pair(dir.path(), "ours");
        let (_, theirs_pub) = pair(dir.path(), "theirs");
        let signature = ours.sign(b"component");
        let keys = [theirs_pub.clone(), ours_pub];
        assert!(verify(&keys, b"component", &signature, "it").unwrap().name.ends_with("ours.pub"));
        let wrong = verify(&keys[..1], b"component", &signature, "it").unwrap_err();
        assert!(wrong.to_string().contains("theirs.pub"), "{wrong}");
        assert!(matches!(
            verify(&keys, b"tampered", &signature, "it"),
            Err(SigningError::WrongKey { .. })
        ));
        assert!(matches!(
            verify(&keys, b"x", "not base64!", "it"),
            Err(SigningError::Malformed(_))
        ));
        assert!(matches!(verify(&[], b"x", &signature, "it"), Err(SigningError::NoKeys)));
    }

    #[test]
    fn the_payload_is_cosigns_bytes_and_its_type_is_checked() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let payload = payload("127.0.0.1:5000/plugins/echo", &digest);
        let expected = format!(
            "{{\"critical\":{{\"identity\":{{\"docker-reference\":\"127.0.0.1:5000/plugins/echo\"}},\
             \"image\":{{\"docker-manifest-digest\":\"{digest}\"}},\"type\":\"{PAYLOAD_TYPE}\"}},\
             \"optional\":null}}"
        );
        assert_eq!(String::from_utf8(payload.clone()).unwrap(), expected);
        let image = ("127.0.0.1:5000/plugins/echo".to_string(), digest.clone());
        assert_eq!(signed_image(&payload).unwrap(), image);
        let capital = expected.replace("docker-manifest-digest", "Docker-manifest-digest");
        assert_eq!(signed_image(capital.as_bytes()).unwrap(), image);
        let other = expected.replace(PAYLOAD_TYPE, "something else");
        assert!(signed_image(other.as_bytes()).is_err());
        assert_eq!(signature_tag(&digest), format!("sha256-{}.sig", "ab".repeat(32)));
    }

    #[test]
    fn cosigns_encrypted_keys_are_refused_with_what_to_use_instead() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cosign.key");
        std::fs::write(&path, "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nx\n").unwrap();
        let error = SigningKeyFile::load(&path).err().unwrap().to_string();
        assert!(error.contains("PKCS#8") && error.contains("keygen"), "{error}");
    }
}
