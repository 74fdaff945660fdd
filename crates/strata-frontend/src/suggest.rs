//! "Did you mean" suggestions, as BuildKit's `util/suggest` makes them: for
//! unknown flags (the parser) and the build checks (lint).

/// The reference's `suggest.Search`: the closest option at edit distance
/// under 3 (first one wins a tie), none when `value` is itself an option.
pub(crate) fn closest<'o>(
    value: &str,
    options: impl IntoIterator<Item = &'o str>,
    case_sensitive: bool,
) -> Option<String> {
    let fold = |s: &str| {
        if case_sensitive {
            s.to_owned()
        } else {
            s.to_lowercase()
        }
    };
    let v = fold(value);
    let mut best: Option<(usize, String)> = None;
    for opt in options {
        let o = fold(opt);
        if o == v {
            return None;
        }
        let d = strsim::levenshtein(&v, &o);
        if d < best.as_ref().map_or(3, |b| b.0) {
            let shown = if case_sensitive {
                o
            } else if value == value.to_lowercase() {
                o.to_lowercase()
            } else if value == value.to_uppercase() {
                o.to_uppercase()
            } else {
                o
            };
            best = Some((d, shown));
        }
    }
    best.map(|b| b.1)
}
