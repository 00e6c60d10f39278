//! The layering rule, checked: every module of the host library imports only modules of
//! lower layers, and the engine crate's modules import each other without a circle.
//!
//! Imports are read from the source text (`crate::a::…`, `use crate::{a, b::c}`, and
//! `super::` chains that climb to the crate root), comments and string literals left out.
//! Aliases of the crate root (`use crate as x`, `crate::{self as x}`) are refused outright:
//! they would hide imports from this check.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The host's layers, bottom first. A module may import the modules of the layers below its
/// own, never its own layer's or those above. README's layout section draws the same table.
const HOST_LAYERS: &[(&str, &[&str])] = &[
    ("error", &["error"]),
    ("results and contract", &["metered", "trace", "config", "contract"]),
    ("policy, signatures, metrics and logging", &["policy", "signing", "metrics", "telemetry"]),
    ("sandbox", &["runtime"]),
    ("registry", &["registry"]),
    ("router and distribution", &["router", "distribution"]),
    ("invoke, model and descriptions", &["invoke", "model", "describe", "eval"]),
    ("tasks", &["tasks"]),
    ("agent", &["agent"]),
    ("app", &["app", "scaffold"]),
    ("server", &["server"]),
    // The binary's own modules (main.rs parses flags and dispatches to them).
    ("command line", &["cli"]),
];

fn src(crate_dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(crate_dir).join("src")
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The top-level module a file of `src` belongs to (`None` for lib.rs and main.rs).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// `text` without comments and without the contents of string and char literals.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'*') => {
                let mut previous = ' ';
                for c in chars.by_ref() {
                    if previous == '*' && c == '/' {
                        break;
                    }
                    previous = c;
                }
                out.push(' ');
            }
            // A raw string: r"…" or r#"…"# (any number of #).
            'r' if matches!(chars.peek(), Some('"' | '#'))
                && !out.ends_with(|c: char| c.is_alphanumeric() || c == '_') =>
            {
                let mut hashes = 0;
                while chars.peek() == Some(&'#') {
                    chars.next();
                    hashes += 1;
                }
                if chars.peek() != Some(&'"') {
                    out.push('r');
                    out.push_str(&"#".repeat(hashes));
                    continue;
                }
                chars.next();
                let close = format!("\"{}", "#".repeat(hashes));
                let mut body = String::new();
                for c in chars.by_ref() {
                    body.push(c);
                    if body.ends_with(&close) {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
                out.push_str("\"\"");
            }
            // A char literal ('x', '\n'), not a lifetime ('a).
            '\'' => {
                let rest: String = chars.clone().take(3).collect();
                let literal = rest.starts_with('\\') || rest.chars().nth(1) == Some('\'');
                if literal {
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => {
                                chars.next();
                            }
                            '\'' => break,
                            _ => {}
                        }
                    }
                    out.push_str("' '");
                } else {
                    out.push(c);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The first path segment of each path under `prefix::` (with `{a, b::c}` groups opened).
fn imports_under(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut offset = 0;
    while let Some(at) = code[offset..].find(prefix) {
        let before = code[..offset + at].chars().next_back();
        offset += at + prefix.len();
        let rest = &code[offset..];
        // Part of a longer path (`a::crate::`), or a deeper `super::` chain than asked for.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
            || rest.starts_with("super::")
        {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item = String::new();
            let mut items = Vec::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 1 => break,
                    '}' => depth -= 1,
                    ',' if depth == 1 => items.push(std::mem::take(&mut item)),
                    _ if depth == 1 => item.push(c),
                    _ => {}
                }
            }
            items.push(item);
            for item in items {
                let first: String =
                    item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !first.is_empty() && first != "self" {
                    found.insert(first);
                }
            }
        } else {
            let first: String =
                rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !first.is_empty() {
                found.insert(first);
            }
        }
    }
    found
}

/// How many `super::` lead from `file`'s module to the crate root: 1 for `src/a.rs` and
/// `src/a/mod.rs`, 2 for `src/a/b.rs`, and so on.
fn depth(src: &Path, file: &Path) -> usize {
    let relative = file.strip_prefix(src).unwrap();
    let parts = relative.components().count();
    if relative.file_name().is_some_and(|n| n == "mod.rs") { parts - 1 } else { parts }
}

/// Module -> the modules of the same crate it imports.
fn import_graph(crate_dir: &str) -> BTreeMap<String, BTreeSet<String>> {
    let src = src(crate_dir);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(&src) {
        let Some(module) = module_of(&src, &file) else { continue };
        let code = code_only(&std::fs::read_to_string(&file).unwrap());
        for alias in ["crate as ", "crate::{self", "extern crate self"] {
            assert!(!code.contains(alias), "{} aliases the crate root ({alias:?})", file.display());
        }
        let mut imports = imports_under(&code, "crate::");
        imports.extend(imports_under(&code, &"super::".repeat(depth(&src, &file))));
        imports.remove(&module);
        graph.entry(module).or_default().extend(imports);
    }
    graph
}

/// Every import in `graph` that goes sideways or up in `layers`, as a message; modules
/// missing from the table are reported too, so a new module gets a place in it.
fn violations(
    graph: &BTreeMap<String, BTreeSet<String>>,
    layers: &[(&str, &[&str])],
) -> Vec<String> {
    let level = |module: &str| layers.iter().position(|(_, ms)| ms.contains(&module));
    let mut problems = Vec::new();
    for (module, imports) in graph {
        let Some(own) = level(module) else {
            problems.push(format!("module `{module}` has no layer in the table"));
            continue;
        };
        for import in imports {
            match level(import) {
                Some(theirs) if theirs < own => {}
                Some(theirs) => problems.push(format!(
                    "`{module}` ({}) imports `{import}` ({}), which is not below it",
                    layers[own].0, layers[theirs].0
                )),
                // Items of the crate root (re-exports in lib.rs) are not modules.
                None => {}
            }
        }
    }
    problems
}

/// A circle among `graph`'s modules, if there is one.
fn find_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut circle = path[start..].to_vec();
            circle.push(node.to_string());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if graph.contains_key(next)
                && let Some(circle) = visit(next, graph, path, done)
            {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn host_modules_import_only_lower_layers() {
    let graph = import_graph(".");
    assert!(graph.len() >= 15, "too few modules found: {graph:?}");
    let problems = violations(&graph, HOST_LAYERS);
    assert!(problems.is_empty(), "layering broken:\n  {}", problems.join("\n  "));
}

#[test]
fn engine_modules_have_no_import_circle() {
    let graph = import_graph("engine");
    assert!(graph.contains_key("scheduler") && graph.contains_key("chat"), "{graph:?}");
    assert_eq!(find_circle(&graph), None, "import circle among the engine's modules");
}

#[test]
fn the_check_sees_grouped_nested_and_root_relative_imports() {
    let code = code_only(
        "use crate::{a::B, c, d::{e, f}};\n// crate::commented\nlet s = \"crate::quoted\";\n\
         fn f<'a>(x: &'a str) -> char { crate::g::h(); '\"' }\nuse super::i;\n\
         /* crate::block */ let r = r#\"crate::raw \" still\"#; use super::super::j;",
    );
    let found = imports_under(&code, "crate::");
    assert_eq!(found, ["a", "c", "d", "g"].map(String::from).into_iter().collect());
    assert_eq!(imports_under(&code, "super::"), ["i".to_string()].into_iter().collect());
    assert_eq!(imports_under(&code, "super::super::"), ["j".to_string()].into_iter().collect());
    let src = Path::new("/s");
    assert_eq!(depth(src, Path::new("/s/a.rs")), 1);
    assert_eq!(depth(src, Path::new("/s/a/mod.rs")), 1);
    assert_eq!(depth(src, Path::new("/s/a/b/c.rs")), 3);
    let graph = BTreeMap::from([
        ("error".to_string(), BTreeSet::from(["router".to_string()])),
        ("router".to_string(), BTreeSet::from(["error".to_string()])),
    ]);
    let layers: &[(&str, &[&str])] = &[("low", &["error"]), ("high", &["router"])];
    assert_eq!(violations(&graph, layers).len(), 1, "the upward import is found");
    assert!(find_circle(&graph).is_some());
}
