//! Named contexts (`--build-context NAME=VALUE`): which names they stand
//! for, and the stages they replace. BuildKit's dockerfile frontend is the
//! model (`dockerui.NamedContext`, `dockerfile2llb`'s `namedContext`
//! calls): a context replaces a stage of its name, else it is what `FROM
//! NAME`, `COPY --from=NAME` and `RUN --mount=from=NAME` read before any
//! image. Rules only: the states they give are the solver's
//! (`solver::named`).

use strata_frontend::{Graph, Stage};

use crate::api::{BuildOptions, NamedContext, named_context_name};

/// The named context `name` (a FROM base, a `--from`, a stage name) stands
/// for, with its normalised name. `scratch` and `context` never name one,
/// as in BuildKit's `namedContextFunc`.
pub(crate) fn named_context<'o>(
    opts: &'o BuildOptions,
    name: &str,
) -> Option<(String, &'o NamedContext)> {
    if opts.named_contexts.is_empty()
        || name.eq_ignore_ascii_case("scratch")
        || name.eq_ignore_ascii_case("context")
    {
        return None;
    }
    let key = named_context_name(name)?;
    opts.named_contexts.get(&key).map(|c| (key, c))
}

/// `graph` with the stages a named context replaces cut loose: their own
/// base and `--from` stages are not read (BuildKit never dispatches a
/// replaced stage), so `needed` holds only what the target still reaches.
pub(crate) fn without_replaced_stages(
    mut graph: Graph,
    stages: &[Stage],
    opts: &BuildOptions,
) -> Graph {
    let replaced: Vec<usize> = stages
        .iter()
        .filter(|s| {
            s.name
                .as_deref()
                .is_some_and(|n| named_context(opts, n).is_some())
        })
        .map(|s| s.index)
        .collect();
    if replaced.is_empty() {
        return graph;
    }
    for &i in &replaced {
        if let Some(edges) = graph.edges.get_mut(i) {
            edges.clear();
        }
    }
    let mut needed = vec![graph.target];
    let mut next = 0;
    while next < needed.len() {
        for d in graph.stage_deps(needed[next]) {
            if !needed.contains(&d) {
                needed.push(d);
            }
        }
        next += 1;
    }
    needed.sort_unstable();
    // Depths again, in index order: a needed stage reads only earlier ones.
    let mut depth: Vec<Option<usize>> = vec![None; graph.depth.len()];
    for &i in &needed {
        depth[i] = Some(
            graph
                .stage_deps(i)
                .iter()
                .map(|d| depth[*d].map_or(0, |x| x + 1))
                .max()
                .unwrap_or(0),
        );
    }
    graph.depth = depth;
    graph.needed = needed;
    graph
}
