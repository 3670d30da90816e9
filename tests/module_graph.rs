//! The library's dependencies point one way (docs/architecture.md).
//!
//! Reads every file under `src/` as text, takes the `crate::` and `super::`
//! paths its code names (comments, strings and `#[cfg(test)]` items left
//! out), resolves each to the module it points into, and checks that:
//! - no module imports, directly or through others, a module that imports
//!   it back (a module and the modules inside it count as one);
//! - the same holds between the top-level modules (`sip`, `policy`, …);
//! - the SIP layers name nothing of screening, configuration, history or
//!   the admin API;
//! - only the composition root and the modules above the domain read the
//!   assembled configuration.
//!
//! The checker itself is tested on made-up sources first, so a broken
//! parser cannot pass by finding nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`sip::proxy::invite`) → the module paths its code names.
type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn the_library_has_no_import_cycle() {
    let graph = graph_of(&read_src());
    assert!(graph.len() > 40, "src/ read: {} modules", graph.len());
    if let Some(cycle) = find_cycle(&collapse(&graph, usize::MAX)) {
        panic!("import cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn top_level_modules_depend_one_way() {
    let graph = graph_of(&read_src());
    if let Some(cycle) = find_cycle(&collapse(&graph, 1)) {
        panic!("cycle between top-level modules: {}", cycle.join(" -> "));
    }
}

#[test]
fn sip_names_nothing_of_screening_config_history_or_admin() {
    let graph = graph_of(&read_src());
    let allowed = |to: &str, from: &str| {
        to.starts_with("sip")
            || to == "metrics"
            // PEM certificates and keys for SIP over TLS: a leaf.
            || (from == "sip::transport::tls" && to == "pem")
            // Who is calling, as E.164.
            || (from == "sip::caller" && to == "number")
    };
    let mut bad = Vec::new();
    for (from, tos) in graph.iter().filter(|(m, _)| m.starts_with("sip")) {
        for to in tos.iter().filter(|t| !allowed(t, from)) {
            bad.push(format!("{from} -> {to}"));
        }
    }
    assert!(bad.is_empty(), "the SIP layers must not name: {bad:#?}");
}

#[test]
fn only_the_top_layers_read_the_assembled_config() {
    let graph = graph_of(&read_src());
    let readers = ["app", "cli", "admin", "reload", "error", "config"];
    let mut bad = Vec::new();
    for (from, tos) in &graph {
        let top = from.split("::").next().unwrap_or_default();
        if !readers.contains(&top)
            && tos
                .iter()
                .any(|t| t == "config" || t.starts_with("config::"))
        {
            bad.push(from.clone());
        }
    }
    assert!(
        bad.is_empty(),
        "these modules import crate::config; take the section's own options type instead: {bad:?}"
    );
}

#[test]
fn nothing_in_the_library_calls_the_command_line() {
    let graph = graph_of(&read_src());
    let bad: Vec<_> = graph
        .iter()
        .filter(|(from, tos)| !from.starts_with("cli") && tos.iter().any(|t| t.starts_with("cli")))
        .map(|(from, _)| from.clone())
        .collect();
    assert!(
        bad.is_empty(),
        "these modules import crate::cli; move what they share into the library: {bad:?}"
    );
}

#[test]
fn the_checker_finds_a_cycle_it_is_shown() {
    let files = [
        ("a.rs", "use crate::b::c::Thing;\nfn f() {}"),
        ("b/mod.rs", "pub mod c;"),
        // A cycle through a nested module and a `super` path.
        ("b/c.rs", "struct Thing;\nfn g() { super::super::a::f(); }"),
        // Comments, strings and test items do not count.
        (
            "d.rs",
            "// use crate::a;\nconst S: &str = \"crate::a::f\";\n#[cfg(test)]\nmod tests { use crate::a::f; }\nfn h<'a>(x: &'a str) -> char { 'c' }",
        ),
    ];
    let sources: Vec<(String, String)> = files
        .iter()
        .map(|(p, s)| (p.to_string(), s.to_string()))
        .collect();
    let graph = graph_of(&sources);
    assert_eq!(graph["a"], BTreeSet::from(["b::c".to_string()]));
    assert_eq!(graph["b::c"], BTreeSet::from(["a".to_string()]));
    assert!(graph["d"].is_empty(), "{:?}", graph["d"]);
    let cycle = find_cycle(&collapse(&graph, usize::MAX)).expect("a -> b::c -> a");
    assert_eq!(cycle, ["a", "b::c", "a"]);
    let cycle = find_cycle(&collapse(&graph, 1)).expect("a -> b -> a");
    assert_eq!(cycle, ["a", "b", "a"]);
    let braces = graph_of(&[
        (
            "x.rs".to_string(),
            "use crate::{a::{self, f}, b::c::g};".into(),
        ),
        ("a.rs".to_string(), String::new()),
        ("b/mod.rs".to_string(), String::new()),
        ("b/c.rs".to_string(), String::new()),
    ]);
    assert_eq!(
        braces["x"],
        BTreeSet::from(["a".to_string(), "b::c".to_string()])
    );
}

/// Every `.rs` file under `src/` (but the binary), as (path relative to
/// `src/`, text).
fn read_src() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                if rel != "main.rs" {
                    out.push((rel, std::fs::read_to_string(&path).unwrap()));
                }
            }
        }
    }
    out
}

/// `sip/proxy/mod.rs` → `sip::proxy`; `lib.rs` → `` (the crate root).
fn module_of(rel: &str) -> String {
    let rel = rel.trim_end_matches(".rs");
    let rel = rel.strip_suffix("/mod").unwrap_or(rel);
    if rel == "lib" {
        return String::new();
    }
    rel.replace('/', "::")
}

fn graph_of(sources: &[(String, String)]) -> Graph {
    let modules: BTreeSet<String> = sources.iter().map(|(p, _)| module_of(p)).collect();
    let mut graph = Graph::new();
    for (path, text) in sources {
        let me = module_of(path);
        let code = code_only(text);
        let mut deps = BTreeSet::new();
        for raw in paths_in(&code) {
            let Some(abs) = absolute(&me, &raw) else {
                continue;
            };
            // The deepest module the path points into.
            let segs: Vec<&str> = abs.split("::").collect();
            let target = (1..=segs.len())
                .rev()
                .map(|n| segs[..n].join("::"))
                .find(|m| modules.contains(m));
            if let Some(t) = target
                && t != me
            {
                deps.insert(t);
            }
        }
        graph.insert(me, deps);
    }
    graph
}

/// A `crate::`/`super::` path made absolute from module `me`.
fn absolute(me: &str, path: &str) -> Option<String> {
    let mut segs: Vec<&str> = path.split("::").collect();
    let mut base: Vec<&str> = if me.is_empty() {
        vec![]
    } else {
        me.split("::").collect()
    };
    match segs.first() {
        Some(&"crate") => {
            base.clear();
            segs.remove(0);
        }
        Some(&"super") => {
            while segs.first() == Some(&"super") {
                base.pop()?;
                segs.remove(0);
            }
        }
        _ => return None,
    }
    base.extend(segs);
    Some(base.join("::"))
}

/// Every path starting `crate::` or `super::` in the code, with `use` groups
/// (`crate::a::{b, c::d}`) expanded.
fn paths_in(code: &str) -> Vec<String> {
    let bytes: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0
            || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_' || bytes[i - 1] == ':');
        let rest: String = bytes[i..bytes.len().min(i + 7)].iter().collect();
        if starts_word && (rest.starts_with("crate::") || rest.starts_with("super::")) {
            let (paths, end) = parse_tree(&bytes, i);
            out.extend(paths);
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// Parses `a::b::{c, d::e}` at `i`: the full paths and where it ends.
fn parse_tree(s: &[char], mut i: usize) -> (Vec<String>, usize) {
    let mut prefix = String::new();
    loop {
        let start = i;
        while i < s.len() && (s[i].is_alphanumeric() || s[i] == '_') {
            i += 1;
        }
        let seg: String = s[start..i].iter().collect();
        if !seg.is_empty() {
            if !prefix.is_empty() {
                prefix.push_str("::");
            }
            prefix.push_str(&seg);
        }
        if s[i..].starts_with(&[':', ':']) {
            i += 2;
            if i < s.len() && s[i] == '{' {
                // A group: each item is a tree of its own under the prefix.
                i += 1;
                let mut out = Vec::new();
                loop {
                    while i < s.len() && (s[i].is_whitespace() || s[i] == ',') {
                        i += 1;
                    }
                    if i >= s.len() || s[i] == '}' {
                        return (out, i + 1);
                    }
                    let (inner, end) = parse_tree(s, i);
                    for p in inner {
                        if p == "self" {
                            out.push(prefix.clone());
                        } else {
                            out.push(format!("{prefix}::{p}"));
                        }
                    }
                    i = end;
                }
            }
            continue;
        }
        return (vec![prefix], i);
    }
}

/// The text without comments, string and char literals, and without the
/// item after each `#[cfg(test)]`.
fn code_only(text: &str) -> String {
    let s: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < s.len() {
        let at = |k: usize| s.get(i + k).copied().unwrap_or('\0');
        if at(0) == '/' && at(1) == '/' {
            while i < s.len() && s[i] != '\n' {
                i += 1;
            }
        } else if at(0) == '/' && at(1) == '*' {
            i += 2;
            while i < s.len() && !(s[i] == '*' && s.get(i + 1) == Some(&'/')) {
                i += 1;
            }
            i += 2;
        } else if at(0) == 'r' && (at(1) == '"' || (at(1) == '#' && (at(2) == '"' || at(2) == '#')))
        {
            let mut hashes = 0;
            i += 1;
            while i < s.len() && s[i] == '#' {
                hashes += 1;
                i += 1;
            }
            i += 1;
            let close: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            while i < s.len() && !s[i..].starts_with(&close) {
                i += 1;
            }
            i += close.len();
            out.push_str("\"\"");
        } else if at(0) == '"' {
            i += 1;
            while i < s.len() && s[i] != '"' {
                i += if s[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if at(0) == '\'' && (at(1) == '\\' || at(2) == '\'') {
            // A char literal ('x', '\n', '\''), not a lifetime.
            i += if at(1) == '\\' { 2 } else { 1 };
            while i < s.len() && s[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else if s[i..].starts_with(&"#[cfg(test)]".chars().collect::<Vec<_>>()) {
            // Skip the item: up to its `;`, or its balanced `{ … }`.
            while i < s.len() && s[i] != '{' && s[i] != ';' {
                i += 1;
            }
            if i < s.len() && s[i] == '{' {
                let mut depth = 0;
                while i < s.len() {
                    match s[i] {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            i += 1;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// The graph with every module cut to its first `depth` segments, edges
/// between a module and the modules inside it dropped.
fn collapse(graph: &Graph, depth: usize) -> Graph {
    let cut = |m: &str| m.split("::").take(depth).collect::<Vec<_>>().join("::");
    let inside = |a: &str, b: &str| {
        a.is_empty()
            || b.is_empty()
            || a == b
            || a.starts_with(&format!("{b}::"))
            || b.starts_with(&format!("{a}::"))
    };
    let mut out = Graph::new();
    for (from, tos) in graph {
        let f = cut(from);
        let entry = out.entry(f.clone()).or_default();
        for to in tos {
            let t = cut(to);
            if !inside(&f, &t) {
                entry.insert(t);
            }
        }
    }
    out
}

/// One cycle, as the modules along it (first repeated last), if any.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit(
        graph: &Graph,
        node: &str,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_string(), Mark::OnPath);
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            match marks.get(next.as_str()).copied().unwrap_or(Mark::New) {
                Mark::OnPath => {
                    let start = path.iter().position(|p| p == next).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(graph, next, marks, path) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if marks.get(node.as_str()).copied().unwrap_or(Mark::New) == Mark::New
            && let Some(c) = visit(graph, node, &mut marks, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}
