//! The markdown section: the header and the table of medians and ratios.

use std::fmt::Write as _;

use anyhow::Result;

use super::machine::{Machine, utc_now};
use super::options::Options;

/// The bound on strata's memory in every scenario.
const RSS_LIMIT_KIB: u64 = 100 * 1024;

/// What a row is measured against.
pub(super) enum Target {
    /// strata / BuildKit at most this.
    Ratio(f64),
    /// strata's builds at once at most this fraction of the same in sequence
    /// (whose strata median is given).
    AtOnce {
        bound: f64,
        sequential: f64,
    },
    None,
}

pub(super) struct Row {
    pub(super) label: String,
    pub(super) target: Target,
    /// Per tool, seconds of every run; empty for a tool that cannot do the row.
    pub(super) times: [Vec<f64>; 3],
    pub(super) rss_kib: Option<u64>,
}

impl Row {
    /// Per tool, the median; `None` for a tool that did not run.
    pub(super) fn medians(&self) -> [Option<f64>; 3] {
        [0, 1, 2].map(|i| median(self.times[i].clone()))
    }
}

/// `20000` as `20,000`.
pub(super) fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// Seconds or a ratio with two decimals; "—" where there is none.
fn cell(x: Option<f64>) -> String {
    x.map_or_else(|| "—".to_owned(), |x| format!("{x:.2}"))
}

pub(super) fn render(
    opts: &Options,
    machine: &Machine,
    started: &str,
    rows: &[Row],
) -> Result<String> {
    let mut md = String::new();
    let size = if opts.full {
        "the issue's size"
    } else {
        "a tenth of the issue's size; `--full` for 20,000 files / 500 MB"
    };
    writeln!(
        md,
        "### COPY of {} files / {} MB ({size})\n",
        thousands(opts.files),
        opts.bytes / 1_000_000
    )?;
    let runs = if opts.runs >= 3 {
        format!("medians of {} interleaved runs", opts.runs)
    } else {
        format!(
            "{} interleaved run{} (fewer than 3: not a median, not for publishing)",
            opts.runs,
            if opts.runs == 1 { "" } else { "s" }
        )
    };
    writeln!(
        md,
        "Measured {started} to {} on commit {}; {runs}; wall-clock seconds; a ratio below 1 means strata is faster.\n",
        utc_now()?,
        machine.commit
    )?;
    writeln!(md, "Machine: {}.\n", machine.line)?;
    writeln!(md, "Tools: {}.\n", machine.tools)?;
    let mut command = String::from(
        "cargo build --release -p strata && source target/testenv/env.sh && cargo xtask bench build",
    );
    for a in &opts.args {
        command.push(' ');
        command.push_str(a);
    }
    writeln!(md, "Command: `{command}`\n")?;
    writeln!(
        md,
        "| scenario | strata (s) | BuildKit (s) | Buildah (s) | strata / BuildKit | target | met | strata / Buildah | strata peak RSS |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|")?;
    for row in rows {
        let m = row.medians();
        let over = |other: Option<f64>| Some(m[0]? / other?);
        let ratio = over(m[1]);
        let rss_ok = row.rss_kib.is_none_or(|k| k < RSS_LIMIT_KIB);
        let (target, met) = match row.target {
            Target::Ratio(bound) => (format!("≤ {bound}"), ratio.map(|r| r <= bound)),
            Target::AtOnce { bound, sequential } => {
                let share = m[0].map(|s| s / sequential);
                (
                    format!("at once / in sequence {}, ≤ {bound}", cell(share)),
                    share.map(|s| s <= bound),
                )
            }
            Target::None => ("—".to_owned(), None),
        };
        let met = match (met, rss_ok) {
            (Some(true), true) => "yes",
            (Some(false), _) => "no",
            (Some(true), false) => "no (RSS)",
            (None, true) => "—",
            (None, false) => "no (RSS)",
        };
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {target} | {met} | {} | {} |",
            row.label,
            cell(m[0]),
            cell(m[1]),
            cell(m[2]),
            cell(ratio),
            cell(over(m[2])),
            row.rss_kib
                .map(|k| format!("{:.0} MiB", k as f64 / 1024.0))
                .unwrap_or_else(|| "—".into())
        )?;
    }
    writeln!(
        md,
        "\nTargets are issue #11's (strata / BuildKit, and strata's peak RSS under 100 MiB in every row). \
         Cold: each tool's build cache emptied with its own commands before every timed build, the bases kept. \
         strata and BuildKit build with `--network none` except the examples, which install from the Debian mirror and run with \
         `--network host` in every tool (the mirror adds variance to their cold rows); Buildah's chroot isolation \
         always uses the host's network. Export: `strata save`, `docker save`, `buildah push docker-archive:`. \
         Load: `strata build --load` and `docker buildx build --load` of the cached COPY build into the reference dockerd, \
         the image removed from it (`docker image rm`) before every run; Buildah has none (its `docker-daemon:` transport \
         reaches only /var/run/docker.sock, whatever DOCKER_HOST says). \
         The four builds: each copies its own context ({} files / {} MB) and writes 5,000 files.",
        thousands(opts.files / 4),
        opts.bytes / 8 / 1_000_000
    )?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separates_groups() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(500), "500");
        assert_eq!(thousands(2000), "2,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(4.0));
        assert_eq!(median(Vec::new()), None);
    }
}
