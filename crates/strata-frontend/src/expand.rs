//! Shell-style word expansion as the reference applies it to instruction
//! arguments (never to RUN's shell text, which the shell expands): `$a`,
//! `${a}`, `${a:-x}`, `${a-x}`, `${a:+x}`, `${a+x}`, `${a:?m}`, `${a?m}`,
//! `${a#p}`, `${a##p}`, `${a%p}`, `${a%%p}`, quotes and escapes.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandError(pub String);

impl fmt::Display for ExpandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ExpandError {}

/// Expands one word: variables substituted, quotes removed, escapes applied.
pub fn expand_word(
    word: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<String, ExpandError> {
    let words = expand(word, lookup, escape, false, 0)?;
    Ok(words.concat())
}

/// Expands and splits on unquoted whitespace (ENV/LABEL/ARG word lists).
pub fn split_words(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<Vec<String>, ExpandError> {
    expand(text, lookup, escape, true, 0)
}

/// Splits `text` into words as the reference's parser does before any
/// expansion (`parseWords`: on unquoted, unescaped whitespace, quotes and
/// escapes kept), then expands each word as one (`ProcessWord`): a value
/// holding spaces never splits a word. ENV, LABEL, ARG and VOLUME words.
/// (`split_words`, expanding first, is `ProcessWords`: EXPOSE.)
pub fn expand_words(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<Vec<String>, ExpandError> {
    raw_words(text, escape)
        .iter()
        .map(|w| expand_word(w, lookup, escape))
        .collect()
}

/// `text` split on whitespace outside quotes and not escaped, each word as
/// written (quotes and escapes kept for the expansion).
fn raw_words(text: &str, escape: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match quote {
            None if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                continue;
            }
            None if c == '"' || c == '\'' => quote = Some(c),
            Some(q) if c == q => quote = None,
            _ => {}
        }
        cur.push(c);
        // An escape takes the next character with it, whitespace included
        // (not inside single quotes, where it is literal).
        if c == escape
            && quote != Some('\'')
            && let Some(n) = chars.next()
        {
            cur.push(n);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// How deeply `${a:-${b:-...}}` may nest: each level is a few stack
/// frames, and the solver's threads have small stacks.
const MAX_DEPTH: usize = 64;

/// The most bytes one expanded word may hold. Every value a Dockerfile can
/// build comes from words like this (ARG and ENV values are expanded
/// words), so doubling chains (`ARG B=$A$A`, `ARG C=$B$B`, ...) stop here
/// with an error instead of taking all memory: 39 doublings of a 10-byte
/// value asked for 5 TB. 1 MiB is far above any real argument (Linux's
/// own limit for one argument string is 128 KiB).
pub const MAX_WORD_BYTES: usize = 1 << 20;

/// The error for a word that grew past [`MAX_WORD_BYTES`].
fn too_long(len: usize) -> ExpandError {
    ExpandError(format!(
        "expanded word is longer than {MAX_WORD_BYTES} bytes ({len} bytes so far): \
         variables that repeat each other grow without bound"
    ))
}

/// Appends `v` to the word being built, refusing past [`MAX_WORD_BYTES`].
fn push_capped(cur: &mut String, v: &str) -> Result<(), ExpandError> {
    let len = cur.len() + v.len();
    if len > MAX_WORD_BYTES {
        return Err(too_long(len));
    }
    cur.push_str(v);
    Ok(())
}

fn expand(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    escape: char,
    split: bool,
    depth: usize,
) -> Result<Vec<String>, ExpandError> {
    if depth > MAX_DEPTH {
        return Err(ExpandError(format!(
            "substitutions nested more than {MAX_DEPTH} deep"
        )));
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if split && c.is_whitespace() {
            if in_word {
                out.push(std::mem::take(&mut cur));
                in_word = false;
            }
            i += 1;
            continue;
        }
        in_word = true;
        if c == escape {
            // A trailing escape with nothing to escape is dropped.
            if let Some(&n) = chars.get(i + 1) {
                cur.push(n);
            }
            i += 2;
        } else if c == '\'' {
            let end = find(&chars, i + 1, '\'').ok_or_else(|| {
                ExpandError(
                    "unexpected end of statement while looking for matching single-quote".into(),
                )
            })?;
            cur.extend(&chars[i + 1..end]);
            i = end + 1;
        } else if c == '"' {
            i += 1;
            loop {
                match chars.get(i) {
                    None => {
                        return Err(ExpandError(
                            "unexpected end of statement while looking for matching double-quote"
                                .into(),
                        ));
                    }
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some(&e) if e == escape => {
                        // Inside double quotes the escape only escapes these.
                        match chars.get(i + 1) {
                            Some(&n) if n == '"' || n == '$' || n == escape => {
                                cur.push(n);
                                i += 2;
                            }
                            _ => {
                                cur.push(e);
                                i += 1;
                            }
                        }
                    }
                    Some('$') => {
                        let (v, next) = variable(&chars, i, lookup, escape, depth)?;
                        push_capped(&mut cur, &v)?;
                        i = next;
                    }
                    Some(&o) => {
                        cur.push(o);
                        i += 1;
                    }
                }
            }
        } else if c == '$' {
            let (v, next) = variable(&chars, i, lookup, escape, depth)?;
            if split {
                if cur.len() + v.len() > MAX_WORD_BYTES {
                    return Err(too_long(cur.len() + v.len()));
                }
                // An unquoted value is itself split on whitespace.
                for vc in v.chars() {
                    if vc.is_whitespace() {
                        if in_word && !cur.is_empty() {
                            out.push(std::mem::take(&mut cur));
                        }
                        in_word = false;
                    } else {
                        cur.push(vc);
                        in_word = true;
                    }
                }
            } else {
                push_capped(&mut cur, &v)?;
            }
            i = next;
        } else {
            cur.push(c);
            i += 1;
        }
    }
    if in_word || !split {
        out.push(cur);
    }
    Ok(out)
}

/// `${v//p/r}` (all matches) and `${v/p/r}` (`limit` 1), refused before it
/// is built when the result would pass [`MAX_WORD_BYTES`] (an empty `p`
/// matches between every character).
fn replace_capped(v: &str, p: &str, r: &str, limit: usize) -> Result<String, ExpandError> {
    let matches = v.matches(p).take(limit).count();
    let len = (v.len() - matches * p.len()).saturating_add(matches.saturating_mul(r.len()));
    if len > MAX_WORD_BYTES {
        return Err(too_long(len));
    }
    Ok(v.replacen(p, r, limit))
}

fn find(chars: &[char], from: usize, c: char) -> Option<usize> {
    chars[from..].iter().position(|&x| x == c).map(|p| p + from)
}

/// Expands the variable at `chars[i] == '$'`; returns the value and the index after it.
fn variable(
    chars: &[char],
    i: usize,
    lookup: &dyn Fn(&str) -> Option<String>,
    escape: char,
    depth: usize,
) -> Result<(String, usize), ExpandError> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    match chars.get(i + 1) {
        Some('{') => {
            let mut j = i + 2;
            let start = j;
            if chars.get(j).is_some_and(|&c| is_special(c)) {
                j += 1;
            } else {
                while j < chars.len() && is_name(chars[j]) {
                    j += 1;
                }
            }
            let name: String = chars[start..j].iter().collect();
            if name.is_empty() {
                return Err(ExpandError(
                    "bad substitution: missing variable name in ${}".into(),
                ));
            }
            // The closing brace: escaped characters are skipped and only an
            // unescaped `${` nests, as the reference's lexer does.
            let mut open = 1;
            let mut k = j;
            while k < chars.len() {
                match chars[k] {
                    c if c == escape => k += 1,
                    '$' if chars.get(k + 1) == Some(&'{') => {
                        open += 1;
                        k += 1;
                    }
                    '}' => {
                        open -= 1;
                        if open == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                k += 1;
            }
            if k >= chars.len() {
                return Err(ExpandError(format!("missing '}}' in ${{{name}")));
            }
            let op: String = chars[j..k].iter().collect();
            let val = if is_special(name.chars().next().unwrap_or(' '))
                || name.starts_with(|c: char| c.is_ascii_digit())
            {
                None
            } else {
                lookup(&name)
            };
            let word = |w: &str| expand(w, lookup, escape, false, depth + 1).map(|w| w.concat());
            let result = if op.is_empty() {
                val.unwrap_or_default()
            } else if let Some((kind, w)) = default_op(&op) {
                // `${x:-w}` and friends test "set and not empty"; without
                // the colon, only "set".
                let set = if op.starts_with(':') {
                    val.filter(|v| !v.is_empty())
                } else {
                    val
                };
                match (kind, set) {
                    ('-' | '?', Some(v)) => v,
                    ('+', Some(_)) | ('-', None) => word(w)?,
                    ('+', None) => String::new(),
                    _ => {
                        return Err(ExpandError(format!(
                            "{name}: {}",
                            if w.is_empty() {
                                "is not allowed to be unset".to_owned()
                            } else {
                                word(w)?
                            }
                        )));
                    }
                }
            } else if let Some(p) = op.strip_prefix("##") {
                trim_prefix(&val.unwrap_or_default(), &word(p)?, true)
            } else if let Some(p) = op.strip_prefix('#') {
                trim_prefix(&val.unwrap_or_default(), &word(p)?, false)
            } else if let Some(p) = op.strip_prefix("%%") {
                trim_suffix(&val.unwrap_or_default(), &word(p)?, true)
            } else if let Some(p) = op.strip_prefix('%') {
                trim_suffix(&val.unwrap_or_default(), &word(p)?, false)
            } else if let Some(rest) = op.strip_prefix("//") {
                let (p, r) = rest.split_once('/').unwrap_or((rest, ""));
                replace_capped(&val.unwrap_or_default(), &word(p)?, &word(r)?, usize::MAX)?
            } else if let Some(rest) = op.strip_prefix('/') {
                let (p, r) = rest.split_once('/').unwrap_or((rest, ""));
                replace_capped(&val.unwrap_or_default(), &word(p)?, &word(r)?, 1)?
            } else {
                return Err(ExpandError(format!(
                    "unsupported modifier ({op}) in substitution"
                )));
            };
            Ok((result, k + 1))
        }
        // Positional parameters ($1, $999) and specials ($@, $#, ...) are
        // never set in a Dockerfile: they expand to nothing.
        Some(&c) if c.is_ascii_digit() => {
            let mut j = i + 1;
            while j < chars.len() && chars[j].is_ascii_digit() {
                j += 1;
            }
            Ok((String::new(), j))
        }
        Some(&c) if is_special(c) => Ok((String::new(), i + 2)),
        Some(&c) if is_name(c) => {
            let mut j = i + 1;
            while j < chars.len() && is_name(chars[j]) {
                j += 1;
            }
            let name: String = chars[i + 1..j].iter().collect();
            Ok((lookup(&name).unwrap_or_default(), j))
        }
        _ => Ok(("$".into(), i + 1)),
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!')
}

/// Pattern matching for `#`/`%` (`*` and `?` wildcards, literal
/// otherwise): for every prefix length `k` of `s`, whether `p` matches
/// `s[..k]`. One dynamic-programming pass, so no pattern makes it slow.
fn prefix_matches(p: &[char], s: &[char]) -> Vec<bool> {
    let n = s.len();
    let mut prev = vec![false; n + 1];
    let mut cur = vec![false; n + 1];
    prev[0] = true;
    for &t in p {
        for j in 0..=n {
            cur[j] = match t {
                '*' => prev[j] || (j > 0 && cur[j - 1]),
                '?' => j > 0 && prev[j - 1],
                c => j > 0 && prev[j - 1] && s[j - 1] == c,
            };
        }
        std::mem::swap(&mut prev, &mut cur);
        if !prev.contains(&true) {
            break;
        }
    }
    prev
}

/// `-w`, `+w`, `?w`, with or without a leading `:`: the operator and `w`.
fn default_op(op: &str) -> Option<(char, &str)> {
    let op = op.strip_prefix(':').unwrap_or(op);
    let kind = op.chars().next().filter(|c| matches!(c, '-' | '+' | '?'))?;
    Some((kind, &op[1..]))
}

fn trim_prefix(v: &str, pat: &str, longest: bool) -> String {
    let s: Vec<char> = v.chars().collect();
    let p: Vec<char> = pat.chars().collect();
    let m = prefix_matches(&p, &s);
    let cut = if longest {
        (0..=s.len()).rev().find(|&k| m[k])
    } else {
        (0..=s.len()).find(|&k| m[k])
    };
    match cut {
        Some(k) => s[k..].iter().collect(),
        None => v.to_owned(),
    }
}

fn trim_suffix(v: &str, pat: &str, longest: bool) -> String {
    // A suffix match is a prefix match of both reversed.
    let reversed = |s: &str| s.chars().rev().collect::<String>();
    reversed(&trim_prefix(&reversed(v), &reversed(pat), longest))
}

#[cfg(test)]
mod tests;
