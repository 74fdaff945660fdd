//! The line grammar: directives, comments, continuations, heredocs, flags and
//! the JSON-versus-shell decision.

use crate::{Diagnostic, KEYWORDS};

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    pub file: String,
    /// `\` or `` ` ``, from the `# escape=` directive.
    pub escape: char,
    /// Parser directives, keys lowercased (`syntax`, `escape`, `check`).
    pub directives: Vec<(String, String)>,
    pub instructions: Vec<Instruction>,
    lines: Vec<String>,
    /// What the build checks need and the solver does not, one per
    /// instruction (same index).
    trivia: Vec<Trivia>,
}

/// Source details of one instruction kept for the build checks
/// (`crate::lint`): BuildKit's rules look at the keyword as written, the
/// comment block above it and blank lines inside its continuation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trivia {
    /// The keyword as written (`From`, `copy`).
    pub keyword: String,
    /// The comment lines directly above, `#` and surrounding blanks removed
    /// (the reference's `Node.PrevComment`: a bare `#` line clears it).
    pub comments: Vec<String>,
    /// A whitespace-only line inside the continuation (NoEmptyContinuation).
    pub empty_continuation_line: bool,
    /// The last line, heredoc bodies included (`Instruction::end_line`
    /// stops before them).
    pub last_line: usize,
}

/// One instruction with its flags and arguments as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// Lowercase keyword (`run`, `copy`, ...).
    pub keyword: String,
    /// `--name=value` or `--name` words, without the leading `--`.
    pub flags: Vec<(String, Option<String>)>,
    pub args: Args,
    pub heredocs: Vec<Heredoc>,
    /// 1-based first and last source lines.
    pub line: usize,
    pub end_line: usize,
    /// The instruction text after the keyword (continuations joined), for
    /// history entries and progress.
    pub text: String,
}

/// Exec form (a JSON array) or shell form (the raw text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Args {
    Exec(Vec<String>),
    Shell(String),
}

/// `<<EOF` ... `EOF` attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    pub name: String,
    pub content: String,
    /// `<<"EOF"` / `<<'EOF'`: the content is not expanded.
    pub quoted: bool,
}

impl Args {
    /// The arguments as words: exec items, or shell text split on unquoted
    /// whitespace (quotes kept; expansion removes them).
    pub fn words(&self) -> Vec<String> {
        match self {
            Args::Exec(v) => v.clone(),
            Args::Shell(s) => split_raw_words(s),
        }
    }
}

impl Instruction {
    /// The instruction as written, flags included (`COPY --from=build
    /// /src/hello /hello`): what BuildKit names a step by in its progress
    /// (dockerfile2llb's `prefixCommand` over the command's source text).
    pub fn source_form(&self) -> String {
        let mut s = self.keyword.to_uppercase();
        for (name, value) in &self.flags {
            s.push_str(" --");
            s.push_str(name);
            if let Some(v) = value {
                s.push('=');
                s.push_str(v);
            }
        }
        if !self.text.is_empty() {
            s.push(' ');
            s.push_str(&self.text);
        }
        s
    }

    /// The value of `--name=value` (last one wins), or "" for a bare `--name`.
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    /// A boolean flag as BuildKit's `BFlags` reads one (`--link`,
    /// `--parents`): absent or `false` is off, bare or `true` on,
    /// case-insensitive, the last one winning; `--name=` and any other value
    /// are errors, worded as BuildKit's.
    pub fn bool_flag(&self, name: &str) -> Result<bool, String> {
        let Some((_, value)) = self.flags.iter().rev().find(|(n, _)| n == name) else {
            return Ok(false);
        };
        match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some("") => Err(format!("missing a value on flag: {name}")),
            Some(v) => Err(format!("expecting boolean value for flag {name}, not: {v}")),
        }
    }

    /// Every value of a repeatable flag, in order.
    pub fn flag_all(&self, name: &str) -> Vec<&str> {
        self.flags
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref().unwrap_or(""))
            .collect()
    }

    /// ARG's `name[=default]` words.
    pub fn arg_pairs(&self) -> Vec<(String, Option<String>)> {
        self.args
            .words()
            .into_iter()
            .map(|w| match w.split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (w, None),
            })
            .collect()
    }
}

impl Dockerfile {
    /// The source details of `self.instructions[index]`.
    pub fn trivia(&self, index: usize) -> Option<&Trivia> {
        self.trivia.get(index)
    }

    /// The source lines (line `n` is `lines()[n - 1]`), `\r` removed.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// An error located at the start of `ins`.
    pub fn error(&self, ins: &Instruction, message: &str) -> Diagnostic {
        let source_line = self
            .lines
            .get(ins.line.saturating_sub(1))
            .cloned()
            .unwrap_or_default();
        let column = source_line
            .chars()
            .take_while(|c| c.is_whitespace())
            .count()
            + 1;
        Diagnostic {
            file: self.file.clone(),
            line: ins.line,
            column,
            message: message.to_owned(),
            source_line,
        }
    }
}

/// Flags each instruction accepts; anything else is an error.
fn allowed_flags(keyword: &str) -> &'static [&'static str] {
    match keyword {
        "from" => &["platform"],
        "run" => &["mount", "network", "security"],
        "copy" => &["from", "chown", "chmod", "link", "parents", "exclude"],
        "add" => &[
            "chown",
            "chmod",
            "link",
            "checksum",
            "keep-git-dir",
            "exclude",
        ],
        "healthcheck" => &[
            "interval",
            "timeout",
            "start-period",
            "start-interval",
            "retries",
        ],
        _ => &[],
    }
}

/// BuildKit's wording (`unknown flag: --chwon`, bflag.go) with its
/// suggestion (`util/suggest`: edit distance under 3, case-sensitive).
fn unknown_flag(keyword: &str, name: &str) -> String {
    let mut message = format!("unknown flag: --{name} for {}", keyword.to_uppercase());
    if let Some(s) = crate::suggest::closest(name, allowed_flags(keyword).iter().copied(), true) {
        message.push_str(&format!(" (did you mean {s}?)"));
    }
    message
}

/// Instructions whose JSON form is an exec array.
fn takes_json(keyword: &str) -> bool {
    matches!(
        keyword,
        "run" | "cmd" | "entrypoint" | "shell" | "copy" | "add" | "volume"
    )
}

/// Parses `source` (the contents of `file`).
pub fn parse(source: &str, file: &str) -> Result<Dockerfile, Diagnostic> {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let lines: Vec<String> = source
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_owned())
        .collect();
    let mut df = Dockerfile {
        file: file.to_owned(),
        escape: '\\',
        directives: Vec::new(),
        instructions: Vec::new(),
        lines,
        trivia: Vec::new(),
    };
    let err = |df: &Dockerfile, line: usize, column: usize, message: String| Diagnostic {
        file: df.file.clone(),
        line: line + 1,
        column,
        message,
        source_line: df.lines.get(line).cloned().unwrap_or_default(),
    };

    // Directives: `# key=value` lines at the very top, each key once.
    let mut i = 0;
    while i < df.lines.len() {
        let Some(rest) = df.lines[i].trim_start().strip_prefix('#') else {
            break;
        };
        let Some((k, v)) = rest.split_once('=') else {
            break;
        };
        let k = k.trim().to_ascii_lowercase();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric()) || k.contains(' ') {
            break;
        }
        if !matches!(k.as_str(), "syntax" | "escape" | "check") {
            break;
        }
        if df.directives.iter().any(|(d, _)| *d == k) {
            return Err(err(
                &df,
                i,
                1,
                format!("only one {k} parser directive can be used"),
            ));
        }
        let v = v.trim().to_owned();
        if k == "escape" {
            df.escape = match v.as_str() {
                "\\" => '\\',
                "`" => '`',
                _ => {
                    return Err(err(
                        &df,
                        i,
                        1,
                        format!("invalid escape token {v:?}: must be ` or \\"),
                    ));
                }
            };
        }
        df.directives.push((k, v));
        i += 1;
    }

    let escape = df.escape;
    let mut comments: Vec<String> = Vec::new();
    while i < df.lines.len() {
        let line = df.lines[i].clone();
        let trimmed = line.trim();
        if let Some(c) = trimmed.strip_prefix('#') {
            match c.trim() {
                "" => comments.clear(),
                c => comments.push(c.to_owned()),
            }
            i += 1;
            continue;
        }
        if trimmed.is_empty() {
            i += 1;
            continue;
        }
        let mut empty_continuation_line = false;
        let start = i;
        // Join continuation lines; comment and empty lines inside are skipped.
        let mut text = String::new();
        let mut cur = line.trim_start().to_owned();
        loop {
            let t = cur.trim_end();
            let run = t.chars().rev().take_while(|&c| c == escape).count();
            if run % 2 == 1 {
                text.push_str(&t[..t.len() - escape.len_utf8()]);
                i += 1;
                loop {
                    match df.lines.get(i) {
                        None => break,
                        Some(l) if l.trim_start().starts_with('#') => i += 1,
                        Some(l) if l.trim().is_empty() => {
                            empty_continuation_line = true;
                            i += 1;
                        }
                        Some(_) => break,
                    }
                }
                match df.lines.get(i) {
                    Some(l) => cur = l.clone(),
                    None => break, // continuation at EOF ends the instruction
                }
            } else {
                text.push_str(&cur);
                i += 1;
                break;
            }
        }
        let end_line = i; // 1-based last line == index after it
        let text = text.trim().to_owned();
        let (word, rest) = match text.find(char::is_whitespace) {
            Some(p) => (&text[..p], text[p..].trim_start()),
            None => (text.as_str(), ""),
        };
        let keyword = word.to_ascii_lowercase();
        let col = line.chars().take_while(|c| c.is_whitespace()).count() + 1;
        if !KEYWORDS.contains(&keyword.as_str()) {
            let best = KEYWORDS
                .iter()
                .map(|k| (strsim::levenshtein(k, &keyword), *k))
                .min()
                .filter(|(d, _)| *d <= 2)
                .map(|(_, k)| format!(" (did you mean {}?)", k.to_uppercase()))
                .unwrap_or_default();
            return Err(err(
                &df,
                start,
                col,
                format!("unknown instruction: {word}{best}"),
            ));
        }

        // Flags: leading `--name[=value]` words.
        let mut flags = Vec::new();
        let mut rest = rest;
        while let Some(f) = rest.strip_prefix("--") {
            let end = f.find(char::is_whitespace).unwrap_or(f.len());
            let word = &f[..end];
            let (name, value) = match word.split_once('=') {
                Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                None => (word.to_owned(), None),
            };
            if !allowed_flags(&keyword).contains(&name.as_str()) {
                return Err(err(&df, start, col, unknown_flag(&keyword, &name)));
            }
            if keyword == "run"
                && name == "mount"
                && let Err(e) = check_mount(value.as_deref().unwrap_or_default())
            {
                return Err(err(&df, start, col, format!("--mount: {e}")));
            }
            flags.push((name, value));
            rest = f[end..].trim_start();
        }

        // ONBUILD's trigger is itself an instruction, parsed now so a bad
        // one is refused here (as the reference's `parseOnBuild` does),
        // not in a later build FROM this image.
        if keyword == "onbuild" && !rest.is_empty() {
            let trigger = rest.split_whitespace().next().unwrap_or_default();
            let upper = trigger.to_ascii_uppercase();
            let lead = line.trim_start();
            let tcol = col
                + lead.chars().take_while(|c| !c.is_whitespace()).count()
                + lead
                    .chars()
                    .skip_while(|c| !c.is_whitespace())
                    .take_while(|c| c.is_whitespace())
                    .count();
            let refused = match upper.as_str() {
                "ONBUILD" => {
                    Some("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".to_owned())
                }
                "FROM" | "MAINTAINER" => {
                    Some(format!("{upper} isn't allowed as an ONBUILD trigger"))
                }
                _ => {
                    let nested = if escape == '`' {
                        format!("# escape=`\n{rest}\n")
                    } else {
                        format!("{rest}\n")
                    };
                    parse(&nested, &df.file)
                        .err()
                        .map(|d| format!("ONBUILD trigger: {}", d.message))
                }
            };
            if let Some(m) = refused {
                return Err(err(&df, start, tcol, m));
            }
        }

        // Heredocs (RUN, COPY, ADD): bodies follow the instruction's lines.
        let mut heredocs = Vec::new();
        if matches!(keyword.as_str(), "run" | "copy" | "add") {
            for (name, strip_tabs, quoted) in heredoc_markers(rest) {
                let mut content = String::new();
                let mut closed = false;
                while i < df.lines.len() {
                    let l = &df.lines[i];
                    i += 1;
                    let cmp = if strip_tabs {
                        l.trim_start_matches('\t')
                    } else {
                        l.as_str()
                    };
                    if cmp == name {
                        closed = true;
                        break;
                    }
                    content.push_str(cmp);
                    content.push('\n');
                }
                if !closed {
                    return Err(err(
                        &df,
                        start,
                        col,
                        format!(
                            "unterminated heredoc <<{name}: no line {name:?} before the end of the file"
                        ),
                    ));
                }
                heredocs.push(Heredoc {
                    name,
                    content,
                    quoted,
                });
            }
        }

        let args = if takes_json(&keyword) && rest.starts_with('[') {
            match serde_json_array(rest) {
                Some(v) => Args::Exec(v),
                None => Args::Shell(rest.to_owned()),
            }
        } else {
            Args::Shell(rest.to_owned())
        };
        let needs_args = !matches!(keyword.as_str(), "healthcheck");
        if needs_args && matches!(&args, Args::Shell(s) if s.is_empty()) && heredocs.is_empty() {
            return Err(err(
                &df,
                start,
                col,
                format!("{} requires at least one argument", keyword.to_uppercase()),
            ));
        }
        if keyword == "env" || keyword == "label" {
            validate_pairs(&keyword, &args).map_err(|m| err(&df, start, col, m))?;
        }
        df.trivia.push(Trivia {
            keyword: word.to_owned(),
            comments: std::mem::take(&mut comments),
            empty_continuation_line,
            last_line: i.max(end_line),
        });
        df.instructions.push(Instruction {
            keyword,
            flags,
            args,
            heredocs,
            line: start + 1,
            end_line,
            text: rest.to_owned(),
        });
    }
    if df.instructions.is_empty() {
        return Err(Diagnostic {
            file: df.file.clone(),
            line: 1,
            column: 1,
            message: "file with no instructions".into(),
            source_line: df.lines.first().cloned().unwrap_or_default(),
        });
    }
    Ok(df)
}

/// ENV and LABEL need `key=value` words, or the legacy `ENV key value`.
fn validate_pairs(keyword: &str, args: &Args) -> Result<(), String> {
    let words = args.words();
    let Some(first) = words.first() else {
        return Err(format!(
            "{} requires at least one argument",
            keyword.to_uppercase()
        ));
    };
    if !first.contains('=') && words.len() < 2 {
        return Err(format!(
            "{} {first} must have two arguments (or be KEY=VALUE)",
            keyword.to_uppercase()
        ));
    }
    Ok(())
}

/// The heredoc markers of an instruction, in order: each whitespace-split
/// word of the form `[fd]<<[-]WORD` (the reference's
/// `^(\d*)<<(-?)([^<]*)$`), WORD with its quotes removed; any quote in
/// WORD disables expansion of the body.
fn heredoc_markers(s: &str) -> Vec<(String, bool, bool)> {
    let mut out = Vec::new();
    for word in s.split_whitespace() {
        let rest = word.trim_start_matches(|c: char| c.is_ascii_digit());
        let Some(rest) = rest.strip_prefix("<<") else {
            continue;
        };
        let (strip, rest) = match rest.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        if rest.is_empty() || rest.contains('<') {
            continue;
        }
        let quoted = rest.contains(['"', '\'']);
        let name: String = rest.chars().filter(|c| !matches!(c, '"' | '\'')).collect();
        if !name.is_empty() {
            out.push((name, strip, quoted));
        }
    }
    out
}

/// A JSON array of strings, or None (the reference then falls back to shell form).
fn serde_json_array(s: &str) -> Option<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(s).ok()?;
    v.as_array()?
        .iter()
        .map(|x| x.as_str().map(str::to_owned))
        .collect()
}

/// Checks the field names of a `RUN --mount` value as the reference's
/// `parseMount` does, so that nothing is accepted and then ignored: a bare
/// word other than `ro`, `readonly`, `rw`, `readwrite` (and `required` for
/// secret and ssh mounts) must be `key=value`; an unknown key or mount type
/// is refused. Values may hold variables; their checks come later.
fn check_mount(spec: &str) -> Result<(), String> {
    const KEYS: &[&str] = &[
        "type",
        "from",
        "source",
        "src",
        "target",
        "dst",
        "destination",
        "readonly",
        "ro",
        "rw",
        "readwrite",
        "required",
        "size",
        "id",
        "sharing",
        "mode",
        "uid",
        "gid",
        "env",
    ];
    const TYPES: &[&str] = &["bind", "cache", "tmpfs", "secret", "ssh"];
    if spec.is_empty() {
        return Err("needs a value (type=...,target=...)".to_owned());
    }
    let mut kind = "bind".to_owned();
    for field in spec.split(',') {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
            None => (field.to_ascii_lowercase(), None),
        };
        match (key.as_str(), value) {
            ("readonly" | "ro" | "readwrite" | "rw", None) => {}
            ("required", _) if kind != "secret" && kind != "ssh" => {
                return Err(format!("unexpected key 'required' for mount type '{kind}'"));
            }
            ("required", None) => {}
            (_, None) => return Err(format!("invalid field '{field}' must be a key=value pair")),
            ("type", Some(v)) => {
                let v = v.to_ascii_lowercase();
                if !v.contains('$') && !TYPES.contains(&v.as_str()) {
                    return Err(format!(
                        "unsupported mount type {v:?} (expected one of {})",
                        TYPES.join(", ")
                    ));
                }
                kind = v;
            }
            (k, Some(_)) if KEYS.contains(&k) => {}
            (k, Some(_)) => return Err(format!("unexpected key '{k}' in '{field}'")),
        }
    }
    Ok(())
}

/// Splits on unquoted whitespace, keeping quotes and escapes.
fn split_raw_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                cur.push(c);
            }
            (Some(q), c) if c == q => {
                quote = None;
                cur.push(c);
            }
            (_, '\\') => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests;
