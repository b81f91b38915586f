//! The code's layout rules, checked by `cargo xtask test` before the tests: no file under
//! `crates/*/src` is over 800 lines (its inline tests aside) without a one-line reason at
//! its top, and no two modules of a crate import each other, directly or around a circle
//! (a module and its own submodules aside: a child reads its parent's types).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

/// Lines a file may have (its inline tests aside) without saying why it is whole.
const MAX_LINES: usize = 800;
/// How a long file's first line starts.
const REASON: &str = "// Over 800 lines:";

pub(crate) fn check(root: &Path) -> Result<()> {
    let mut problems = Vec::new();
    let crates = root.join("crates");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&crates)
        .with_context(|| format!("reading {}", crates.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("src")))
        .filter(|src| src.is_dir())
        .collect();
    dirs.sort();
    for src in dirs {
        let files = rust_files(&src)?;
        let mut modules = BTreeMap::new();
        for file in &files {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            let code = without_tests(&text);
            let lines = code.lines().count();
            if lines > MAX_LINES && !text.starts_with(REASON) {
                problems.push(format!(
                    "{}: {lines} lines without a `{REASON} ...` line at its top",
                    file.display()
                ));
            }
            modules.insert(module_of(&src, file), code.to_owned());
        }
        for circle in circles(&modules) {
            problems.push(format!(
                "{}: modules import each other: {}",
                src.display(),
                circle.join(" -> ")
            ));
        }
    }
    if !problems.is_empty() {
        bail!("the layout rules do not hold:\n  {}", problems.join("\n  "));
    }
    Ok(())
}

fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The file's text before its inline `#[cfg(test)]` module.
fn without_tests(text: &str) -> &str {
    text.find("\n#[cfg(test)]\nmod tests")
        .map_or(text, |at| &text[..at])
}

/// `a::b` for `src/a/b.rs` or `src/a/b/mod.rs`; `crate` for `lib.rs` and `main.rs`.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    if parts.is_empty() {
        "crate".to_owned()
    } else {
        parts.join("::")
    }
}

/// Which modules each module names (`crate::x::...`, `super::x`), its own ancestors and
/// descendants aside.
fn imports(modules: &BTreeMap<String, String>) -> BTreeMap<&str, BTreeSet<&str>> {
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, code) in modules {
        let parent = name.rsplit_once("::").map_or("crate", |(p, _)| p);
        let mut named = BTreeSet::new();
        for (prefix, base) in [("crate::", None), ("super::", Some(parent))] {
            for (at, _) in code.match_indices(prefix) {
                let preceded = code[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
                if preceded || (prefix == "super::" && name == "crate") {
                    continue;
                }
                let path: String = code[at + prefix.len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let mut segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
                if let Some(base) = base.filter(|b| *b != "crate") {
                    segments.insert(0, base);
                }
                // The longest prefix that is a module.
                while !segments.is_empty() {
                    let candidate = segments.join("::");
                    if let Some((module, _)) = modules.get_key_value(&candidate) {
                        named.insert(module.as_str());
                        break;
                    }
                    segments.pop();
                }
            }
        }
        let related = |other: &str| {
            other == name
                || other == "crate"
                || name.starts_with(&format!("{other}::"))
                || other.starts_with(&format!("{name}::"))
        };
        graph.insert(
            name.as_str(),
            named.into_iter().filter(|m| !related(m)).collect(),
        );
    }
    graph
}

/// Every set of modules that import each other around a circle, each as a path that
/// closes on its start.
fn circles(modules: &BTreeMap<String, String>) -> Vec<Vec<String>> {
    let graph = imports(modules);
    let mut found = Vec::new();
    let mut reported: BTreeSet<BTreeSet<&str>> = BTreeSet::new();
    for &start in graph.keys() {
        // The shortest way back to `start`, breadth first.
        let mut previous: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut closed = None;
        'search: while let Some(at) = queue.pop_front() {
            for &next in graph.get(at).into_iter().flatten() {
                if next == start {
                    closed = Some(at);
                    break 'search;
                }
                if !previous.contains_key(next) {
                    previous.insert(next, at);
                    queue.push_back(next);
                }
            }
        }
        let Some(mut at) = closed else { continue };
        let mut path = vec![start];
        let mut back = vec![at];
        while let Some(&before) = previous.get(at) {
            if before == start {
                break;
            }
            back.push(before);
            at = before;
        }
        path.extend(back.into_iter().rev());
        if reported.insert(path.iter().copied().collect()) {
            path.push(start);
            found.push(path.into_iter().map(str::to_owned).collect());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crate_of(files: &[(&str, &str)]) -> BTreeMap<String, String> {
        files
            .iter()
            .map(|(name, code)| ((*name).to_owned(), (*code).to_owned()))
            .collect()
    }

    #[test]
    fn circles_between_modules_are_found_and_parents_and_children_are_not_one() {
        let circle = crate_of(&[
            ("crate", "mod a; mod b; mod c;"),
            ("a", "use crate::b::Thing;"),
            ("b", "fn f() { crate::c::g() }"),
            ("c", "use crate::a::{x, y};"),
        ]);
        assert_eq!(circles(&circle), [["a", "b", "c", "a"]]);

        let tree = crate_of(&[
            ("crate", "mod a; mod b; mod c;"),
            ("a", "mod child; use child::Thing; use crate::b::f;"),
            ("a::child", "use super::Parent; use super::sibling::x;"),
            ("a::sibling", "use crate::a::Parent;"),
            (
                "b",
                "use crate::notamodule::x; // crate::c is named in a comment only",
            ),
            ("c", ""),
        ]);
        let graph = imports(&tree);
        assert_eq!(graph["a::child"], BTreeSet::from(["a::sibling"]));
        assert!(graph["a::sibling"].is_empty(), "its parent: {graph:?}");
        assert_eq!(graph["b"], BTreeSet::from(["c"]), "a comment counts too");
        assert!(circles(&tree).is_empty(), "{:?}", circles(&tree));
    }

    #[test]
    fn long_files_need_a_reason_and_inline_tests_do_not_count() {
        let long = "fn f() {}\n".repeat(MAX_LINES + 1);
        assert!(without_tests(&long).lines().count() > MAX_LINES);
        let tested = format!("fn f() {{}}\n#[cfg(test)]\nmod tests {{\n{long}}}\n");
        assert_eq!(without_tests(&tested).lines().count(), 1);
        assert_eq!(module_of(Path::new("src"), Path::new("src/a/mod.rs")), "a");
        assert_eq!(module_of(Path::new("src"), Path::new("src/a/b.rs")), "a::b");
        assert_eq!(
            module_of(Path::new("src"), Path::new("src/lib.rs")),
            "crate"
        );
    }
}
