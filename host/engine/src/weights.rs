//! Safetensors weights: which files, which tensors the config implies, and a check of both
//! before anything is loaded, so a bad checkpoint fails with every problem listed at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::Deserialize;

use crate::EngineError;
use crate::checkpoint::{Architecture, ModelConfig};
use crate::model::Weight;

/// The safetensors files of the checkpoint in `dir`: `model.safetensors`, or the shards
/// named by `model.safetensors.index.json`.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, EngineError> {
    #[derive(Deserialize)]
    struct Index {
        weight_map: HashMap<String, String>,
    }
    let index_path = dir.join("model.safetensors.index.json");
    if index_path.is_file() {
        let text = std::fs::read_to_string(&index_path).map_err(|e| EngineError::MissingFile {
            path: index_path.clone(),
            what: "the shard index",
            source: e,
        })?;
        let index: Index = serde_json::from_str(&text).map_err(|e| EngineError::Config {
            path: index_path.clone(),
            message: e.to_string(),
        })?;
        let mut shards: Vec<String> = index.weight_map.into_values().collect();
        shards.sort();
        shards.dedup();
        return shards
            .into_iter()
            .map(|shard| {
                let path = dir.join(&shard);
                if shard.contains(['/', '\\']) || !path.is_file() {
                    return Err(EngineError::MissingFile {
                        path,
                        what: "a shard named by model.safetensors.index.json",
                        source: std::io::ErrorKind::NotFound.into(),
                    });
                }
                Ok(path)
            })
            .collect();
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(EngineError::MissingFile {
        path: single,
        what: "the weights (model.safetensors or model.safetensors.index.json)",
        source: std::io::ErrorKind::NotFound.into(),
    })
}

/// Every tensor a checkpoint of `arch` with `config` must hold, with its shape.
pub fn expected_tensors(config: &ModelConfig, arch: Architecture) -> Vec<(String, Vec<usize>)> {
    Weight::all(config, arch).into_iter().map(|(weight, shape)| (weight.hf_name(), shape)).collect()
}

/// Memory-map `files`, check them against `expected`, and return a builder that loads
/// tensors as `dtype` on `device`.
pub fn open(
    files: &[PathBuf],
    expected: &[(String, Vec<usize>)],
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>, EngineError> {
    // SAFETY: the files are mapped read-only; like every safetensors loader we rely on the
    // operator not rewriting a checkpoint while a process serves it.
    let mapped = unsafe { MmapedSafetensors::multi(files) }.map_err(|e| EngineError::Weights {
        problems: vec![format!("cannot read the safetensors files: {e}")],
    })?;
    let found: HashMap<String, (Vec<usize>, safetensors::Dtype)> = mapped
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, (view.shape().to_vec(), view.dtype())))
        .collect();
    let mut problems = Vec::new();
    for (name, shape) in expected {
        match found.get(name) {
            None => problems.push(format!("{name}: missing")),
            Some((got, _)) if got != shape => {
                problems.push(format!("{name}: expected shape {shape:?}, found {got:?}"))
            }
            Some((_, dt)) if !is_float(*dt) => problems.push(format!(
                "{name}: dtype {dt:?} is not a float type (quantised checkpoints are not supported)"
            )),
            Some(_) => {}
        }
    }
    if problems.is_empty() {
        Ok(VarBuilder::from_backend(Box::new(mapped), dtype, device.clone()))
    } else {
        if found.keys().any(|k| k.starts_with("transformer.encoder.")) {
            problems.push(
                "these weights use the original ChatGLMModel layout (transformer.encoder.*); \
                 use the -hf conversion of the checkpoint (GlmForCausalLM)"
                    .into(),
            );
        }
        Err(EngineError::Weights { problems })
    }
}

fn is_float(dtype: safetensors::Dtype) -> bool {
    use safetensors::Dtype::*;
    matches!(dtype, F16 | BF16 | F32 | F64)
}
