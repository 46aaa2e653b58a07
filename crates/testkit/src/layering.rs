//! The layering rule of a crate, checked from its sources: every module has a
//! level, and no module names (`crate::…` or `super::…`, outside its
//! `#[cfg(test)]` part) a module of a higher level. Modules of one level may
//! use each other; a cycle between levels is impossible by construction.
//! Doc links count: a map that points up is as misleading as a `use`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Every `.rs` file under `src` as its module path (`a::b`, `""` for the crate root).
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let relative = path.strip_prefix(src).unwrap().with_extension("");
                let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
                if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                    parts.pop();
                }
                found.insert(parts.join("::"), path);
            }
        }
    }
    found
}

/// The longest known module that `path` (a `::` path inside the crate) names.
fn resolve<'a>(modules: &'a BTreeMap<String, PathBuf>, path: &str) -> Option<&'a str> {
    let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find_map(|candidate| modules.get_key_value(&candidate).map(|(k, _)| k.as_str()))
}

/// The `a::b::c` path that starts at `at` in `text`.
fn path_at(text: &str, at: usize) -> &str {
    let end = text[at..]
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .map_or(text.len(), |n| at + n);
    text[at..end].trim_end_matches(':')
}

/// The level of `module`: that of the longest entry of `levels` it is or lies under.
fn level_of(levels: &[(&str, u32)], module: &str) -> Option<u32> {
    levels
        .iter()
        .filter(|(name, _)| module == *name || module.starts_with(&format!("{name}::")))
        .max_by_key(|(name, _)| name.len())
        .map(|(_, level)| *level)
}

/// The uses in the crate at `src` that go up a level, as `from → to` lines;
/// modules missing from `levels` are reported too.
pub fn violations(src: &Path, levels: &[(&str, u32)]) -> Vec<String> {
    let modules = modules(src);
    let mut found = Vec::new();
    for (module, path) in &modules {
        if module.is_empty() {
            continue;
        }
        let Some(from) = level_of(levels, module) else {
            found.push(format!("{module}: no level"));
            continue;
        };
        let text = std::fs::read_to_string(path).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let parent: Vec<&str> = module.split("::").collect();
        let parent = parent[..parent.len() - 1].join("::");
        let mut named = Vec::new();
        for (at, _) in code.match_indices("crate::") {
            named.extend(resolve(&modules, path_at(code, at + "crate::".len())));
        }
        for (at, _) in code.match_indices("super::") {
            named.extend(resolve(
                &modules,
                &format!("{parent}::{}", path_at(code, at + "super::".len())),
            ));
        }
        for target in named {
            // A module's own children are part of it. Its parent is not: a
            // child names the sibling it uses, not the parent's re-export.
            if target.is_empty() || target.starts_with(&format!("{module}::")) {
                continue;
            }
            if let Some(to) = level_of(levels, target) {
                if to > from {
                    found.push(format!("{module} (level {from}) → {target} (level {to})"));
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}
