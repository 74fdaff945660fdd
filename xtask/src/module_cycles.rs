//! `cargo xtask module-cycles [CRATE_DIR...]`: finds import cycles between
//! the modules of each crate (default: every crate under `crates/`, and
//! `xtask`).
//!
//! The module tree comes from the `mod NAME;` declarations, starting at
//! `src/lib.rs` (or `src/main.rs`). A module depends on another when its
//! code names it: `crate::a::b`, `super::x`, `self::x`, or a child module's
//! name followed by `::`, in `use` items (groups included) and inline paths
//! alike; the target is the deepest module the path names, so
//! `crate::a::Item` is an edge to `a` and `super::helper_fn` one to the
//! parent. Comments, string literals and everything from the first
//! `#[cfg(test)]` on are ignored (tests may reach anywhere), and so are the
//! crate root's `mod` and `pub use` lines: lib.rs is the table of contents,
//! re-exporting is not depending. The root's other code counts like any
//! module's. A cycle is a strongly connected set of two or more modules; each
//! is printed with the references that close it. Exits 1 when there is one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One module: its path from the crate root and its (cleaned) source.
struct Module {
    path: Vec<String>,
    file: PathBuf,
    /// Source with comments and literals blanked, cut at `#[cfg(test)]`.
    code: String,
    children: Vec<String>,
}

/// A dependency of one module on another, with where it is written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: usize,
    to: usize,
    line: usize,
}

pub fn run(out: &mut dyn std::io::Write, top: &Path, dirs: &[PathBuf]) -> anyhow::Result<bool> {
    let mut dirs = dirs.to_vec();
    if dirs.is_empty() {
        for e in std::fs::read_dir(top.join("crates"))? {
            let p = e?.path();
            if p.join("Cargo.toml").is_file() {
                dirs.push(p);
            }
        }
        dirs.push(top.join("xtask"));
        dirs.sort();
    }
    let mut clean = true;
    for dir in &dirs {
        let src = dir.join("src");
        let root = ["lib.rs", "main.rs"]
            .iter()
            .map(|f| src.join(f))
            .find(|p| p.is_file())
            .ok_or_else(|| anyhow::anyhow!("{}: no src/lib.rs or src/main.rs", dir.display()))?;
        let modules = load_tree(&root)?;
        let edges = edges(&modules);
        let cycles = strongly_connected(modules.len(), &edges);
        let name = dir.file_name().map_or_else(
            || dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        if cycles.is_empty() {
            writeln!(
                out,
                "{name}: {} modules, {} edges, no cycle",
                modules.len(),
                edges.len()
            )?;
            continue;
        }
        clean = false;
        for cycle in cycles {
            let names: Vec<String> = cycle.iter().map(|&m| display(&modules[m])).collect();
            writeln!(out, "{name}: cycle between {}", names.join(", "))?;
            for e in edges
                .iter()
                .filter(|e| cycle.contains(&e.from) && cycle.contains(&e.to))
            {
                writeln!(
                    out,
                    "  {} -> {}  ({}:{})",
                    display(&modules[e.from]),
                    display(&modules[e.to]),
                    modules[e.from].file.display(),
                    e.line
                )?;
            }
        }
    }
    Ok(clean)
}

fn display(m: &Module) -> String {
    if m.path.is_empty() {
        "crate".to_string()
    } else {
        m.path.join("::")
    }
}

/// Reads the crate's module tree from its root file.
fn load_tree(root: &Path) -> anyhow::Result<Vec<Module>> {
    let mut modules = Vec::new();
    // (module path, file, directory its children live in)
    let mut queue = vec![(Vec::new(), root.to_path_buf(), root_dir(root))];
    while let Some((path, file, child_dir)) = queue.pop() {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let code = blank(&text);
        let code = match code.find("#[cfg(test)]") {
            Some(i) => code[..i].to_string(),
            None => code,
        };
        let children = mod_declarations(&code);
        for child in &children {
            let flat = child_dir.join(format!("{child}.rs"));
            let nested = child_dir.join(child).join("mod.rs");
            let (child_file, grandchild_dir) = if flat.is_file() {
                (flat, child_dir.join(child))
            } else if nested.is_file() {
                (nested, child_dir.join(child))
            } else {
                anyhow::bail!(
                    "{}: module {child} has neither {} nor {}",
                    file.display(),
                    flat.display(),
                    nested.display()
                );
            };
            let mut p = path.clone();
            p.push(child.clone());
            queue.push((p, child_file, grandchild_dir));
        }
        modules.push(Module {
            path,
            file,
            code,
            children,
        });
    }
    modules.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(modules)
}

fn root_dir(root: &Path) -> PathBuf {
    root.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// `mod NAME;` declarations (with any visibility); inline `mod NAME { }`
/// blocks are part of their file's module and not followed.
fn mod_declarations(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in code.lines() {
        let mut rest = line.trim();
        if let Some(r) = rest.strip_prefix("pub") {
            rest = r.trim_start();
            if rest.starts_with('(') {
                let Some(close) = rest.find(')') else {
                    continue;
                };
                rest = rest[close + 1..].trim_start();
            }
        }
        let Some(r) = rest.strip_prefix("mod ") else {
            continue;
        };
        let r = r.trim();
        if let Some(name) = r.strip_suffix(';') {
            out.push(name.trim().to_string());
        }
    }
    out
}

/// Every module-to-module reference outside comments, literals and tests.
fn edges(modules: &[Module]) -> Vec<Edge> {
    let index: BTreeMap<&[String], usize> = modules
        .iter()
        .enumerate()
        .map(|(i, m)| (m.path.as_slice(), i))
        .collect();
    let mut out = BTreeSet::new();
    for (from, m) in modules.iter().enumerate() {
        for (line_no, line) in m.code.lines().enumerate() {
            let t = line.trim_start();
            if m.path.is_empty()
                && (t.starts_with("pub use ")
                    || t.starts_with("mod ")
                    || t.starts_with("pub mod ")
                    || t.starts_with("pub(crate) mod "))
            {
                continue;
            }
            for (base, paths) in references(line, &m.children) {
                let start: Vec<String> = match base {
                    Base::Crate => Vec::new(),
                    Base::Super(n) => {
                        let keep = m.path.len().saturating_sub(n);
                        m.path[..keep].to_vec()
                    }
                    Base::SelfMod => m.path.clone(),
                };
                for segs in paths {
                    let mut target = start.clone();
                    for s in segs {
                        target.push(s);
                        if !index.contains_key(target.as_slice()) {
                            target.pop();
                            break;
                        }
                    }
                    if let Some(&to) = index.get(target.as_slice())
                        && to != from
                    {
                        out.insert(Edge {
                            from,
                            to,
                            line: line_no + 1,
                        });
                    }
                }
            }
        }
    }
    // One edge per module pair (the first place it is written).
    let mut seen = BTreeSet::new();
    out.into_iter()
        .filter(|e| seen.insert((e.from, e.to)))
        .collect()
}

enum Base {
    Crate,
    Super(usize),
    SelfMod,
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths a line names, each with where it starts: `crate::`,
/// `super::` (repeated), `self::`, or a child module (as `self::child`).
fn references(line: &str, children: &[String]) -> Vec<(Base, Vec<Vec<String>>)> {
    let mut out = Vec::new();
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let boundary = i == 0 || !(is_ident(chars[i - 1]) || chars[i - 1] == ':');
        if !boundary || !is_ident(chars[i]) {
            i += 1;
            continue;
        }
        let word_end = (i..chars.len())
            .find(|&j| !is_ident(chars[j]))
            .unwrap_or(chars.len());
        let word: String = chars[i..word_end].iter().collect();
        let followed = chars.get(word_end) == Some(&':') && chars.get(word_end + 1) == Some(&':');
        if !followed {
            i = word_end;
            continue;
        }
        let mut pos = word_end + 2;
        let base = match word.as_str() {
            "crate" => Base::Crate,
            "self" => Base::SelfMod,
            "super" => {
                let mut n = 1;
                while chars[pos..].starts_with(&['s', 'u', 'p', 'e', 'r', ':', ':']) {
                    n += 1;
                    pos += 7;
                }
                Base::Super(n)
            }
            w if children.iter().any(|c| c == w) => {
                // A child module named directly: the tree starts at the word.
                pos = i;
                Base::SelfMod
            }
            _ => {
                i = word_end;
                continue;
            }
        };
        let (paths, end) = use_tree(&chars, pos);
        out.push((base, paths));
        i = end.max(i + 1);
    }
    out
}

/// Parses a path or `use` tree at `pos`: `a::b::{c, d::e}`. Returns the
/// segment lists it names and where it ends.
fn use_tree(chars: &[char], mut pos: usize) -> (Vec<Vec<String>>, usize) {
    let skip_ws = |p: &mut usize| {
        while *p < chars.len() && chars[*p].is_whitespace() {
            *p += 1;
        }
    };
    skip_ws(&mut pos);
    if chars.get(pos) == Some(&'{') {
        pos += 1;
        let mut all = Vec::new();
        loop {
            skip_ws(&mut pos);
            match chars.get(pos) {
                None => return (all, pos),
                Some('}') => return (all, pos + 1),
                Some(',') => pos += 1,
                Some(_) => {
                    let (paths, end) = use_tree(chars, pos);
                    all.extend(paths);
                    if end == pos {
                        pos += 1;
                    } else {
                        pos = end;
                    }
                }
            }
        }
    }
    let start = pos;
    while pos < chars.len() && is_ident(chars[pos]) {
        pos += 1;
    }
    if pos == start {
        return (vec![Vec::new()], pos);
    }
    let seg: String = chars[start..pos].iter().collect();
    if chars.get(pos) == Some(&':') && chars.get(pos + 1) == Some(&':') {
        let (rest, end) = use_tree(chars, pos + 2);
        let paths = rest
            .into_iter()
            .map(|mut r| {
                if seg != "self" {
                    r.insert(0, seg.clone());
                }
                r
            })
            .collect();
        return (paths, end);
    }
    let path = if seg == "self" { Vec::new() } else { vec![seg] };
    (vec![path], pos)
}

/// Blanks comments and string/char literals (keeping line breaks), so that
/// paths inside them are not read as references.
fn blank(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let keep_newlines = |s: &[char], out: &mut String| {
        for ch in s {
            out.push(if *ch == '\n' { '\n' } else { ' ' });
        }
    };
    while i < c.len() {
        let rest = &c[i..];
        if rest.starts_with(&['/', '/']) {
            let end = (i..c.len()).find(|&j| c[j] == '\n').unwrap_or(c.len());
            keep_newlines(&c[i..end], &mut out);
            i = end;
        } else if rest.starts_with(&['/', '*']) {
            let mut depth = 0;
            let mut j = i;
            while j < c.len() {
                if c[j..].starts_with(&['/', '*']) {
                    depth += 1;
                    j += 2;
                } else if c[j..].starts_with(&['*', '/']) {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            keep_newlines(&c[i..j.min(c.len())], &mut out);
            i = j;
        } else if c[i] == 'r'
            && (i == 0 || !is_ident(c[i - 1]))
            && matches!(c.get(i + 1), Some('"' | '#'))
        {
            // Raw string: r"..." or r#"..."#.
            let hashes = c[i + 1..].iter().take_while(|&&ch| ch == '#').count();
            if c.get(i + 1 + hashes) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            let body = i + 2 + hashes;
            let mut j = body;
            while j < c.len() {
                if c[j] == '"'
                    && c[j + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&h| h == '#')
                        .count()
                        == hashes
                {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            keep_newlines(&c[i..j.min(c.len())], &mut out);
            i = j;
        } else if c[i] == '"' {
            let mut j = i + 1;
            while j < c.len() && c[j] != '"' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(c.len());
            keep_newlines(&c[i..end], &mut out);
            i = end;
        } else if c[i] == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            let close = if c.get(i + 1) == Some(&'\\') {
                (i + 3..c.len().min(i + 12)).find(|&j| c[j] == '\'')
            } else if c.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match close {
                Some(j) => {
                    keep_newlines(&c[i..=j], &mut out);
                    i = j + 1;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// Tarjan's algorithm: the strongly connected components with two or more
/// nodes, each sorted, in order of their smallest node.
fn strongly_connected(n: usize, edges: &[Edge]) -> Vec<Vec<usize>> {
    struct State {
        adj: Vec<Vec<usize>>,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for k in 0..s.adj[v].len() {
            let w = s.adj[v][k];
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort_unstable();
                s.out.push(comp);
            }
        }
    }
    let mut adj = vec![Vec::new(); n];
    for e in edges {
        adj[e.from].push(e.to);
    }
    let mut s = State {
        adj,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.out.sort();
    s.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (name, text) in files {
            let p = dir.join(name);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
    }

    fn check(files: &[(&str, &str)]) -> (bool, String) {
        let dir = tempfile::tempdir().expect("tmp");
        write(dir.path(), files);
        let mut out = Vec::new();
        let clean = run(&mut out, dir.path(), &[dir.path().to_path_buf()]).expect("run");
        (clean, String::from_utf8(out).expect("utf8"))
    }

    #[test]
    fn finds_a_cycle_through_use_groups_and_super() {
        let (clean, out) = check(&[
            ("src/lib.rs", "mod a;\nmod b;\npub use a::A;\n"),
            ("src/a.rs", "use crate::{b::{self, B}};\npub struct A;\n"),
            (
                "src/b/mod.rs",
                "mod c;\npub struct B;\nfn f() { c::g(); }\n",
            ),
            ("src/b/c.rs", "pub fn g() { super::super::a::A; }\n"),
        ]);
        assert!(!clean, "{out}");
        assert!(out.contains("cycle between a, b, b::c"), "{out}");
        assert!(out.contains("b::c -> a"), "{out}");
    }

    #[test]
    fn leaves_first_has_no_cycle() {
        let (clean, out) = check(&[
            ("src/lib.rs", "mod a;\nmod b;\npub use b::run;\n"),
            (
                "src/a.rs",
                "// uses crate::b in a comment only\npub struct A;\nconst S: &str = \"crate::b::x\";\n",
            ),
            (
                "src/b.rs",
                "use crate::a::A;\npub fn run() -> A { A }\n#[cfg(test)]\nmod tests { use crate::b; }\n",
            ),
        ]);
        assert!(clean, "{out}");
        assert!(out.contains("3 modules, 1 edges, no cycle"), "{out}");
    }

    #[test]
    fn a_child_using_its_parent_is_a_cycle_when_the_parent_uses_it() {
        let (clean, out) = check(&[
            ("src/main.rs", "mod h;\nfn main() { h::go(); }\n"),
            (
                "src/h/mod.rs",
                "mod s;\npub fn go() { s::step(); }\nfn err() {}\n",
            ),
            ("src/h/s.rs", "pub fn step() { super::err(); }\n"),
        ]);
        assert!(!clean, "{out}");
        assert!(out.contains("cycle between h, h::s"), "{out}");
    }
}
