//! The modules follow the data one way (ARCHITECTURE.md): no module of `src/` imports,
//! directly or through others, a module that imports it. Read from the source, so a new
//! `crate::` path that closes a circle fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `module → modules it names as crate::module`, for every module of src/ (a folder is one
/// module, all its files together) but the entry points (`lib`, `main`) and `cli`, which
/// parses and dispatches to `commands` and nothing imports.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules: BTreeMap<String, String> = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            // Every file of the module, its folders' too (`log/kafka/`, `log/sled/`).
            let mut text = String::new();
            let mut dirs = vec![path.clone()];
            while let Some(dir) = dirs.pop() {
                for f in std::fs::read_dir(&dir).unwrap() {
                    let f = f.unwrap().path();
                    if f.is_dir() {
                        dirs.push(f);
                    } else if f.extension().is_some_and(|e| e == "rs") {
                        text.push_str(&std::fs::read_to_string(f).unwrap());
                    }
                }
            }
            modules.insert(name, text);
        } else if path.extension().is_some_and(|e| e == "rs") && !["lib", "main", "cli"].contains(&name.as_str()) {
            modules.insert(name, std::fs::read_to_string(&path).unwrap());
        }
    }
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    let ident = |s: &str| -> String { s.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect() };
    modules
        .iter()
        .map(|(m, text)| {
            // Code only: a comment that mentions a module is not an import.
            let code: String = text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
            let mut used = BTreeSet::new();
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                // `crate::{a, b::c}` names several.
                let targets: Vec<String> = match rest.strip_prefix('{') {
                    Some(group) => group.split('}').next().unwrap_or("").split(',').map(ident).collect(),
                    None => vec![ident(rest)],
                };
                used.extend(targets.into_iter().filter(|t| names.contains(t) && t != m));
            }
            (m.clone(), used)
        })
        .collect()
}

#[test]
fn no_module_imports_itself_through_others() {
    let graph = imports();
    assert!(graph.len() >= 10, "found the modules: {:?}", graph.keys());
    // Depth-first search for a cycle, reporting its path.
    fn visit(m: &str, graph: &BTreeMap<String, BTreeSet<String>>, path: &mut Vec<String>, done: &mut BTreeSet<String>) {
        if let Some(pos) = path.iter().position(|p| p == m) {
            panic!("import circle: {} → {m}", path[pos..].join(" → "));
        }
        if done.contains(m) {
            return;
        }
        path.push(m.to_string());
        for next in &graph[m] {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(m.to_string());
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_code_map_names_every_module() {
    let map = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md")).unwrap();
    for m in imports().keys() {
        assert!(
            map.contains(&format!("`src/{m}.rs`")) || map.contains(&format!("`src/{m}/")),
            "ARCHITECTURE.md's code map does not name src/{m}"
        );
    }
}

#[test]
fn the_imports_table_of_architecture_md_matches_the_source() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md")).unwrap();
    let section = doc.split("### Imports").nth(1).expect("ARCHITECTURE.md has an Imports section");
    let section = section.split("\n## ").next().unwrap();
    let mut table: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let module = cells[1].trim_matches('`').to_string();
        let imports = cells[2].split(',').map(|c| c.trim().trim_matches('`').to_string()).filter(|c| !c.is_empty() && c != "—").collect();
        table.insert(module, imports);
    }
    assert_eq!(table, imports(), "ARCHITECTURE.md's Imports table (left) against the source (right)");
}

/// `cli` only parses and dispatches: it names no module but `commands` (the commands'
/// arguments and bodies), `log` and `project` (the global options' types), and it stays
/// short enough to read in one sitting.
#[test]
fn cli_only_parses_and_dispatches() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cli.rs")).unwrap();
    let code: String = text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    let mut named = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        named.insert(rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>());
    }
    let allowed: BTreeSet<String> = ["commands", "log", "project"].iter().map(|s| s.to_string()).collect();
    assert!(named.is_subset(&allowed), "cli names {named:?}; command bodies belong in src/commands/");
    assert!(text.lines().count() <= 300, "src/cli.rs has {} lines", text.lines().count());
}

/// No file of src/ is over ~1,000 lines unless it says in its `//!` doc why it stays one
/// file (a long file with one job).
#[test]
fn long_files_say_why_they_are_one() {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let lines = text.lines().count();
        if lines > 1_100 {
            let doc: String = text.lines().take_while(|l| l.starts_with("//!")).collect::<Vec<_>>().join("\n");
            assert!(
                doc.contains("One file"),
                "{} has {lines} lines and its //! doc does not say why it is one file (\"One file …\")",
                f.display()
            );
        }
    }
}
