//! Named task templates: `NAME.toml` files in the tasks directory, each a spec whose
//! `input.X` references are filled by the caller's inputs.

use std::collections::BTreeMap;
use std::path::Path;

use super::spec::TaskSpec;

/// The templates in `dir`, by file stem; none when the directory does not exist. A
/// template that does not parse is logged with its file and field and left out, so one bad
/// file does not take the others down.
pub fn load_templates(dir: &Path) -> anyhow::Result<BTreeMap<String, TaskSpec>> {
    let mut templates = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(templates),
        Err(error) => {
            anyhow::bail!("cannot read the task templates directory {}: {error}", dir.display())
        }
    };
    let mut paths: Vec<_> = (entries.filter_map(|e| e.ok().map(|e| e.path())))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    for path in paths {
        match load(&path) {
            Ok((name, spec)) => {
                templates.insert(name, spec);
            }
            Err(error) => tracing::error!(file = %path.display(), %error, "task template left out"),
        }
    }
    Ok(templates)
}

fn load(path: &Path) -> anyhow::Result<(String, TaskSpec)> {
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
    anyhow::ensure!(
        crate::registry::is_valid_name(&name),
        "template file names must be lower-case letters, digits, '_' or '-' (the name becomes \
         the tool `task.NAME`)"
    );
    let text = std::fs::read_to_string(path)?;
    let mut value: serde_json::Value = toml::from_str(&text)?;
    if let Some(object) = value.as_object_mut() {
        object.entry("name").or_insert_with(|| name.clone().into());
    }
    let spec = TaskSpec::parse(&value)?;
    Ok((name, spec))
}
