//! How the in-namespace side reports failures: as text, because text is
//! what crosses back to the parent (in the result file or on stderr).

/// Turns an error into "`what`: error", for `map_err`.
pub(super) fn err<E: std::fmt::Display>(what: impl std::fmt::Display) -> impl FnOnce(E) -> String {
    move |e| format!("{what}: {e}")
}
