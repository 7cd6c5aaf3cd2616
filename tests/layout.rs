//! The tree is the data flow: no top-level module of the library imports one that imports it
//! back, directly or through others (STYLE.md: "imports point upstream only"). A `crate::x`
//! path in non-test code (comments and `#[cfg(test)]` items left out) is an import of `x`.
//! Cycles inside one module (its files among themselves) are that module's business.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level module a file under `src/` belongs to (`None` for the crate root, `main`
/// and the binaries).
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main" | "bin")).then(|| name.to_string())
}

fn rs_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without comment lines and without what follows its first
/// `#[cfg(test)]` (test modules sit at the end of files here); test-only files are empty.
fn code(path: &Path) -> String {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let text = std::fs::read_to_string(path).unwrap();
    // Inline test modules (`#[cfg(test)] mod tests { ... }`) close the files that have
    // them; a `#[cfg(test)] mod tests;` declaration or a test-only item elsewhere is kept
    // (a false import found there errs on the strict side).
    let mut cut = text.len();
    for (i, _) in text.match_indices("#[cfg(test)]") {
        let after = text[i + "#[cfg(test)]".len()..].trim_start();
        let after = after.strip_prefix("pub(crate) ").unwrap_or(after);
        if after.starts_with("mod ") && after.split('\n').next().is_some_and(|l| l.ends_with('{')) {
            cut = cut.min(i);
        }
    }
    text[..cut]
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let Some(m) = module_of(f.strip_prefix(&src).unwrap()) else {
            continue;
        };
        let deps = g.entry(m.clone()).or_default();
        let text = code(&f);
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != m {
                deps.insert(name);
            }
        }
    }
    g
}

/// A cycle through `start`, if any (depth-first search for a path back to it).
fn cycle_through(g: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in g.get(&node).into_iter().flatten() {
            if next == start {
                let mut p = path.clone();
                p.push(start.to_string());
                return Some(p);
            }
            if seen.insert(next.clone()) {
                let mut p = path.clone();
                p.push(next.clone());
                stack.push((next.clone(), p));
            }
        }
    }
    None
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let g = graph();
    // The scan sees the stages it should (a broken scan would pass vacuously).
    for m in [
        "capture",
        "decode",
        "worker",
        "correlate",
        "output",
        "telemetry",
    ] {
        assert!(g.contains_key(m), "module {m} not found: {g:?}");
    }
    assert!(g["output"].contains("correlate") && g["worker"].contains("flow"));
    let cycles: Vec<String> = g
        .keys()
        .filter_map(|m| cycle_through(&g, m))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_stages_before_the_merge_do_not_reach_downstream() {
    let g = graph();
    let downstream = [
        "correlate",
        "output",
        "telemetry",
        "http",
        "pipeline",
        "replay",
        "run",
    ];
    for m in [
        "capture", "decode", "flow", "dns", "detect", "defrag", "worker", "event",
    ] {
        let bad: Vec<&&str> = downstream
            .iter()
            .filter(|d| g.get(m).is_some_and(|s| s.contains(**d)))
            .collect();
        assert!(bad.is_empty(), "{m} imports {bad:?}");
    }
}
