//! The reference parser's raw AST (BuildKit's `parser.Node`) and its dump
//! format, for `strata debug dump-ast` and the conformance vectors. This layer
//! only splits lines into nodes the way the reference does; it validates no
//! flags and expands nothing (that is the instruction layer's job).

use crate::Diagnostic;

/// One node: a keyword with its flags and argument nodes, or a nested
/// instruction (ONBUILD's trigger).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub keyword: String,
    pub flags: Vec<String>,
    pub args: Vec<Arg>,
    pub start_line: usize,
    pub end_line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    Value(String),
    Nested(Box<Node>),
}

impl Node {
    /// The reference's `Node.Dump()` for one instruction.
    pub fn dump(&self) -> String {
        let mut s = self.keyword.to_lowercase();
        if !self.flags.is_empty() {
            let quoted: Vec<String> = self.flags.iter().map(|f| go_quote(f)).collect();
            s.push_str(&format!(" [{}]", quoted.join(" ")));
        }
        for a in &self.args {
            s.push(' ');
            match a {
                Arg::Value(v) => s.push_str(&go_quote(v)),
                Arg::Nested(n) => s.push_str(&format!("({})", n.dump())),
            }
        }
        s
    }
}

/// Dumps a whole file: one `(instruction ...)` line per instruction.
pub fn dump(nodes: &[Node]) -> String {
    nodes.iter().map(|n| format!("({})\n", n.dump())).collect()
}

/// Go's `strconv.Quote`.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Parses like the reference's `parser.Parse`, returning the escape token and
/// the instruction nodes.
pub fn parse_ast(source: &str, file: &str) -> Result<(char, Vec<Node>), Diagnostic> {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let lines: Vec<&str> = source.split('\n').collect();
    let lines: Vec<&str> = if source.ends_with('\n') {
        lines[..lines.len() - 1].to_vec()
    } else {
        lines
    };
    let err = |line: usize, message: String| Diagnostic {
        file: file.to_owned(),
        line: line + 1,
        column: 1,
        message,
        source_line: lines
            .get(line)
            .map(|l| l.trim_end_matches('\r').to_owned())
            .unwrap_or_default(),
    };
    let mut escape = '\\';
    let mut seen: Vec<String> = Vec::new();
    let mut directives_done = false;
    let mut nodes = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let raw = lines[i].trim_end_matches('\r');
        if !directives_done {
            match directive(raw) {
                Some((k, v)) => {
                    if matches!(k.as_str(), "syntax" | "escape" | "check") {
                        if seen.contains(&k) {
                            return Err(err(
                                i,
                                format!("only one {k} parser directive can be used"),
                            ));
                        }
                        if k == "escape" {
                            escape = match v.as_str() {
                                "\\" => '\\',
                                "`" => '`',
                                _ => {
                                    return Err(err(
                                        i,
                                        format!(
                                            "invalid escape token '{v}' does not match ` or \\"
                                        ),
                                    ));
                                }
                            };
                        }
                        seen.push(k);
                    }
                    i += 1;
                    continue;
                }
                None => directives_done = true,
            }
        }
        let start = i;
        let first = process_line(raw, true);
        i += 1;
        let (mut line, mut end) = trim_continuation(&first, escape);
        if end && line.is_empty() {
            continue;
        }
        while !end && i < lines.len() {
            let raw = lines[i].trim_end_matches('\r');
            i += 1;
            if is_comment(raw) {
                continue;
            }
            let l = process_line(raw, false);
            if l.trim().is_empty() {
                continue;
            }
            let (cont, e) = trim_continuation(&l, escape);
            line.push_str(&cont);
            end = e;
        }
        let node = node_from_line(&line, escape, start + 1, i, 0).map_err(|m| err(start, m))?;
        nodes.push(node);
    }
    if nodes.is_empty() {
        return Err(Diagnostic {
            file: file.to_owned(),
            line: 1,
            column: 1,
            message: "file with no instructions".into(),
            source_line: lines.first().map(|l| l.to_string()).unwrap_or_default(),
        });
    }
    Ok((escape, nodes))
}

/// `# key = value` (key a letter then letters/digits), lowercased key.
fn directive(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix('#')?;
    let (k, v) = rest.split_once('=')?;
    let k = k.trim();
    let mut chars = k.chars();
    if !chars.next()?.is_ascii_alphabetic() || !chars.all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    Some((k.to_ascii_lowercase(), v.to_owned()))
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Comments become empty lines; leading whitespace goes on first lines.
fn process_line(line: &str, strip_left: bool) -> String {
    if is_comment(line) {
        return String::new();
    }
    if strip_left {
        line.trim_start().to_owned()
    } else {
        line.to_owned()
    }
}

/// Removes a trailing escape (plus trailing blanks after it); returns whether
/// the instruction ends on this line.
fn trim_continuation(line: &str, escape: char) -> (String, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    // An odd run of trailing escapes continues the line; `\\` at the end is
    // an escaped escape, kept as text (the reference's trailing-backslash case).
    let run = t.chars().rev().take_while(|&c| c == escape).count();
    if run % 2 == 1 {
        (t[..t.len() - escape.len_utf8()].to_owned(), false)
    } else {
        (line.to_owned(), true)
    }
}

fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\u{b}' | '\u{c}' | '\r')
}

/// ONBUILD nests a node per level; the reference's instruction layer
/// refuses any ONBUILD inside ONBUILD, so a few levels are plenty and a
/// limit keeps a hostile file from exhausting the stack.
const MAX_NESTING: usize = 8;

fn node_from_line(
    line: &str,
    escape: char,
    start_line: usize,
    end_line: usize,
    nesting: usize,
) -> Result<Node, String> {
    if nesting > MAX_NESTING {
        return Err(format!(
            "ONBUILD nested more than {MAX_NESTING} deep (ONBUILD ONBUILD isn't allowed)"
        ));
    }
    let trimmed = line.trim();
    let (cmd, rest) = match trimmed.find(|c: char| is_ws(c) || c == '\n') {
        Some(p) => (
            &trimmed[..p],
            trimmed[p..].trim_start_matches(|c: char| is_ws(c) || c == '\n'),
        ),
        None => (trimmed, ""),
    };
    let (rest, flags) = if rest.is_empty() {
        (String::new(), Vec::new())
    } else {
        extract_flags(rest)
    };
    let keyword = cmd.to_lowercase();
    let args = match keyword.as_str() {
        "add" | "copy" | "volume" => maybe_json_to_list(&rest)?,
        "arg" => words(&rest, escape).into_iter().map(Arg::Value).collect(),
        "cmd" | "entrypoint" | "run" | "shell" => maybe_json(&rest)?,
        "env" => name_val(&rest, "ENV", escape)?,
        "label" => name_val(&rest, "LABEL", escape)?,
        "expose" | "from" => whitespace_list(&rest),
        "healthcheck" => health(&rest)?,
        "onbuild" => {
            if rest.trim().is_empty() {
                Vec::new()
            } else {
                vec![Arg::Nested(Box::new(node_from_line(
                    &rest,
                    escape,
                    start_line,
                    end_line,
                    nesting + 1,
                )?))]
            }
        }
        _ => {
            if rest.is_empty() {
                Vec::new()
            } else {
                vec![Arg::Value(rest.clone())]
            }
        }
    };
    Ok(Node {
        keyword,
        flags,
        args,
        start_line,
        end_line,
    })
}

/// The word being read and the words finished so far, shared by the two
/// word splitters below (the reference has two, with different quoting).
#[derive(Default)]
struct Words {
    done: Vec<String>,
    word: String,
    /// A quote was seen, so an empty word still counts (`""`).
    blank_ok: bool,
}

impl Words {
    /// Ends the current word: kept unless it is empty and was never quoted.
    fn end(&mut self) {
        if self.blank_ok || !self.word.is_empty() {
            self.done.push(std::mem::take(&mut self.word));
        }
        self.blank_ok = false;
    }
}

/// Leading `--flag` words (quote-aware); returns the rest of the line.
fn extract_flags(line: &str) -> (String, Vec<String>) {
    let b: Vec<char> = line.chars().collect();
    let mut w = Words::default();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut pos = 0;
    loop {
        if !in_word && quote.is_none() {
            if pos == b.len() {
                return (String::new(), w.done);
            }
            if b[pos].is_whitespace() {
                pos += 1;
                continue;
            }
            if b[pos] != '-' || b.get(pos + 1) != Some(&'-') {
                return (b[pos..].iter().collect(), w.done);
            }
            in_word = true;
        }
        if pos == b.len() {
            if w.word != "--" {
                w.end();
            }
            return (String::new(), w.done);
        }
        let ch = b[pos];
        if let Some(q) = quote {
            if ch == q {
                quote = None;
            } else if ch == '\\' {
                if pos + 1 == b.len() {
                    quote = None;
                } else {
                    pos += 1;
                    w.word.push(b[pos]);
                }
            } else {
                w.word.push(ch);
            }
            pos += 1;
            continue;
        }
        if ch.is_whitespace() {
            in_word = false;
            if w.word == "--" {
                return (
                    b[pos..].iter().collect::<String>().trim_start().to_owned(),
                    w.done,
                );
            }
            w.end();
            pos += 1;
            continue;
        }
        if ch == '\'' || ch == '"' {
            quote = Some(ch);
            w.blank_ok = true;
            pos += 1;
            continue;
        }
        if ch == '\\' {
            if pos + 1 == b.len() {
                pos += 1;
                continue;
            }
            pos += 1;
        }
        w.word.push(b[pos]);
        pos += 1;
    }
}

/// The reference's `parseWords`: whitespace-separated, quotes and escapes kept.
pub(crate) fn words(rest: &str, escape: char) -> Vec<String> {
    let b: Vec<char> = rest.chars().collect();
    let mut w = Words::default();
    let mut in_spaces = true;
    let mut quote: Option<char> = None;
    let mut pos = 0;
    while pos <= b.len() {
        if in_spaces {
            if pos == b.len() {
                break;
            }
            if b[pos].is_whitespace() {
                pos += 1;
                continue;
            }
            in_spaces = false;
        }
        if pos == b.len() {
            w.end();
            break;
        }
        let mut ch = b[pos];
        match quote {
            None => {
                // Quotes are kept in the word (the caller strips them).
                if ch == '\'' || ch == '"' {
                    quote = Some(ch);
                    w.blank_ok = true;
                    w.word.push(ch);
                    pos += 1;
                    continue;
                }
                if ch.is_whitespace() {
                    in_spaces = true;
                    w.end();
                    pos += 1;
                    continue;
                }
                if ch == escape {
                    if pos + 1 == b.len() {
                        pos += 1;
                        continue;
                    }
                    w.word.push(ch);
                    pos += 1;
                    ch = b[pos];
                }
                w.word.push(ch);
            }
            Some(q) => {
                if ch == q {
                    quote = None;
                }
                if ch == escape && q != '\'' {
                    if pos + 1 == b.len() {
                        quote = None;
                        pos += 1;
                        continue;
                    }
                    pos += 1;
                    w.word.push(ch);
                    ch = b[pos];
                }
                w.word.push(ch);
            }
        }
        pos += 1;
    }
    w.done
}

enum Json {
    Strings(Vec<String>),
    NotJson,
}

fn json(rest: &str) -> Result<Json, String> {
    let t = rest.trim_start();
    if !t.starts_with('[') {
        return Ok(Json::NotJson);
    }
    let Ok(serde_json::Value::Array(items)) = serde_json::from_str::<serde_json::Value>(t) else {
        return Ok(Json::NotJson);
    };
    items
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err("string array expected: a JSON array here must hold only strings".to_owned()),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Json::Strings)
}

fn maybe_json(rest: &str) -> Result<Vec<Arg>, String> {
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    Ok(match json(rest)? {
        Json::Strings(v) => v.into_iter().map(Arg::Value).collect(),
        Json::NotJson => vec![Arg::Value(rest.to_owned())],
    })
}

fn maybe_json_to_list(rest: &str) -> Result<Vec<Arg>, String> {
    Ok(match json(rest)? {
        Json::Strings(v) => v.into_iter().map(Arg::Value).collect(),
        Json::NotJson => whitespace_list(rest),
    })
}

fn whitespace_list(rest: &str) -> Vec<Arg> {
    if rest.is_empty() {
        return Vec::new();
    }
    rest.split(is_ws)
        .filter(|s| !s.is_empty())
        .map(|s| Arg::Value(s.to_owned()))
        .collect()
}

fn name_val(rest: &str, key: &str, escape: char) -> Result<Vec<Arg>, String> {
    let w = words(rest, escape);
    let Some(first) = w.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let t = rest.trim_start_matches(is_ws);
        let Some(p) = t.find(is_ws) else {
            return Err(format!("{key} must have two arguments"));
        };
        let (k, v) = (&t[..p], t[p..].trim_start_matches(is_ws));
        return Ok(vec![
            Arg::Value(k.to_owned()),
            Arg::Value(v.to_owned()),
            Arg::Value(String::new()),
        ]);
    }
    let mut out = Vec::new();
    for word in w {
        let (k, v) = word.split_once('=').ok_or_else(|| {
            format!("Syntax error - can't find = in {word:?}. Must be of the form: name=value")
        })?;
        out.extend([
            Arg::Value(k.to_owned()),
            Arg::Value(v.to_owned()),
            Arg::Value("=".to_owned()),
        ]);
    }
    Ok(out)
}

fn health(rest: &str) -> Result<Vec<Arg>, String> {
    let sep = rest.find(char::is_whitespace).unwrap_or(rest.len());
    if sep == 0 {
        return Ok(Vec::new());
    }
    let typ = &rest[..sep];
    let next = rest[sep..].trim_start();
    let mut out = vec![Arg::Value(typ.to_owned())];
    out.extend(maybe_json(next)?);
    Ok(out)
}
