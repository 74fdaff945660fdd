//! `.dockerignore` rules (and `COPY --exclude` patterns), matched as the
//! reference's `moby/patternmatcher` and `dockerignore.ReadAll` do:
//!
//! - each line is trimmed; empty lines and lines starting with `#` are
//!   skipped; `!` makes an exception (a lone `!` is an error);
//! - the pattern is cleaned like Go's `filepath.Clean` (`./` and `a/..`
//!   resolved, repeated and trailing `/` dropped) and a leading `/` removed;
//! - `*` matches any run of characters but `/`, `?` one character but `/`,
//!   `[...]` a class (`[^...]` negated), `\` escapes the next character,
//!   `**` any number of directories (`**/` may match none), and a trailing
//!   `**` everything below;
//! - every rule is tried in order and the last matching one wins; a rule
//!   also matches a path when it matches one of the path's parent
//!   directories, exceptions included, so `!dir` re-includes `dir/file`;
//! - an excluded directory is still walked when an exception's text starts
//!   with it (`docs` then `!docs/README.md` keeps `docs/README.md`), as the
//!   reference's file walker does ([`Ignore::descend_excluded`]).
//!
//! No I/O: the caller reads the file (`<Dockerfile>.dockerignore` wins over
//! `.dockerignore`) and hands over its text.

/// A parsed ignore file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ignore {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    exception: bool,
    /// The cleaned pattern text.
    text: String,
    pattern: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Lit(char),
    /// `?`
    One,
    /// `*`
    Star,
    /// `**` followed by more pattern: `(.*/)?`
    Dirs,
    /// `**` at the end: everything.
    All,
    /// `[...]`: negated, ranges.
    Class(bool, Vec<(char, char)>),
}

impl Ignore {
    /// Parses the text of an ignore file; errors name the bad line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, pat) = match line.strip_prefix('!') {
                Some("") => return Err(format!("illegal exclusion pattern: {line:?}")),
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let mut cleaned = clean(pat);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            let pattern = compile(&cleaned).ok_or_else(|| format!("bad pattern {line:?}"))?;
            rules.push(Rule {
                exception,
                text: cleaned,
                pattern,
            });
        }
        Ok(Ignore { rules })
    }

    /// Whether `rel` (relative to the context root, `/`-separated) is
    /// excluded.
    pub fn excluded(&self, rel: &str) -> bool {
        let rel = clean(rel);
        let rel = rel.trim_start_matches('/');
        let chars: Vec<char> = rel.chars().collect();
        // Parent directories: "a", "a/b" for "a/b/c".
        let parents: Vec<usize> = chars
            .iter()
            .enumerate()
            .filter(|(_, c)| **c == '/')
            .map(|(i, _)| i)
            .collect();
        let mut matched = false;
        for r in &self.rules {
            // An exception matters only once something matched, a plain
            // rule only while nothing has.
            if r.exception != matched {
                continue;
            }
            let prefixes = prefix_matches(&r.pattern, &chars);
            let hit = prefixes[chars.len()] || parents.iter().any(|&p| prefixes[p]);
            if hit {
                matched = !r.exception;
            }
        }
        matched
    }

    /// Whether an excluded directory must still be walked because an
    /// exception may re-include something in it. The reference's walker
    /// (tonistiigi/fsutil `filter.go`) always descends when an exception,
    /// less a trailing `/*` or `/**`, holds a pattern character (`*[]?^\`),
    /// as `!*/sub1*` does; when every exception is a plain path it descends
    /// only where one starts with `dir/`. What it then finds is kept only if
    /// not excluded, and the directory itself only when something inside is.
    pub fn descend_excluded(&self, dir: &str) -> bool {
        let dir = clean(dir);
        let prefix = format!("{}/", dir.trim_start_matches('/'));
        let mut exceptions = self.rules.iter().filter(|r| r.exception).peekable();
        if exceptions.peek().is_none() {
            return false;
        }
        let plain: Vec<&str> = exceptions
            .map(|r| {
                let t = r.text.as_str();
                t.strip_suffix("/**")
                    .or_else(|| t.strip_suffix("/*"))
                    .unwrap_or(t)
            })
            .collect();
        if plain
            .iter()
            .any(|t| t.contains(['*', '[', ']', '?', '^', '\\']))
        {
            return true;
        }
        plain.iter().any(|t| format!("{t}/").starts_with(&prefix))
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// Go's `path.Clean`, keeping a leading `/`; "" becomes ".".
fn clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

fn compile(p: &str) -> Option<Vec<Token>> {
    let chars: Vec<char> = p.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' if chars.get(i + 1) == Some(&'*') => {
                i += 2;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                out.push(if i >= chars.len() {
                    Token::All
                } else {
                    Token::Dirs
                });
                continue;
            }
            '*' => out.push(Token::Star),
            '?' => out.push(Token::One),
            '\\' => {
                i += 1;
                out.push(Token::Lit(chars.get(i).copied().unwrap_or('\\')));
            }
            '[' => {
                let mut j = i + 1;
                let negated = chars.get(j) == Some(&'^');
                if negated {
                    j += 1;
                }
                let mut items = Vec::new();
                let mut first = true;
                loop {
                    let c = *chars.get(j)?;
                    if c == ']' && !first {
                        break;
                    }
                    first = false;
                    let c = if c == '\\' {
                        j += 1;
                        *chars.get(j)?
                    } else {
                        c
                    };
                    if chars.get(j + 1) == Some(&'-') && chars.get(j + 2).is_some_and(|&e| e != ']')
                    {
                        let mut hi = chars[j + 2];
                        if hi == '\\' {
                            j += 1;
                            hi = *chars.get(j + 2)?;
                        }
                        if hi < c {
                            return None;
                        }
                        items.push((c, hi));
                        j += 3;
                    } else {
                        items.push((c, c));
                        j += 1;
                    }
                }
                out.push(Token::Class(negated, items));
                i = j;
            }
            c => out.push(Token::Lit(c)),
        }
        i += 1;
    }
    Some(out)
}

/// For every prefix length `j` of `s`, whether the whole pattern matches
/// `s[..j]`: one dynamic-programming pass, O(pattern × path), so no
/// pattern can make matching slow (a backtracking matcher is exponential in
/// the number of `*`).
fn prefix_matches(p: &[Token], s: &[char]) -> Vec<bool> {
    let n = s.len();
    let mut prev = vec![false; n + 1];
    let mut cur = vec![false; n + 1];
    prev[0] = true;
    for t in p {
        match t {
            Token::Lit(_) | Token::One | Token::Class(..) => {
                cur[0] = false;
                for j in 1..=n {
                    let c = s[j - 1];
                    let ok = match t {
                        Token::Lit(l) => c == *l,
                        Token::One => c != '/',
                        Token::Class(neg, items) => {
                            items.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *neg
                        }
                        _ => false,
                    };
                    cur[j] = ok && prev[j - 1];
                }
            }
            Token::Star => {
                for j in 0..=n {
                    cur[j] = prev[j] || (j > 0 && s[j - 1] != '/' && cur[j - 1]);
                }
            }
            Token::Dirs => {
                // `(.*/)?`: nothing, or anything ending in a `/`.
                let mut seen = false;
                for j in 0..=n {
                    cur[j] = prev[j] || (seen && j > 0 && s[j - 1] == '/');
                    seen |= prev[j];
                }
            }
            Token::All => {
                let mut seen = false;
                for j in 0..=n {
                    seen |= prev[j];
                    cur[j] = seen;
                }
            }
        }
        std::mem::swap(&mut prev, &mut cur);
        if !prev.contains(&true) {
            // Nothing can match any more.
            break;
        }
    }
    prev
}
