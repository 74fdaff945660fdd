//! Build progress in the reference's plain style, good for CI logs:
//! `#5 [stage-0 2/4] RUN ...`, output lines prefixed by the step number,
//! `#5 DONE 0.3s`, `#5 CACHED`.

#![expect(clippy::print_stderr, reason = "progress goes to stderr")]

use strata_build::Event;

pub struct Plain {
    quiet: bool,
    last: usize,
    /// Partial output line per step, so prefixes land at line starts.
    partial: Vec<u8>,
    partial_step: usize,
}

impl Plain {
    pub fn new(quiet: bool) -> Self {
        Self {
            quiet,
            last: 0,
            partial: Vec::new(),
            partial_step: 0,
        }
    }

    pub fn current(&self) -> usize {
        self.last
    }

    pub fn next(&mut self) -> usize {
        self.last += 1;
        self.last
    }

    fn flush_partial(&mut self) {
        if !self.partial.is_empty() {
            eprintln!(
                "#{} {}",
                self.partial_step,
                String::from_utf8_lossy(&self.partial)
            );
            self.partial.clear();
        }
    }

    pub fn event(&mut self, e: Event) {
        if self.quiet {
            return;
        }
        match e {
            Event::Step { n, name } => {
                self.flush_partial();
                self.last = self.last.max(n);
                eprintln!("#{n} {name}");
            }
            Event::Output { n, data } => {
                if self.partial_step != n {
                    self.flush_partial();
                    self.partial_step = n;
                }
                self.partial.extend_from_slice(&data);
                while let Some(pos) = self.partial.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = self.partial.drain(..=pos).collect();
                    eprintln!("#{n} {}", String::from_utf8_lossy(&line[..line.len() - 1]));
                }
            }
            Event::Cached { n } => eprintln!("#{n} CACHED"),
            Event::Done { n, seconds } => {
                self.flush_partial();
                eprintln!("#{n} DONE {seconds:.1}s");
            }
            Event::Error { n, message } => {
                self.flush_partial();
                eprintln!("#{n} ERROR: {}", message.lines().next().unwrap_or(""));
            }
            // Listed after the build (`print_warnings`), as buildx does.
            Event::Warning(_) => {}
            Event::Internal { n, work, seconds } => internal(n, work, seconds, |e| self.event(e)),
        }
    }
}

/// `--progress rawjson`: one JSON object per event on stderr, in the shape
/// of BuildKit's `SolveStatus` (`vertexes` with `digest`, `name`, `started`,
/// `completed`, `cached`, `error`; `logs` with `vertex`, `stream`, base64
/// `data`, `timestamp`), so tools that read buildx's rawjson can read ours.
pub struct RawJson {
    names: std::collections::HashMap<usize, (String, String)>,
    last: usize,
}

impl RawJson {
    pub fn new() -> Self {
        Self {
            names: std::collections::HashMap::new(),
            last: 0,
        }
    }

    fn digest(n: usize) -> String {
        strata_oci::Digest::of(format!("strata-step-{n}").as_bytes()).to_string()
    }

    fn now() -> String {
        jiff::Timestamp::now().to_string()
    }

    fn vertex(&self, n: usize, extra: serde_json::Value) -> serde_json::Value {
        let (name, started) = self.names.get(&n).cloned().unwrap_or_default();
        let mut v =
            serde_json::json!({"digest": Self::digest(n), "name": name, "started": started});
        if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        serde_json::json!({"vertexes": [v]})
    }

    pub fn event(&mut self, e: Event) {
        use base64::Engine;
        let line = match e {
            Event::Step { n, name } => {
                self.last = self.last.max(n);
                self.names.insert(n, (name, Self::now()));
                self.vertex(n, serde_json::json!({}))
            }
            Event::Output { n, data } => serde_json::json!({"logs": [{
                "vertex": Self::digest(n),
                "stream": 1,
                "data": base64::engine::general_purpose::STANDARD.encode(&data),
                "timestamp": Self::now(),
            }]}),
            Event::Cached { n } => self.vertex(
                n,
                serde_json::json!({"cached": true, "completed": Self::now()}),
            ),
            Event::Done { n, .. } => self.vertex(n, serde_json::json!({"completed": Self::now()})),
            Event::Error { n, message } => self.vertex(
                n,
                serde_json::json!({"completed": Self::now(), "error": message}),
            ),
            Event::Warning(w) => serde_json::json!({"warnings": [vertex_warning(&w, None)]}),
            Event::Internal { n, work, seconds } => {
                return internal(n, work, seconds, |e| self.event(e));
            }
        };
        eprintln!("{line}");
    }
}

/// A warning as BuildKit's `VertexWarning` (JSON of its Go struct: byte
/// fields base64), the shape of buildx's rawjson `warnings` and of its
/// metadata file's `buildx.build.warnings`. `source` is the Dockerfile
/// (name, text) when the record should carry it.
pub fn vertex_warning(
    w: &strata_frontend::lint::Warning,
    source: Option<(&str, &str)>,
) -> serde_json::Value {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let mut v = serde_json::json!({
        "vertex": RawJson::digest(0),
        "level": 1,
        "short": b64(&w.short()),
        "detail": [b64(w.rule.description)],
        "range": w.ranges.iter().map(|&(s, e)| serde_json::json!({
            "start": {"line": s}, "end": {"line": e},
        })).collect::<Vec<_>>(),
    });
    if !w.rule.url.is_empty() {
        v["url"] = serde_json::json!(w.rule.url);
    }
    if let Some((file, text)) = source {
        v["sourceInfo"] =
            serde_json::json!({"filename": file, "data": b64(text), "language": "Dockerfile"});
    }
    v
}

/// buildx's list after a build: ` N warnings found (use docker --debug to
/// expand):` then ` - Rule: message (line N)` each (nothing for quiet or
/// rawjson progress).
pub fn print_warnings(warnings: &[strata_frontend::lint::Warning], progress: &Progress) {
    if warnings.is_empty() || !progress.wants_summary() || progress.is_quiet() {
        return;
    }
    let count = match warnings.len() {
        1 => "1 warning found".to_owned(),
        n => format!("{n} warnings found"),
    };
    eprint!("\n {count} (use docker --debug to expand):\n");
    for w in warnings {
        eprintln!(" - {}", w.short());
    }
}

/// `--progress tty`: a live view, one line per running step with its elapsed
/// time and the last line of its output; finished steps are printed above
/// it as plain lines (`#5 DONE 0.3s`, `#5 CACHED`).
pub struct Tty {
    multi: indicatif::MultiProgress,
    bars: std::collections::HashMap<usize, (indicatif::ProgressBar, String)>,
    last: usize,
}

impl Tty {
    pub fn new() -> Self {
        Self {
            multi: indicatif::MultiProgress::with_draw_target(
                indicatif::ProgressDrawTarget::stderr(),
            ),
            bars: std::collections::HashMap::new(),
            last: 0,
        }
    }

    fn finish(&mut self, n: usize, status: &str) {
        if let Some((bar, name)) = self.bars.remove(&n) {
            bar.finish_and_clear();
            let _ = self.multi.println(format!("#{n} {name} {status}"));
        }
    }

    pub fn event(&mut self, e: Event) {
        match e {
            Event::Step { n, name } => {
                self.last = self.last.max(n);
                let bar = self.multi.add(indicatif::ProgressBar::new_spinner());
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} #{prefix} {elapsed:>4} {wide_msg}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                );
                bar.set_prefix(n.to_string());
                bar.set_message(name.clone());
                bar.enable_steady_tick(std::time::Duration::from_millis(120));
                self.bars.insert(n, (bar, name));
            }
            Event::Output { n, data } => {
                if let Some((bar, name)) = self.bars.get(&n) {
                    let text = String::from_utf8_lossy(&data);
                    if let Some(tail) = text.lines().rfind(|l| !l.trim().is_empty()) {
                        bar.set_message(format!("{name} | {}", tail.trim()));
                    }
                }
            }
            Event::Cached { n } => self.finish(n, "CACHED"),
            Event::Done { n, seconds } => self.finish(n, &format!("DONE {seconds:.1}s")),
            Event::Error { n, message } => {
                let first = message.lines().next().unwrap_or("").to_owned();
                self.finish(n, &format!("ERROR: {first}"));
            }
            Event::Warning(_) => {}
            Event::Internal { n, work, seconds } => internal(n, work, seconds, |e| self.event(e)),
        }
    }
}

/// Work outside the steps is drawn as a step of its own that is done at
/// once: `#n [internal] unpacking 3 layers` then `#n DONE 1.2s`.
fn internal(n: usize, work: strata_build::InternalWork, seconds: f64, mut show: impl FnMut(Event)) {
    show(Event::Step {
        n,
        name: format!("[internal] {work}"),
    });
    show(Event::Done { n, seconds });
}

/// `--progress`, as buildx names its modes: `rawjson` is BuildKit's
/// solve-status stream as JSON lines (see [`RawJson`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ProgressMode {
    /// `tty` on a terminal, else `plain`.
    #[default]
    Auto,
    /// Each step's lines as they come (`#n ...`)
    Plain,
    /// The running steps, redrawn in place
    Tty,
    /// Errors only
    Quiet,
    /// BuildKit's solve-status stream, one JSON object per line
    Rawjson,
}

/// The renderer `--progress` picked.
pub enum Progress {
    Plain(Plain),
    Tty(Tty),
    RawJson(RawJson),
}

impl Progress {
    /// `auto` is `tty` when stderr is a terminal, else `plain`.
    pub fn new(mode: ProgressMode, quiet: bool) -> Self {
        use std::io::IsTerminal;
        match mode {
            _ if quiet => Progress::Plain(Plain::new(true)),
            ProgressMode::Quiet => Progress::Plain(Plain::new(true)),
            ProgressMode::Plain => Progress::Plain(Plain::new(false)),
            ProgressMode::Rawjson => Progress::RawJson(RawJson::new()),
            ProgressMode::Tty => Progress::Tty(Tty::new()),
            ProgressMode::Auto if std::io::stderr().is_terminal() => Progress::Tty(Tty::new()),
            ProgressMode::Auto => Progress::Plain(Plain::new(false)),
        }
    }

    pub fn event(&mut self, e: Event) {
        match self {
            Progress::Plain(p) => p.event(e),
            Progress::Tty(t) => t.event(e),
            Progress::RawJson(r) => r.event(e),
        }
    }

    /// Step numbers for the summary lines that follow the build.
    pub fn next(&mut self) -> usize {
        match self {
            Progress::Plain(p) => p.next(),
            Progress::Tty(t) => {
                t.last += 1;
                t.last
            }
            Progress::RawJson(r) => {
                r.last += 1;
                r.last
            }
        }
    }

    pub fn current(&self) -> usize {
        match self {
            Progress::Plain(p) => p.current(),
            Progress::Tty(t) => t.last,
            Progress::RawJson(r) => r.last,
        }
    }

    /// `--quiet` or `--progress quiet`.
    pub fn is_quiet(&self) -> bool {
        matches!(self, Progress::Plain(p) if p.quiet)
    }

    /// Whether the human summary belongs on stderr (not for rawjson, whose
    /// readers expect only JSON lines).
    pub fn wants_summary(&self) -> bool {
        !matches!(self, Progress::RawJson(_))
    }
}
