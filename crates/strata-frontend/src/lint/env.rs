//! The environment the checks track while dispatching: what a stage leaves
//! for stages built on it, and word expansion that records which variables
//! were found. A leaf: `dispatch` (the stage list) and `stage` (one stage's
//! instructions) both use it.

use std::cell::RefCell;
use std::collections::BTreeSet;

use crate::GlobalScope;
use crate::expand::expand_word;

/// Build args the reference never puts in a step's environment, so never
/// reports as undefined.
pub(super) const NON_ENV_ARGS: &[&str] =
    &["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

/// What a dispatched stage leaves for stages built on it.
#[derive(Clone, Default)]
pub(super) struct StageState {
    /// `KEY=VALUE`, in the order they were set.
    pub(super) env: Vec<String>,
    /// A SHELL was set (then shell-form CMD is what the author chose).
    pub(super) shell_set: bool,
    /// ARG names declared (never "undefined", even unset).
    pub(super) declared: Vec<String>,
    /// A WORKDIR was set in this Dockerfile.
    pub(super) workdir_set: bool,
}

/// A global value as FROM lines see it: set ARGs only (one declared
/// without a value is unmatched, as in the reference's meta-arg list).
pub(super) fn global_value(global: &GlobalScope, k: &str) -> Option<String> {
    global.get(k).flatten().map(str::to_owned)
}

/// Expands `word`, returning the result and which variables were found
/// and not found (the reference's `ProcessWordWithMatches`).
pub(super) fn expand_tracked(
    word: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> (String, BTreeSet<String>, BTreeSet<String>) {
    let matched = RefCell::new(BTreeSet::new());
    let unmatched = RefCell::new(BTreeSet::new());
    let tracking = |k: &str| {
        let v = lookup(k);
        match &v {
            Some(_) => matched.borrow_mut().insert(k.to_owned()),
            None => unmatched.borrow_mut().insert(k.to_owned()),
        };
        v
    };
    let result = expand_word(word, &tracking, escape).unwrap_or_default();
    (result, matched.into_inner(), unmatched.into_inner())
}
