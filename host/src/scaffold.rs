//! `autoglm new`: a plugin project from a template (Rust, Python or JavaScript).
//!
//! The templates and the WIT contract are compiled into the binary, so a scaffold
//! made far from the repository is complete.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// A template language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust with the autoglm SDK.
    Rust,
    /// Python with componentize-py.
    Python,
    /// JavaScript with componentize-js.
    Js,
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
        })
    }
}

/// (path in the project, contents, executable)
type File = (&'static str, &'static str, bool);

const WIT: File = ("wit/plugin.wit", include_str!("../../wit/plugin.wit"), false);

const RUST: &[File] = &[
    ("Cargo.toml", include_str!("../../plugins-sdk/templates/rust/Cargo.toml"), false),
    ("src/lib.rs", include_str!("../../plugins-sdk/templates/rust/src/lib.rs"), false),
    ("build.sh", include_str!("../../plugins-sdk/templates/rust/build.sh"), true),
    ("README.md", include_str!("../../plugins-sdk/templates/rust/README.md"), false),
    WIT,
];

const PYTHON: &[File] = &[
    ("app.py", include_str!("../../plugins-sdk/templates/python/app.py"), false),
    ("autoglm.py", include_str!("../../plugins-sdk/templates/python/autoglm.py"), false),
    ("test_app.py", include_str!("../../plugins-sdk/templates/python/test_app.py"), false),
    ("build.sh", include_str!("../../plugins-sdk/templates/python/build.sh"), true),
    ("README.md", include_str!("../../plugins-sdk/templates/python/README.md"), false),
    WIT,
];

const JS: &[File] = &[
    ("tool.js", include_str!("../../plugins-sdk/templates/js/tool.js"), false),
    ("autoglm.js", include_str!("../../plugins-sdk/templates/js/autoglm.js"), false),
    ("test.mjs", include_str!("../../plugins-sdk/templates/js/test.mjs"), false),
    ("native-host.mjs", include_str!("../../plugins-sdk/templates/js/native-host.mjs"), false),
    ("host-stand-in.js", include_str!("../../plugins-sdk/templates/js/host-stand-in.js"), false),
    ("package.json", include_str!("../../plugins-sdk/templates/js/package.json"), false),
    ("build.sh", include_str!("../../plugins-sdk/templates/js/build.sh"), true),
    ("README.md", include_str!("../../plugins-sdk/templates/js/README.md"), false),
    WIT,
];

/// Where the SDK lives when no checkout is found: the project's repository.
const SDK_GIT: &str = "https://github.com/open-autoglm/open-autoglm";

/// Create project `name` in `dir` (default `./NAME`) from the `lang` template and
/// return its directory. Nothing is written unless every file is.
pub fn create(name: &str, lang: Lang, dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    anyhow::ensure!(
        crate::registry::is_valid_name(name) && name.starts_with(|c: char| c.is_ascii_lowercase()),
        "plugin name `{name}` must start with a-z and use only a-z, 0-9, '_' and '-', without \
         `__` (it becomes the `plugin` in `plugin.tool`)"
    );
    let target = dir.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(name));
    let target = std::path::absolute(&target)?;
    anyhow::ensure!(
        !target.exists() || target.read_dir()?.next().is_none(),
        "{} already exists and is not empty; choose another --dir",
        target.display()
    );
    let parent = target.parent().context("the project directory has no parent")?;
    std::fs::create_dir_all(parent)?;
    let sdk = sdk_dependency(parent);
    let staging = tempfile::Builder::new().prefix(".autoglm-new-").tempdir_in(parent)?;
    let files = match lang {
        Lang::Rust => RUST,
        Lang::Python => PYTHON,
        Lang::Js => JS,
    };
    for (path, contents, executable) in files {
        let file = staging.path().join(path);
        std::fs::create_dir_all(file.parent().context("template paths have parents")?)?;
        let text = contents.replace("{{name}}", name).replace("{{sdk_dependency}}", &sdk);
        std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
        if *executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    if target.exists() {
        std::fs::remove_dir(&target)?;
    }
    std::fs::rename(staging.keep(), &target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    Ok(target)
}

/// The commands to run next in a fresh `lang` project.
pub fn next_steps(lang: Lang, dir: &Path, name: &str) -> String {
    let test = match lang {
        Lang::Rust => "cargo test",
        Lang::Python => "python3 -m unittest",
        Lang::Js => "npm test",
    };
    format!(
        "  cd {}\n  {test}\n  ./build.sh\n  cp {name}.wasm <plugins dir>   # e.g. target/plugins, then: autoglm call {name}.greet '{{\"name\": \"Ada\"}}'",
        dir.display()
    )
}

/// The Rust template's SDK dependency: a checkout of this repository found above
/// the project (or the one this binary was built from), else the git repository.
fn sdk_dependency(project_parent: &Path) -> String {
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let checkout = (project_parent.ancestors())
        .map(Path::to_path_buf)
        .chain(std::iter::once(built_from))
        .map(|root| root.join("plugins-sdk"))
        .find(|sdk| {
            std::fs::read_to_string(sdk.join("Cargo.toml"))
                .is_ok_and(|t| t.contains("name = \"autoglm-sdk\""))
        });
    match checkout.and_then(|p| std::fs::canonicalize(p).ok()) {
        Some(path) => format!("autoglm-sdk = {{ path = {:?} }}", path.display().to_string()),
        None => format!("autoglm-sdk = {{ git = \"{SDK_GIT}\" }}"),
    }
}
