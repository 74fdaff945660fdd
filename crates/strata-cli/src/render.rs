//! Output the way Docker prints it: aligned tables (tabwriter with padding 3),
//! human sizes (`7.05MB`, decimal units), relative times (`2 hours ago`) and
//! Go-template-like `--format` strings (`{{.ID}}`, `table {{.Repository}}`,
//! `json`).

use std::collections::BTreeMap;

/// Decimal units with `prec` significant digits, as Docker's
/// `HumanSizeWithPrecision`: `7054321` -> `7.05MB` (prec 3).
pub fn human_size_prec(bytes: u64, prec: usize) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    format!("{}{}", format_g(v, prec), UNITS[i])
}

/// Docker's default (`HumanSize`): four significant digits.
pub fn human_size(bytes: u64) -> String {
    human_size_prec(bytes, 4)
}

/// Go's `%.Ng`: `prec` significant digits, trailing zeros dropped.
fn format_g(v: f64, prec: usize) -> String {
    if v == 0.0 {
        return "0".to_owned();
    }
    let digits_before = (v.abs().log10().floor() as i64 + 1).max(1) as usize;
    let decimals = prec.saturating_sub(digits_before);
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// Docker's `HumanDuration` plus " ago".
pub fn ago(then: i64, now: i64) -> String {
    let secs = (now - then).max(0);
    let d = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    let s = if secs < 1 {
        "Less than a second".to_owned()
    } else if secs == 1 {
        "1 second".to_owned()
    } else if secs < 60 {
        d(secs, "second")
    } else if secs / 60 == 1 {
        "About a minute".to_owned()
    } else if secs < 3600 {
        d(secs / 60, "minute")
    } else if (secs as f64 / 3600.0).round() as i64 == 1 {
        "About an hour".to_owned()
    } else if secs < 48 * 3600 {
        d((secs as f64 / 3600.0).round() as i64, "hour")
    } else if secs < 7 * 24 * 3600 * 2 {
        d(secs / (24 * 3600), "day")
    } else if secs < 30 * 24 * 3600 * 3 {
        d(secs / (7 * 24 * 3600), "week")
    } else if secs < 365 * 24 * 3600 * 2 {
        d(secs / (30 * 24 * 3600), "month")
    } else {
        d(secs / (365 * 24 * 3600), "year")
    };
    format!("{s} ago")
}

/// Lays out rows like Go's tabwriter (min width 0, padding 3).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut l = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            l.push_str(c);
            if i + 1 < n {
                let pad = widths[i] + 3 - c.chars().count();
                l.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

/// A `--format` value: `json`, `table ...` or a template.
pub enum Format {
    Table,
    Json,
    Template { table: bool, template: String },
}

impl Format {
    pub fn parse(s: Option<&str>) -> Format {
        match s {
            None | Some("") | Some("table") => Format::Table,
            Some("json") | Some("{{json .}}") => Format::Json,
            Some(t) => match t.strip_prefix("table ") {
                Some(rest) => Format::Template {
                    table: true,
                    template: rest.to_owned(),
                },
                None => Format::Template {
                    table: false,
                    template: t.to_owned(),
                },
            },
        }
    }
}

/// Expands `{{.Field}}` (and `{{ .Field }}`, `{{json .}}`, `\t`) from `fields`.
pub fn expand(template: &str, fields: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let inner = rest[start + 2..start + end].trim();
        if inner == "json ." {
            out.push_str(&serde_json::to_string(fields).unwrap_or_default());
        } else if let Some(name) = inner.strip_prefix('.') {
            out.push_str(fields.get(name).map(String::as_str).unwrap_or("<no value>"));
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out.replace("\\t", "\t").replace("\\n", "\n")
}

/// A listing's output: with `quiet` only each row's `ID`, one a line (`-q`);
/// else the rows in `format` (`--format`), `columns` being the default
/// table's (header, field) pairs.
pub fn listing(
    quiet: bool,
    format: Option<&str>,
    columns: &[(&str, &str)],
    rows: &[BTreeMap<String, String>],
) -> String {
    if quiet {
        return rows.iter().map(|r| r["ID"].clone() + "\n").collect();
    }
    render(&Format::parse(format), columns, rows)
}

/// Renders rows (as field maps) in the chosen format; `columns` are
/// (header, field) pairs of the default table.
pub fn render(
    format: &Format,
    columns: &[(&str, &str)],
    rows: &[BTreeMap<String, String>],
) -> String {
    match format {
        Format::Table => {
            let header: Vec<&str> = columns.iter().map(|c| c.0).collect();
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    columns
                        .iter()
                        .map(|c| r.get(c.1).cloned().unwrap_or_default())
                        .collect()
                })
                .collect();
            table(&header, &cells)
        }
        Format::Json => rows
            .iter()
            .map(|r| serde_json::to_string(r).unwrap_or_default() + "\n")
            .collect(),
        Format::Template {
            table: is_table,
            template,
        } => {
            let lines: Vec<String> = rows.iter().map(|r| expand(template, r)).collect();
            if *is_table {
                // Header row: field names upper-cased like Docker's.
                let header_fields: BTreeMap<String, String> = columns
                    .iter()
                    .map(|(h, f)| ((*f).to_owned(), (*h).to_owned()))
                    .collect();
                let head = expand(template, &header_fields);
                let split = |s: &str| s.split('\t').map(str::to_owned).collect::<Vec<_>>();
                let hs = split(&head);
                let hrefs: Vec<&str> = hs.iter().map(String::as_str).collect();
                let body: Vec<Vec<String>> = lines.iter().map(|l| split(l)).collect();
                table(&hrefs, &body)
            } else {
                lines.into_iter().map(|l| l + "\n").collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(human_size_prec(7_054_321, 3), "7.05MB");
        assert_eq!(human_size_prec(0, 3), "0B");
        assert_eq!(human_size_prec(999, 3), "999B");
        assert_eq!(human_size_prec(1_500, 3), "1.5kB");
        assert_eq!(human_size(1_234_567_890), "1.235GB");
    }

    #[test]
    fn durations_like_docker() {
        assert_eq!(ago(0, 7200), "2 hours ago");
        assert_eq!(ago(0, 90), "About a minute ago");
        assert_eq!(ago(0, 5), "5 seconds ago");
        assert_eq!(ago(0, 3 * 86400), "3 days ago");
    }

    #[test]
    fn templates_expand() {
        let mut f = BTreeMap::new();
        f.insert("ID".to_owned(), "abc".to_owned());
        assert_eq!(expand("{{.ID}}\\t{{ .ID }}", &f), "abc\tabc");
        assert_eq!(expand("{{.Nope}}", &f), "<no value>");
    }

    #[test]
    fn table_pads_by_three() {
        let t = table(&["A", "BB"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A     BB\nxyz   1\n");
    }
}
