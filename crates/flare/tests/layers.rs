//! The module graph of the library, checked from its source: the pure core
//! imports only the pure core, and no two modules import each other, even
//! through others.
//!
//! Each top-level module of `src/` (a file, or a directory with its
//! submodules) is one node; every `crate::name` in it is an edge to the
//! module `name` is, or that `lib.rs` re-exports it from. Comments are
//! skipped; test code counts too.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The pure core: parsing, the table, routing, codecs, schedules. None of
/// these may import a module outside this list.
const CORE: &[&str] = &[
    "cron",
    "error",
    "fleet_spec",
    "origin",
    "proto",
    "router",
    "schedule",
    "signal_num",
    "source_spec",
    "table",
    "target",
    "topology",
];

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text without `//` comments (doc comments included).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `ident` that follows `crate::` in the code.
fn crate_paths(code: &str) -> Vec<String> {
    code.match_indices("crate::")
        .filter(|(i, _)| {
            // Not the tail of a longer word (`flare_crate::`).
            !code[..*i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
        .map(|(i, m)| {
            code[i + m.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// What `lib.rs` re-exports at the crate root: name -> module.
fn root_reexports(lib: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for stmt in code(lib).split(';') {
        let Some(rest) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let rest: String = rest.split_whitespace().collect();
        let (module, items) = rest.split_once("::").expect("pub use module::..");
        let items = items.trim_start_matches('{').trim_end_matches('}');
        for item in items.split(',').filter(|i| !i.is_empty()) {
            let name = item.rsplit("::").next().expect("item");
            names.insert(name.to_owned(), module.to_owned());
        }
    }
    names
}

/// The import graph of the modules under `src`.
fn graph(src: &Path) -> Graph {
    let lib = fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let reexports = root_reexports(&lib);
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(src, f)).collect();
    let mut g = Graph::new();
    for file in &files {
        let Some(from) = module_of(src, file) else {
            continue;
        };
        let text = fs::read_to_string(file).expect("source file");
        let edges = g.entry(from.clone()).or_default();
        for name in crate_paths(&code(&text)) {
            let to = if modules.contains(&name) {
                name
            } else if let Some(m) = reexports.get(&name) {
                m.clone()
            } else {
                panic!(
                    "{}: `crate::{name}` is neither a module nor a root re-export",
                    file.display()
                );
            };
            if to != from {
                edges.insert(to);
            }
        }
    }
    g
}

/// The top-level module a file belongs to (`master/engine/mod.rs` ->
/// `master`); `None` for `lib.rs`.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib").then(|| name.to_owned())
}

/// A cycle through `start`, if there is one.
fn cycle_from(g: &Graph, start: &str) -> Option<Vec<String>> {
    fn walk(
        g: &Graph,
        at: &str,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in g.get(at).into_iter().flatten() {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(g, next, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_owned()];
    walk(g, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

fn describe(g: &Graph) -> String {
    g.iter()
        .map(|(m, to)| {
            format!(
                "  {m} -> {}\n",
                to.iter().cloned().collect::<Vec<_>>().join(" ")
            )
        })
        .collect()
}

/// The library's source; `FLARE_LAYERS_SRC` points the check at another
/// copy (to see it fail on an older tree).
fn src_dir() -> PathBuf {
    std::env::var_os("FLARE_LAYERS_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

#[test]
fn the_core_imports_only_the_core() {
    let g = graph(&src_dir());
    for m in CORE {
        assert!(g.contains_key(*m), "core module `{m}` not found in src/");
    }
    let bad: Vec<String> = CORE
        .iter()
        .flat_map(|m| {
            g[*m]
                .iter()
                .filter(|to| !CORE.contains(&to.as_str()))
                .map(move |to| format!("{m} -> {to}"))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "core modules import from above the core: {bad:?}\n{}",
        describe(&g)
    );
}

#[test]
fn no_module_imports_itself_through_others() {
    let g = graph(&src_dir());
    let cycles: Vec<String> = g
        .keys()
        .filter_map(|m| cycle_from(&g, m))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(
        cycles.is_empty(),
        "import cycles:\n  {}\n{}",
        cycles.join("\n  "),
        describe(&g)
    );
}

#[test]
fn the_check_sees_edges_and_cycles() {
    let mut g = Graph::new();
    assert_eq!(
        crate_paths("use crate::a::B; x = crate::c(1); my_crate::d"),
        ["a", "c"]
    );
    assert_eq!(
        code("use crate::a; // crate::b\n/// crate::c"),
        "use crate::a; \n"
    );
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert_eq!(cycle_from(&g, "a"), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(cycle_from(&g, "a").unwrap(), ["a", "b", "c"]);
    let r = root_reexports("pub use x::{A, b::C};\npub use y::D;\nmod z;");
    assert_eq!(r["A"], "x");
    assert_eq!(r["C"], "x");
    assert_eq!(r["D"], "y");
}
