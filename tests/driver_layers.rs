//! driver/ has no import circle, and the guard crate knows nothing of ctxguard.
//!
//! Reads the sources: every `crate::module` a file of driver/ names (in `use` lines, brace
//! groups included, and in paths) is an edge from the file's top-level module to that module;
//! the graph must be acyclic. fltctx's sources and manifest must not name ctxguard, and its only
//! dependency is windows-sys.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(directory: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(directory).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
}

/// The top-level modules `source` names through `crate::`.
fn crate_references(source: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    // Comments name modules too ("see crate::x"); only code counts.
    let code: String = source.lines().map(|line| line.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let preceded_by_ident = rest[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$');
        rest = &rest[at + "crate::".len()..];
        if preceded_by_ident {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // A brace group: the top-level names before each `::`, `,` or `}` at depth 0.
            let mut depth = 0;
            let mut item = String::new();
            let mut take = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        take = true;
                        if !item.is_empty() {
                            names.insert(std::mem::take(&mut item));
                        }
                        continue;
                    }
                    ':' if depth == 0 => take = false,
                    c if take && depth == 0 && (c.is_alphanumeric() || c == '_') => item.push(c),
                    _ => {}
                }
            }
            if !item.is_empty() {
                names.insert(item);
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names.remove("self");
    names
}

/// Module → the modules it imports, for the files under `directory` (a crate's source root).
fn module_graph(directory: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(directory, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(directory).unwrap();
        let first = relative.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" {
            continue;
        }
        let references = crate_references(&std::fs::read_to_string(&file).unwrap());
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(references.into_iter().filter(|name| *name != module));
    }
    graph
}

/// A circle in `graph`, as the modules along it, if there is one.
fn find_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|on_path| on_path == node) {
            let mut circle = path[start..].to_vec();
            circle.push(node.to_owned());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn driver_modules_import_each_other_without_a_circle() {
    let graph = module_graph(&root().join("driver"));
    assert!(graph.len() >= 10, "read the driver's modules: {graph:?}");
    assert!(graph["operations"].contains("payloads") && graph["port"].contains("clients"), "edges are found: {graph:?}");
    assert_eq!(find_circle(&graph), None, "driver/ imports in a circle: {graph:?}");
    // The two circles of the old layout stay broken at their specific edges.
    assert!(!graph["events"].contains("port"), "events reaches the subscriber through clients, not port");
    assert!(graph["accounting"].iter().all(|module| module == "kernel"), "accounting imports no driver module: {:?}", graph["accounting"]);
}

#[test]
fn the_circle_check_finds_the_circle_the_driver_had() {
    // driver/ before fltctx: context imported the payloads above it, events and port each other.
    let old = [
        ("context", &["accounting", "callback", "instance", "operations"][..]),
        ("accounting", &["context", "instance", "operations"]),
        ("instance", &["accounting", "callback", "context"]),
        ("operations", &["accounting", "callback", "context", "events", "instance", "kernel"]),
        ("events", &["kernel", "port"]),
        ("port", &["accounting", "events", "kernel", "user_buffer"]),
    ];
    let graph: BTreeMap<String, BTreeSet<String>> =
        old.iter().map(|(module, imports)| ((*module).to_owned(), imports.iter().map(|name| (*name).to_owned()).collect())).collect();
    let circle = find_circle(&graph).expect("the old layout has a circle");
    assert_eq!(circle.first(), circle.last());
    assert_eq!(
        crate_references("use crate::{accounting, events::{self, x}, kernel};\nlet a = crate::port::f(); // crate::ignored\n"),
        ["accounting", "events", "kernel", "port"].into_iter().map(str::to_owned).collect()
    );
}

#[test]
fn the_guard_crate_knows_nothing_of_ctxguard() {
    let fltctx = root().join("fltctx");
    let mut files = Vec::new();
    rust_files(&fltctx.join("src"), &mut files);
    assert!(files.len() >= 5, "read fltctx's sources");
    for file in &files {
        let source = std::fs::read_to_string(file).unwrap();
        assert!(!source.to_lowercase().contains("ctxguard"), "{} names ctxguard", file.display());
    }
    let manifest = std::fs::read_to_string(fltctx.join("Cargo.toml")).unwrap();
    let dependencies = manifest.split("[dependencies]").nth(1).expect("a [dependencies] table");
    let dependencies = dependencies.split("\n[").next().unwrap();
    let names: Vec<&str> = dependencies
        .lines()
        .filter(|line| !line.starts_with(' ') && !line.starts_with(']') && line.contains('='))
        .map(|line| line.split('=').next().unwrap().trim())
        .collect();
    assert_eq!(names, ["windows-sys"], "fltctx depends on windows-sys only");
    assert!(!manifest.to_lowercase().contains("ctxguard"), "fltctx's manifest names ctxguard");
}
