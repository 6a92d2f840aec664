//! Tests that keep the module graph one-way: every `use crate::...` and
//! `use super::...` (and every `crate::`/`super::` path in code) of each
//! file under `src/` is resolved to the file of the module it names, and the
//! graph of files must have no cycle; nor the graph of top-level folders,
//! whose edges must be the ones docs/architecture.md lists. A module's use
//! of its own ancestors (their re-exports) is not an edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// Every module of the crate, by its path from the crate root, with its file.
fn modules(root: &Path) -> BTreeMap<Module, PathBuf> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(root).unwrap_or(&path).with_extension("");
                let mut module: Module = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if matches!(
                    module.last().map(String::as_str),
                    Some("mod" | "lib" | "main")
                ) {
                    module.pop();
                }
                found.insert(module, path);
            }
        }
    }
    found
}

/// The paths a `use` tree names: `a::{b, c::{d, e}}` gives `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.split_whitespace().collect();
    let Some(open) = tree.find('{') else {
        let path = tree.split("as").next().unwrap_or_default();
        return vec![path.trim_end_matches("::").to_string()];
    };
    let prefix = tree[..open].trim_end_matches("::");
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|part| {
            expand(part)
                .into_iter()
                .map(move |rest| match rest.as_str() {
                    "self" => prefix.to_string(),
                    _ => format!("{prefix}::{rest}"),
                })
        })
        .collect()
}

/// The module a `crate::`/`super::` path from `from` lands in: the longest
/// prefix of the path that is a module.
fn resolve(from: &Module, path: &str, known: &BTreeMap<Module, PathBuf>) -> Option<Module> {
    let mut parts = path.split("::").peekable();
    let mut base: Module = match parts.peek().copied() {
        Some("crate") => {
            parts.next();
            Vec::new()
        }
        Some("super") => {
            let mut base = from.clone();
            while parts.peek() == Some(&"super") {
                parts.next();
                base.pop();
            }
            base
        }
        _ => return None,
    };
    let rest: Vec<&str> = parts.collect();
    let mut best = known.contains_key(&base).then(|| base.clone());
    for part in rest {
        base.push(part.to_string());
        if known.contains_key(&base) {
            best = Some(base.clone());
        }
    }
    best
}

/// The file-to-file edges: what each module's non-test code uses.
fn edges(known: &BTreeMap<Module, PathBuf>) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut graph = BTreeMap::new();
    for (module, file) in known {
        let source = std::fs::read_to_string(file).unwrap_or_default();
        let code = source.split("#[cfg(test)]").next().unwrap_or_default();
        let mut paths = Vec::new();
        for statement in code.split(';') {
            if let Some(tree) = statement.trim_start().strip_prefix("use ") {
                paths.extend(expand(tree));
            } else if let Some(tree) = statement.trim_start().strip_prefix("pub use ") {
                paths.extend(expand(tree));
            }
        }
        for word in code.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')) {
            if word.starts_with("crate::") || word.starts_with("super::") {
                paths.push(word.trim_end_matches(':').to_string());
            }
        }
        let targets: BTreeSet<Module> = paths
            .iter()
            .filter_map(|p| resolve(module, p, known))
            .filter(|t| t != module && !module.starts_with(t))
            .collect();
        graph.insert(module.clone(), targets);
    }
    graph
}

/// A cycle through the graph, if there is one.
fn cycle(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    fn visit(
        node: &Module,
        graph: &BTreeMap<Module, BTreeSet<Module>>,
        state: &mut BTreeMap<Module, bool>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        state.insert(node.clone(), false);
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next) {
                Some(false) => {
                    let from = stack.iter().position(|m| m == next).unwrap_or(0);
                    let mut found = stack[from..].to_vec();
                    found.push(next.clone());
                    return Some(found);
                }
                Some(true) => {}
                None => {
                    if let Some(found) = visit(next, graph, state, stack) {
                        return Some(found);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.clone(), true);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if !state.contains_key(node)
            && let Some(found) = visit(node, graph, &mut state, &mut Vec::new())
        {
            return Some(found);
        }
    }
    None
}

#[test]
fn use_trees_expand_to_every_path() {
    assert_eq!(
        expand("super::{gate::{Decision, Stop}, clock, self}"),
        vec![
            "super::gate::Decision",
            "super::gate::Stop",
            "super::clock",
            "super"
        ]
    );
    assert_eq!(
        expand("crate::api::ProviderId as Id"),
        vec!["crate::api::ProviderId"]
    );
}

#[test]
fn a_cycle_is_found() {
    let module = |name: &str| vec![name.to_string()];
    let mut graph = BTreeMap::new();
    graph.insert(module("a"), BTreeSet::from([module("b")]));
    graph.insert(module("b"), BTreeSet::from([module("a")]));
    assert!(cycle(&graph).is_some());
    graph.insert(module("b"), BTreeSet::new());
    assert!(cycle(&graph).is_none());
}

#[test]
fn no_file_imports_one_that_imports_it_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let known = modules(&root);
    assert!(known.len() > 50, "the crate's files were found");
    let graph = edges(&known);
    let message = vec!["controller".to_string(), "message".to_string()];
    assert!(
        graph[&vec![
            "controller".to_string(),
            "message".to_string(),
            "single".to_string()
        ]]
            .contains(&[message.clone(), vec!["attempt".to_string()]].concat()),
        "edges are read"
    );
    if let Some(found) = cycle(&graph) {
        let names: Vec<String> = found.iter().map(|m| m.join("::")).collect();
        panic!("a module cycle: {}", names.join(" -> "));
    }
}

/// Test-only modules: their uses are not the crate's structure.
const TEST_ONLY: &[&str] = &["hostile_input", "module_graph"];

/// The top-level module (folder or file) of each edge's ends: `a -> b`
/// for every file of `a` that uses a file of `b`.
fn folder_edges(graph: &BTreeMap<Module, BTreeSet<Module>>) -> BTreeSet<(String, String)> {
    let top = |m: &Module| m.first().cloned().unwrap_or_else(|| "main".to_string());
    graph
        .iter()
        .flat_map(|(from, targets)| targets.iter().map(move |to| (top(from), top(to))))
        .filter(|(a, b)| a != b && !TEST_ONLY.contains(&a.as_str()))
        .collect()
}

/// The folder edges docs/architecture.md lists, one source a line
/// (`controller -> admin, api, ...`) in the block after its marker.
fn documented_folder_edges(doc: &str) -> BTreeSet<(String, String)> {
    let block = doc
        .split("<!-- folder edges -->")
        .nth(1)
        .and_then(|rest| rest.split("```").nth(1))
        .unwrap_or_default();
    block
        .lines()
        .filter_map(|line| line.split_once("->"))
        .flat_map(|(from, to)| {
            to.split(',')
                .map(|t| (from.trim().to_string(), t.trim().to_string()))
                .filter(|(_, t)| !t.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_folders_depend_one_way_as_documented() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let graph = edges(&modules(&root.join("src")));
    let actual = folder_edges(&graph);
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).expect("the doc");
    let documented = documented_folder_edges(&doc);
    let render = |edges: &BTreeSet<(String, String)>| {
        let mut by_source: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (a, b) in edges {
            by_source.entry(a).or_default().push(b);
        }
        by_source
            .iter()
            .map(|(a, bs)| format!("{a} -> {}", bs.join(", ")))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        actual,
        documented,
        "docs/architecture.md lists other folder edges than the code has; the code's:\n{}",
        render(&actual)
    );
    let folders: BTreeMap<Module, BTreeSet<Module>> =
        actual.iter().fold(BTreeMap::new(), |mut graph, (a, b)| {
            graph
                .entry(vec![a.clone()])
                .or_insert_with(BTreeSet::new)
                .insert(vec![b.clone()]);
            graph
        });
    if let Some(found) = cycle(&folders) {
        let names: Vec<String> = found.iter().map(|m| m.join("::")).collect();
        panic!("a folder cycle: {}", names.join(" -> "));
    }
}
