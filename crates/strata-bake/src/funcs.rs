//! The functions bake files can call: the part of buildx's
//! `bake/hclparser/stdlib.go` (go-cty's stdlib) that strata implements,
//! with cty's semantics. A call to any other buildx function fails with
//! hcl-rs's "undefined function" error naming it.

use hcl::Value;
use hcl::eval::{Context, FuncArgs, FuncDef, ParamType};

type R = Result<Value, String>;

/// Plain text of a scalar value, as cty converts it to a string.
pub fn value_to_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => value_to_string(other).unwrap_or_default(),
    }
}

fn num(v: &Value) -> f64 {
    v.as_number().and_then(|n| n.as_f64()).unwrap_or(0.0)
}

fn number(f: f64) -> R {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "checked integral and in range"
        )]
        return Ok(Value::from(f as i64));
    }
    hcl::Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| format!("{f} is not a finite number"))
}

fn equal(a: FuncArgs) -> R {
    Ok(Value::Bool(a[0] == a[1]))
}
fn notequal(a: FuncArgs) -> R {
    Ok(Value::Bool(a[0] != a[1]))
}
fn and(a: FuncArgs) -> R {
    Ok(Value::Bool(
        a[0] == Value::Bool(true) && a[1] == Value::Bool(true),
    ))
}
fn or(a: FuncArgs) -> R {
    Ok(Value::Bool(
        a[0] == Value::Bool(true) || a[1] == Value::Bool(true),
    ))
}
fn not(a: FuncArgs) -> R {
    Ok(Value::Bool(a[0] != Value::Bool(true)))
}
fn lower(a: FuncArgs) -> R {
    Ok(Value::String(s(&a[0]).to_lowercase()))
}
fn upper(a: FuncArgs) -> R {
    Ok(Value::String(s(&a[0]).to_uppercase()))
}
fn title(a: FuncArgs) -> R {
    let mut out = String::new();
    let mut start = true;
    for c in s(&a[0]).chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = c.is_whitespace();
    }
    Ok(Value::String(out))
}
fn trimspace(a: FuncArgs) -> R {
    Ok(Value::String(s(&a[0]).trim().to_owned()))
}
fn chomp(a: FuncArgs) -> R {
    let t = s(&a[0]);
    Ok(Value::String(t.trim_end_matches(['\n', '\r']).to_owned()))
}
fn strlen(a: FuncArgs) -> R {
    Ok(Value::from(s(&a[0]).chars().count()))
}
fn trimprefix(a: FuncArgs) -> R {
    let t = s(&a[0]);
    let p = s(&a[1]);
    Ok(Value::String(t.strip_prefix(&p).unwrap_or(&t).to_owned()))
}
fn trimsuffix(a: FuncArgs) -> R {
    let t = s(&a[0]);
    let p = s(&a[1]);
    Ok(Value::String(t.strip_suffix(&p).unwrap_or(&t).to_owned()))
}
fn trim(a: FuncArgs) -> R {
    let cut: Vec<char> = s(&a[1]).chars().collect();
    Ok(Value::String(
        s(&a[0]).trim_matches(cut.as_slice()).to_owned(),
    ))
}
fn replace(a: FuncArgs) -> R {
    let sub = s(&a[1]);
    if sub.len() > 1 && sub.starts_with('/') && sub.ends_with('/') {
        return Err("replace: regular expressions (/.../) are not supported by strata".into());
    }
    Ok(Value::String(s(&a[0]).replace(&sub, &s(&a[2]))))
}
fn substr(a: FuncArgs) -> R {
    let chars: Vec<char> = s(&a[0]).chars().collect();
    let len = i64::try_from(chars.len()).map_err(|e| e.to_string())?;
    #[expect(
        clippy::cast_possible_truncation,
        reason = "cty takes whole numbers here"
    )]
    let (mut off, mut n) = (num(&a[1]) as i64, num(&a[2]) as i64);
    if off < 0 {
        off += len;
    }
    let off = off.clamp(0, len);
    if n < 0 || off + n > len {
        n = len - off;
    }
    let (off, n) = (
        usize::try_from(off).map_err(|e| e.to_string())?,
        usize::try_from(n).map_err(|e| e.to_string())?,
    );
    Ok(Value::String(chars[off..off + n].iter().collect()))
}
fn sanitize(a: FuncArgs) -> R {
    Ok(Value::String(
        s(&a[0])
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
    ))
}
fn join(a: FuncArgs) -> R {
    let sep = s(&a[0]);
    let mut parts = Vec::new();
    for list in a.iter().skip(1) {
        if let Value::Array(items) = list {
            parts.extend(items.iter().map(s));
        }
    }
    Ok(Value::String(parts.join(&sep)))
}
fn split(a: FuncArgs) -> R {
    let sep = s(&a[0]);
    let t = s(&a[1]);
    Ok(Value::Array(
        t.split(sep.as_str())
            .map(|p| Value::String(p.to_owned()))
            .collect(),
    ))
}
fn length(a: FuncArgs) -> R {
    match &a[0] {
        Value::String(t) => Ok(Value::from(t.chars().count())),
        Value::Array(v) => Ok(Value::from(v.len())),
        Value::Object(m) => Ok(Value::from(m.len())),
        other => Err(format!("length: cannot take the length of {other}")),
    }
}
fn concat(a: FuncArgs) -> R {
    let mut out = Vec::new();
    for list in a.iter() {
        if let Value::Array(items) = list {
            out.extend(items.iter().cloned());
        }
    }
    Ok(Value::Array(out))
}
fn contains(a: FuncArgs) -> R {
    Ok(Value::Bool(
        a[0].as_array().is_some_and(|l| l.contains(&a[1])),
    ))
}
fn distinct(a: FuncArgs) -> R {
    let mut out: Vec<Value> = Vec::new();
    for v in a[0].as_array().into_iter().flatten() {
        if !out.contains(v) {
            out.push(v.clone());
        }
    }
    Ok(Value::Array(out))
}
fn compact(a: FuncArgs) -> R {
    Ok(Value::Array(
        a[0].as_array()
            .into_iter()
            .flatten()
            .filter(|v| !matches!(v, Value::Null) && *v != &Value::String(String::new()))
            .cloned()
            .collect(),
    ))
}
/// cty's coalesce: the first argument that is not null (an empty string
/// counts, unlike Terraform's).
fn coalesce(a: FuncArgs) -> R {
    a.iter()
        .find(|v| !matches!(v, Value::Null))
        .cloned()
        .ok_or_else(|| "coalesce: no non-null arguments".to_owned())
}
fn element(a: FuncArgs) -> R {
    let list = a[0].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return Err("element: cannot use element function with an empty list".into());
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "cty takes whole numbers here"
    )]
    let i = num(&a[1]) as i64;
    if i < 0 {
        return Err("element: cannot use a negative index".into());
    }
    let i = usize::try_from(i).map_err(|e| e.to_string())? % list.len();
    Ok(list[i].clone())
}
fn keys(a: FuncArgs) -> R {
    let mut k: Vec<String> = a[0]
        .as_object()
        .into_iter()
        .flat_map(|m| m.keys().cloned())
        .collect();
    k.sort();
    Ok(Value::Array(k.into_iter().map(Value::String).collect()))
}
fn values(a: FuncArgs) -> R {
    let mut kv: Vec<(String, Value)> = a[0]
        .as_object()
        .into_iter()
        .flat_map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())))
        .collect();
    kv.sort_by(|x, y| x.0.cmp(&y.0));
    Ok(Value::Array(kv.into_iter().map(|(_, v)| v).collect()))
}
fn lookup(a: FuncArgs) -> R {
    let key = s(&a[1]);
    match a[0].as_object().and_then(|m| m.get(&key)) {
        Some(v) => Ok(v.clone()),
        None if a.len() > 2 => Ok(a[2].clone()),
        None => Err(format!("lookup: the given key {key:?} does not exist")),
    }
}
fn merge(a: FuncArgs) -> R {
    let mut out = hcl::Map::new();
    for m in a.iter().filter_map(Value::as_object) {
        for (k, v) in m {
            out.insert(k.clone(), v.clone());
        }
    }
    Ok(Value::Object(out))
}
fn flatten(a: FuncArgs) -> R {
    fn go(v: &Value, out: &mut Vec<Value>) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| go(i, out)),
            other => out.push(other.clone()),
        }
    }
    let mut out = Vec::new();
    go(&a[0], &mut out);
    Ok(Value::Array(out))
}
fn reverselist(a: FuncArgs) -> R {
    let mut l = a[0].as_array().cloned().unwrap_or_default();
    l.reverse();
    Ok(Value::Array(l))
}
fn reverse(a: FuncArgs) -> R {
    Ok(Value::String(s(&a[0]).chars().rev().collect()))
}
fn indexof(a: FuncArgs) -> R {
    a[0].as_array()
        .and_then(|l| l.iter().position(|v| *v == a[1]))
        .map(Value::from)
        .ok_or_else(|| "indexof: item not found".to_owned())
}
fn max(a: FuncArgs) -> R {
    number(a.iter().map(num).fold(f64::NEG_INFINITY, f64::max))
}
fn min(a: FuncArgs) -> R {
    number(a.iter().map(num).fold(f64::INFINITY, f64::min))
}
fn abs(a: FuncArgs) -> R {
    number(num(&a[0]).abs())
}
fn ceil(a: FuncArgs) -> R {
    number(num(&a[0]).ceil())
}
fn floor(a: FuncArgs) -> R {
    number(num(&a[0]).floor())
}
fn add(a: FuncArgs) -> R {
    number(num(&a[0]) + num(&a[1]))
}
fn subtract(a: FuncArgs) -> R {
    number(num(&a[0]) - num(&a[1]))
}
fn multiply(a: FuncArgs) -> R {
    number(num(&a[0]) * num(&a[1]))
}
fn divide(a: FuncArgs) -> R {
    if num(&a[1]) == 0.0 {
        return Err("divide: division by zero".into());
    }
    number(num(&a[0]) / num(&a[1]))
}
fn modulo(a: FuncArgs) -> R {
    if num(&a[1]) == 0.0 {
        return Err("modulo: division by zero".into());
    }
    number(num(&a[0]) % num(&a[1]))
}
fn negate(a: FuncArgs) -> R {
    number(-num(&a[0]))
}
fn int(a: FuncArgs) -> R {
    number(num(&a[0]).trunc())
}
fn greaterthan(a: FuncArgs) -> R {
    Ok(Value::Bool(num(&a[0]) > num(&a[1])))
}
fn lessthan(a: FuncArgs) -> R {
    Ok(Value::Bool(num(&a[0]) < num(&a[1])))
}
fn greaterthanorequalto(a: FuncArgs) -> R {
    Ok(Value::Bool(num(&a[0]) >= num(&a[1])))
}
fn lessthanorequalto(a: FuncArgs) -> R {
    Ok(Value::Bool(num(&a[0]) <= num(&a[1])))
}
fn basename(a: FuncArgs) -> R {
    let p = s(&a[0]);
    let t = p.trim_end_matches('/');
    Ok(Value::String(match t.rsplit_once('/') {
        _ if p.is_empty() => ".".into(),
        _ if t.is_empty() => "/".into(),
        Some((_, b)) => b.to_owned(),
        None => t.to_owned(),
    }))
}
fn dirname(a: FuncArgs) -> R {
    let p = s(&a[0]);
    Ok(Value::String(match p.rsplit_once('/') {
        Some(("", _)) => "/".into(),
        Some((d, _)) => d.to_owned(),
        None => ".".into(),
    }))
}
fn homedir(_: FuncArgs) -> R {
    std::env::var("HOME")
        .map(Value::String)
        .map_err(|_| "homedir: HOME is not set".into())
}

/// `timestamp()`: now, UTC, RFC 3339 with seconds (Go's `time.RFC3339`).
fn timestamp(_: FuncArgs) -> R {
    Ok(Value::String(
        jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string(),
    ))
}

/// `formatdate(spec, timestamp)` with cty's format language: `YYYY`, `YY`,
/// `MMMM`, `MMM`, `MM`, `M`, `DD`, `D`, `EEEE`, `EEE`, `hh`, `h`, `HH`,
/// `H`, `AA`, `aa`, `mm`, `m`, `ss`, `s`, `ZZZZZ`, `ZZZZ`, `ZZZ`, `Z`,
/// and `'literal'`.
fn formatdate(a: FuncArgs) -> R {
    let spec = s(&a[0]);
    let ts = s(&a[1]);
    let t: jiff::Timestamp = ts
        .parse()
        .map_err(|e| format!("formatdate: not a valid RFC3339 timestamp: {ts:?}: {e}"))?;
    let offset = offset_of(&ts)
        .ok_or_else(|| format!("formatdate: not a valid RFC3339 timestamp: {ts:?}"))?;
    let zoned = t.to_zoned(jiff::tz::TimeZone::fixed(offset));
    let mut out = String::new();
    let chars: Vec<char> = spec.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            let mut j = i + 1;
            while j < chars.len() {
                if chars[j] == '\'' {
                    if chars.get(j + 1) == Some(&'\'') {
                        out.push('\'');
                        j += 2;
                        continue;
                    }
                    break;
                }
                out.push(chars[j]);
                j += 1;
            }
            if j >= chars.len() {
                return Err("formatdate: unterminated literal '".into());
            }
            i = j + 1;
            continue;
        }
        let mut run = 1;
        while i + run < chars.len() && chars[i + run] == c {
            run += 1;
        }
        if !c.is_ascii_alphabetic() {
            out.extend(std::iter::repeat_n(c, run));
            i += run;
            continue;
        }
        let f = |fmt: &str| zoned.strftime(fmt).to_string();
        let piece = match (c, run) {
            ('Y', 4) => f("%Y"),
            ('Y', 2) => f("%y"),
            ('M', 4) => f("%B"),
            ('M', 3) => f("%b"),
            ('M', 2) => f("%m"),
            ('M', 1) => zoned.month().to_string(),
            ('D', 2) => f("%d"),
            ('D', 1) => zoned.day().to_string(),
            ('E', 4) => f("%A"),
            ('E', 3) => f("%a"),
            ('h', 2) => f("%H"),
            ('h', 1) => zoned.hour().to_string(),
            ('H', 2) => f("%I"),
            ('H', 1) => {
                let h = zoned.hour() % 12;
                (if h == 0 { 12 } else { h }).to_string()
            }
            ('A', 2) => f("%p").to_uppercase(),
            ('a', 2) => f("%p").to_lowercase(),
            ('m', 2) => f("%M"),
            ('m', 1) => zoned.minute().to_string(),
            ('s', 2) => f("%S"),
            ('s', 1) => zoned.second().to_string(),
            ('Z', 5) => {
                let z = f("%:z");
                if z == "+00:00" { "Z".into() } else { z }
            }
            ('Z', 4) => f("%z"),
            ('Z', 3) => {
                let z = f("%z");
                if z == "+0000" { "UTC".into() } else { z }
            }
            ('Z', 1) => {
                let z = f("%:z");
                if z == "+00:00" { "Z".into() } else { z }
            }
            _ => {
                return Err(format!(
                    "formatdate: invalid date format verb {:?}",
                    std::iter::repeat_n(c, run).collect::<String>()
                ));
            }
        };
        out.push_str(&piece);
        i += run;
    }
    Ok(Value::String(out))
}

/// The UTC offset written at the end of an RFC 3339 timestamp (`Z` or
/// `+hh:mm`), which the formatted date keeps.
fn offset_of(ts: &str) -> Option<jiff::tz::Offset> {
    if ts.ends_with('Z') || ts.ends_with('z') {
        return Some(jiff::tz::Offset::UTC);
    }
    let tail = ts.get(ts.len().checked_sub(6)?..)?;
    let sign = match tail.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let h: i32 = tail.get(1..3)?.parse().ok()?;
    let m: i32 = tail.get(4..6)?.parse().ok()?;
    jiff::tz::Offset::from_seconds(sign * (h * 3600 + m * 60)).ok()
}

/// Declares every function above in `ctx`.
pub fn declare_all(ctx: &mut Context<'_>) {
    use ParamType::{Any, Array, Bool, Number, Object, String as Str};
    let any_list = || Array(Box::new(Any));
    let str_list = || Array(Box::new(Str));
    let any_obj = || Object(Box::new(Any));
    let mut def = |name: &str, params: Vec<ParamType>, f: hcl::eval::Func| {
        ctx.declare_func(name, FuncDef::builder().params(params).build(f));
    };
    def("equal", vec![Any, Any], equal);
    def("notequal", vec![Any, Any], notequal);
    def("and", vec![Bool, Bool], and);
    def("or", vec![Bool, Bool], or);
    def("not", vec![Bool], not);
    def("lower", vec![Str], lower);
    def("upper", vec![Str], upper);
    def("title", vec![Str], title);
    def("trimspace", vec![Str], trimspace);
    def("chomp", vec![Str], chomp);
    def("strlen", vec![Str], strlen);
    def("trimprefix", vec![Str, Str], trimprefix);
    def("trimsuffix", vec![Str, Str], trimsuffix);
    def("trim", vec![Str, Str], trim);
    def("replace", vec![Str, Str, Str], replace);
    def("substr", vec![Str, Number, Number], substr);
    def("sanitize", vec![Str], sanitize);
    def("split", vec![Str, Str], split);
    def("length", vec![Any], length);
    def("contains", vec![any_list(), Any], contains);
    def("distinct", vec![any_list()], distinct);
    def("compact", vec![str_list()], compact);
    def("element", vec![any_list(), Number], element);
    def("keys", vec![any_obj()], keys);
    def("values", vec![any_obj()], values);
    def("flatten", vec![any_list()], flatten);
    def("reverselist", vec![any_list()], reverselist);
    def("reverse", vec![Str], reverse);
    def("indexof", vec![any_list(), Any], indexof);
    def("abs", vec![Number], abs);
    def("ceil", vec![Number], ceil);
    def("floor", vec![Number], floor);
    def("add", vec![Number, Number], add);
    def("subtract", vec![Number, Number], subtract);
    def("multiply", vec![Number, Number], multiply);
    def("divide", vec![Number, Number], divide);
    def("modulo", vec![Number, Number], modulo);
    def("negate", vec![Number], negate);
    def("int", vec![Number], int);
    def("greaterthan", vec![Number, Number], greaterthan);
    def("lessthan", vec![Number, Number], lessthan);
    def(
        "greaterthanorequalto",
        vec![Number, Number],
        greaterthanorequalto,
    );
    def("lessthanorequalto", vec![Number, Number], lessthanorequalto);
    def("basename", vec![Str], basename);
    def("dirname", vec![Str], dirname);
    def("homedir", vec![], homedir);
    def("timestamp", vec![], timestamp);
    def("formatdate", vec![Str, Str], formatdate);
    let mut variadic = |name: &str, params: Vec<ParamType>, rest: ParamType, f: hcl::eval::Func| {
        ctx.declare_func(
            name,
            FuncDef::builder()
                .params(params)
                .variadic_param(rest)
                .build(f),
        );
    };
    variadic("join", vec![Str], str_list(), join);
    variadic("concat", vec![], any_list(), concat);
    variadic("coalesce", vec![], Any, coalesce);
    variadic("merge", vec![], any_obj(), merge);
    variadic("max", vec![], Number, max);
    variadic("min", vec![], Number, min);
    variadic("lookup", vec![any_obj(), Str], Any, lookup);
}
