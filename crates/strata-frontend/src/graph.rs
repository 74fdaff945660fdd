//! The stage graph: which stage reads which (FROM, `COPY --from`,
//! `RUN --mount=from=`), what the target needs, which stages may run at the
//! same time, and the reference's errors for bad references.
//!
//! Reference behaviour (moby/buildkit `dockerfile2llb/convert.go`):
//! - FROM names a stage only when that stage is defined earlier; otherwise
//!   it is an image (`dispatchStates.addState`).
//! - `COPY --from=N` is a stage index, out of range is "invalid stage index";
//!   `COPY --from=NAME` and `RUN --mount=from=NAME` name a stage anywhere in
//!   the file, else an image, which must parse as a reference ("failed to
//!   parse stage name"); `--from` is not expanded.
//! - A cycle is "circular dependency detected on stage", checked over all
//!   stages; reading a stage defined later is "cannot copy from stage ...,
//!   it needs to be defined before current stage", raised when a needed
//!   stage is dispatched.
//! - Duplicate stage names are only a lint warning there (later one wins);
//!   strata refuses them (see docs/decisions.md).

use crate::{Diagnostic, Dockerfile, Instruction, Stage};

/// How a stage reads another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EdgeKind {
    /// `FROM <stage>`.
    Base,
    /// `COPY --from=<stage>`.
    CopyFrom,
    /// `RUN --mount=from=<stage>`.
    MountFrom,
}

/// A stage or an image, as FROM or `--from` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Stage(usize),
    Image(String),
}

/// One use of another stage or an image by a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub source: Source,
    pub kind: EdgeKind,
    /// The instruction's first line.
    pub line: usize,
}

/// The resolved graph for one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    /// Per stage, its uses of stages and images in instruction order.
    pub edges: Vec<Vec<Edge>>,
    pub target: usize,
    /// The stages the target needs (itself included), ascending.
    pub needed: Vec<usize>,
    /// Per needed stage, its depth in the dependency DAG: 0 reads no stage,
    /// else one more than the deepest stage it reads. Stages of one depth
    /// do not depend on each other and may run at once.
    pub depth: Vec<Option<usize>>,
}

impl Graph {
    /// The stages stage `i` reads, ascending, each once.
    pub fn stage_deps(&self, i: usize) -> Vec<usize> {
        let mut out: Vec<usize> = self.edges[i]
            .iter()
            .filter_map(|e| match e.source {
                Source::Stage(s) => Some(s),
                Source::Image(_) => None,
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The needed stages grouped by depth: each group may run at once.
    pub fn levels(&self) -> Vec<Vec<usize>> {
        let mut out: Vec<Vec<usize>> = Vec::new();
        for &i in &self.needed {
            if let Some(d) = self.depth[i] {
                if out.len() <= d {
                    out.resize(d + 1, Vec::new());
                }
                out[d].push(i);
            }
        }
        out
    }

    /// The stages `--target` leaves out.
    pub fn pruned(&self) -> Vec<usize> {
        (0..self.edges.len())
            .filter(|i| !self.needed.contains(i))
            .collect()
    }
}

/// The `from=` values of RUN's `--mount` flags that name a source (every
/// type but tmpfs; cache mounts without `from` use an empty directory).
pub fn mount_sources(ins: &Instruction) -> Vec<String> {
    let mut out = Vec::new();
    for spec in ins.flag_all("mount") {
        let mut kind = "bind";
        let mut from = None;
        for part in spec.split(',') {
            match part.split_once('=') {
                Some((k, v)) if k.trim().eq_ignore_ascii_case("type") => kind = v.trim(),
                Some((k, v)) if k.trim().eq_ignore_ascii_case("from") => from = Some(v.trim()),
                _ => {}
            }
        }
        if let Some(f) = from
            && !f.is_empty()
            && !kind.eq_ignore_ascii_case("tmpfs")
        {
            out.push(f.to_owned());
        }
    }
    out
}

/// Builds and checks the graph; `target` is a stage name (the last stage
/// when `None`).
pub fn graph(df: &Dockerfile, stages: &[Stage], target: Option<&str>) -> Result<Graph, Diagnostic> {
    let by_name = |name: &str| {
        let lower = name.to_lowercase();
        stages
            .iter()
            .find(|s| s.name.as_deref() == Some(lower.as_str()))
            .map(|s| s.index)
    };
    let image = |name: &str, ins: &Instruction| -> Result<Source, Diagnostic> {
        match reference_error(name) {
            None => Ok(Source::Image(name.to_owned())),
            Some(why) => {
                let hint = suggest(name, stages)
                    .map(|s| format!(" (did you mean stage {s:?}?)"))
                    .unwrap_or_default();
                Err(df.error(
                    ins,
                    &format!("failed to parse stage name {name:?}: {why}{hint}"),
                ))
            }
        }
    };
    let mut edges = Vec::with_capacity(stages.len());
    for s in stages {
        let mut e = Vec::new();
        let base = match by_name(&s.base) {
            Some(i) if i < s.index => Source::Stage(i),
            _ if s.base == "scratch" => Source::Image(s.base.clone()),
            _ => image(&s.base, &s.from)?,
        };
        e.push(Edge {
            source: base,
            kind: EdgeKind::Base,
            line: s.from.line,
        });
        for ins in &s.instructions {
            if ins.keyword == "copy"
                && let Some(from) = ins.flag("from")
            {
                let source = if let Ok(i) = from.parse::<i64>() {
                    match usize::try_from(i).ok().filter(|&i| i < stages.len()) {
                        Some(i) => Source::Stage(i),
                        None => return Err(df.error(ins, &format!("invalid stage index {i}"))),
                    }
                } else if from.is_empty() {
                    return Err(df.error(ins, "COPY --from needs a stage name, index or image"));
                } else {
                    match by_name(from) {
                        Some(i) => Source::Stage(i),
                        None => image(from, ins)?,
                    }
                };
                e.push(Edge {
                    source,
                    kind: EdgeKind::CopyFrom,
                    line: ins.line,
                });
            }
            if ins.keyword == "run" {
                for from in mount_sources(ins) {
                    let source = match by_name(&from) {
                        Some(i) => Source::Stage(i),
                        None => image(&from, ins)?,
                    };
                    e.push(Edge {
                        source,
                        kind: EdgeKind::MountFrom,
                        line: ins.line,
                    });
                }
            }
        }
        edges.push(e);
    }
    check_cycles(df, stages, &edges)?;

    let target = match target {
        None => stages.len().saturating_sub(1),
        Some(t) => by_name(t).ok_or_else(|| Diagnostic {
            file: df.file.clone(),
            line: 1,
            column: 1,
            message: format!(
                "target stage {t:?} could not be found{}",
                suggest(t, stages)
                    .map(|s| format!(" (did you mean {s:?}?)"))
                    .unwrap_or_default()
            ),
            source_line: String::new(),
        })?,
    };
    let mut needed = vec![target];
    let mut k = 0;
    while k < needed.len() {
        let i = needed[k];
        for e in &edges[i] {
            if let Source::Stage(d) = e.source {
                if d >= i {
                    let ins = instruction_at(&stages[i], e.line);
                    let verb = if e.kind == EdgeKind::MountFrom {
                        "mount from"
                    } else {
                        "copy from"
                    };
                    return Err(df.error(
                        ins,
                        &format!(
                            "cannot {verb} stage {:?}, it needs to be defined before current stage {:?}",
                            stage_label(&stages[d]),
                            stage_label(&stages[i])
                        ),
                    ));
                }
                if !needed.contains(&d) {
                    needed.push(d);
                }
            }
        }
        k += 1;
    }
    needed.sort_unstable();
    let mut depth = vec![None; stages.len()];
    // Needed stages only read earlier stages (checked above), so index
    // order is a topological order.
    for &i in &needed {
        let d = edges[i]
            .iter()
            .filter_map(|e| match e.source {
                Source::Stage(s) => depth[s].map(|d: usize| d + 1),
                Source::Image(_) => None,
            })
            .max()
            .unwrap_or(0);
        depth[i] = Some(d);
    }
    Ok(Graph {
        edges,
        target,
        needed,
        depth,
    })
}

/// A stage's name, or `stage-N` as the reference calls unnamed stages.
pub fn stage_label(s: &Stage) -> String {
    s.name
        .clone()
        .unwrap_or_else(|| format!("stage-{}", s.index))
}

fn instruction_at(stage: &Stage, line: usize) -> &Instruction {
    stage
        .instructions
        .iter()
        .find(|i| i.line == line)
        .unwrap_or(&stage.from)
}

fn check_cycles(df: &Dockerfile, stages: &[Stage], edges: &[Vec<Edge>]) -> Result<(), Diagnostic> {
    // 0 unvisited, 1 on the current path, 2 done.
    let mut state = vec![0u8; stages.len()];
    for start in 0..stages.len() {
        if state[start] != 0 {
            continue;
        }
        // Iterative DFS: (stage, next edge to look at).
        let mut stack = vec![(start, 0usize)];
        state[start] = 1;
        while let Some(&mut (i, ref mut next)) = stack.last_mut() {
            if let Some(e) = edges[i].get(*next) {
                *next += 1;
                if let Source::Stage(d) = e.source {
                    match state[d] {
                        0 => {
                            state[d] = 1;
                            stack.push((d, 0));
                        }
                        1 => {
                            return Err(df.error(
                                instruction_at(&stages[i], e.line),
                                &format!(
                                    "circular dependency detected on stage: {}",
                                    stage_label(&stages[start])
                                ),
                            ));
                        }
                        _ => {}
                    }
                }
            } else {
                state[i] = 2;
                stack.pop();
            }
        }
    }
    Ok(())
}

/// The nearest stage name to `name`, when close enough to be a typo.
fn suggest<'a>(name: &str, stages: &'a [Stage]) -> Option<&'a str> {
    let lower = name.to_lowercase();
    stages
        .iter()
        .filter_map(|s| s.name.as_deref())
        .map(|n| (strsim::levenshtein(n, &lower), n))
        .filter(|(d, n)| *d > 0 && *d <= 2.max(n.len() / 3))
        .min()
        .map(|(_, n)| n)
}

/// Why `s` is not an image reference (`[domain/]path[:tag][@digest]`, the
/// distribution/reference grammar), or `None` when it is one. A bare hex
/// image ID (12 or more digits) is accepted too: strata's store has those.
pub fn reference_error(s: &str) -> Option<&'static str> {
    if s.len() >= 12
        && s.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    {
        return None;
    }
    if s.is_empty() {
        return Some("invalid reference format: empty name");
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        let ok = d.split_once(':').is_some_and(|(alg, hex)| {
            !alg.is_empty()
                && alg
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c))
                && hex.len() >= 32
                && hex.chars().all(|c| c.is_ascii_hexdigit())
        });
        if !ok {
            return Some("invalid reference format: bad digest");
        }
    }
    // A tag is after the last ':' that follows the last '/'.
    let last_slash = rest.rfind('/').map_or(0, |p| p + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(p) => (&rest[..last_slash + p], Some(&rest[last_slash + p + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return Some("invalid reference format: bad tag");
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1 {
        let first = parts[0];
        if first.contains('.') || first.contains(':') || first == "localhost" {
            let (host, port) = match first.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (first, None),
            };
            let host_ok = !host.is_empty()
                && host.split('.').all(|l| {
                    !l.is_empty()
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                });
            if !host_ok
                || port.is_some_and(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()))
            {
                return Some("invalid reference format: bad registry host");
            }
            parts.remove(0);
        }
    }
    if name.chars().any(|c| c.is_ascii_uppercase())
        && parts
            .iter()
            .any(|p| p.chars().any(|c| c.is_ascii_uppercase()))
    {
        return Some("invalid reference format: repository name must be lowercase");
    }
    for p in parts {
        if !path_component_ok(p) {
            return Some("invalid reference format");
        }
    }
    None
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn path_component_ok(p: &str) -> bool {
    let b = p.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &p[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
            return false;
        }
    }
    true
}
