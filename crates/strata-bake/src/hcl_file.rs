//! HCL bake files (and JSON ones, turned into the same body by
//! `json_file`), evaluated as buildx's `bake/hclparser` does: variables
//! with defaults and environment overrides, top-level attributes, the
//! functions of `funcs`, groups, targets and `matrix`.

use std::collections::BTreeMap;

use hcl::eval::{Context, Evaluate};
use hcl::{Body, Expression, Value};

use crate::entries::{self, Entry, parse_bool};
use crate::error::{BakeError, Result, invalid};
use crate::funcs::value_to_string;
use crate::model::{Config, Group, NullableMap, Target};

/// One parsed file.
pub struct Source {
    pub name: String,
    pub body: Body,
}

/// What evaluation reads from outside the files.
pub struct Inputs<'a> {
    /// The environment (a variable's override is the variable of the same
    /// name).
    pub lookup: &'a dyn Fn(&str) -> Option<String>,
    /// Built-in variables (`BAKE_CMD_CONTEXT`, `BAKE_LOCAL_PLATFORM`),
    /// which neither files nor the environment override.
    pub builtins: &'a BTreeMap<String, String>,
}

pub fn parse(name: &str, text: &str) -> Result<Source> {
    let body = hcl::parse(text).map_err(|e| BakeError::Parse {
        file: name.to_owned(),
        message: e.to_string(),
    })?;
    Ok(Source {
        name: name.to_owned(),
        body,
    })
}

/// A variable as declared: where, and its default expression.
struct Declared {
    file: String,
    default: Option<Expression>,
    /// A `variable` block (environment overrides apply), not a top-level
    /// attribute.
    is_var: bool,
    validations: Vec<(Expression, Option<Expression>)>,
}

fn eval(expr: &Expression, ctx: &Context<'_>, what: &dyn Fn() -> String) -> Result<Value> {
    expr.evaluate(ctx)
        .map_err(|e| invalid(format!("{}: {e}", what())))
}

/// Resolves every variable: defaults may use other variables, so values
/// are evaluated until none is left (a cycle or an undefined name is an
/// error naming the variable).
fn resolve_variables(
    declared: &BTreeMap<String, Declared>,
    base: &Context<'_>,
    inputs: &Inputs<'_>,
) -> Result<BTreeMap<String, Value>> {
    let mut done: BTreeMap<String, Value> = BTreeMap::new();
    for (k, v) in inputs.builtins {
        done.insert(k.clone(), Value::String(v.clone()));
    }
    let mut pending: Vec<&String> = declared.keys().filter(|k| !done.contains_key(*k)).collect();
    while !pending.is_empty() {
        let mut ctx = base.clone();
        for (k, v) in &done {
            ctx.declare_var(k.as_str(), v.clone());
        }
        let mut progressed = false;
        let mut last_err = None;
        let mut still = Vec::new();
        for name in pending {
            let d = &declared[name];
            let env = if d.is_var {
                (inputs.lookup)(name)
            } else {
                None
            };
            let value = match &d.default {
                None => Ok(Value::String(env.clone().unwrap_or_default())),
                Some(expr) => eval(expr, &ctx, &|| format!("{}: variable {name}", d.file)),
            };
            let value = match value {
                Ok(v) => v,
                Err(e) => {
                    last_err = Some(e);
                    still.push(name);
                    continue;
                }
            };
            let value = match (env, d.default.is_some()) {
                (Some(env), true) => override_value(name, &value, env)?,
                _ => value,
            };
            done.insert(name.clone(), value);
            progressed = true;
        }
        if !progressed {
            return Err(
                last_err.unwrap_or_else(|| invalid("variables could not be resolved (a cycle?)"))
            );
        }
        pending = still;
    }
    // Validations run once every value is known, as buildx does.
    let mut ctx = base.clone();
    for (k, v) in &done {
        ctx.declare_var(k.as_str(), v.clone());
    }
    for (name, d) in declared {
        for (cond, message) in &d.validations {
            let what = || format!("{}: variable {name} validation", d.file);
            if eval(cond, &ctx, &what)? != Value::Bool(true) {
                let msg = match message {
                    Some(m) => value_to_string(&eval(m, &ctx, &what)?).unwrap_or_default(),
                    None => format!("Validation failed for {name}."),
                };
                return Err(invalid(format!("{}: variable {name}: {msg}", d.file)));
            }
        }
    }
    Ok(done)
}

/// An environment value over a default: typed as the default is
/// (`convertPrimitive`); a list or object default cannot be overridden
/// from plain text.
fn override_value(name: &str, default: &Value, env: String) -> Result<Value> {
    Ok(match default {
        Value::String(_) | Value::Null => Value::String(env),
        Value::Bool(_) => Value::Bool(parse_bool(&env).ok_or_else(|| {
            invalid(format!(
                "failed to parse {name} as bool: strconv.ParseBool: parsing {env:?}: invalid syntax"
            ))
        })?),
        Value::Number(_) => {
            let f: f64 = env
                .trim()
                .parse()
                .map_err(|_| invalid(format!("failed to parse {name} as number: {env:?}")))?;
            hcl::Number::from_f64(f)
                .map(Value::Number)
                .ok_or_else(|| invalid(format!("{name}: {env:?} is not a finite number")))?
        }
        Value::Array(_) | Value::Object(_) => {
            return Err(invalid(format!(
                "unsupported type for variable {name}: a list or object default cannot be overridden from the environment"
            )));
        }
    })
}

fn target_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

pub(crate) fn check_target_name(name: &str) -> Result<()> {
    if target_name_ok(name) {
        Ok(())
    } else {
        Err(invalid(format!(
            "invalid target name {name:?}: only [a-zA-Z0-9_-]+ is allowed"
        )))
    }
}

/// Evaluates the files into groups and targets, in file order.
pub fn evaluate(files: &[Source], inputs: &Inputs<'_>) -> Result<Config> {
    let mut base = Context::new();
    crate::funcs::declare_all(&mut base);

    let mut declared: BTreeMap<String, Declared> = BTreeMap::new();
    for f in files {
        for attr in f.body.attributes() {
            declared.insert(
                attr.key().to_owned(),
                Declared {
                    file: f.name.clone(),
                    default: Some(attr.expr().clone()),
                    is_var: false,
                    validations: Vec::new(),
                },
            );
        }
        for block in f.body.blocks() {
            let kind = block.identifier();
            let label = block.labels().first().map(|l| l.as_str().to_owned());
            match kind {
                "variable" => {
                    let name = label.ok_or_else(|| {
                        invalid(format!("{}: a variable block needs a name", f.name))
                    })?;
                    let mut default = None;
                    for a in block.body().attributes() {
                        match a.key() {
                            "default" => default = Some(a.expr().clone()),
                            "description" => {}
                            "type" => {
                                return Err(invalid(format!(
                                    "{}: variable {name}: typed variables (`type`) are not supported by strata",
                                    f.name
                                )));
                            }
                            k => {
                                return Err(invalid(format!(
                                    "{}: variable {name}: unsupported argument {k:?}",
                                    f.name
                                )));
                            }
                        }
                    }
                    let mut validations = Vec::new();
                    for v in block.body().blocks() {
                        if v.identifier() != "validation" {
                            return Err(invalid(format!(
                                "{}: variable {name}: unsupported block {:?}",
                                f.name,
                                v.identifier()
                            )));
                        }
                        let get = |k: &str| {
                            v.body()
                                .attributes()
                                .find(|a| a.key() == k)
                                .map(|a| a.expr().clone())
                        };
                        let cond = get("condition").ok_or_else(|| {
                            invalid(format!(
                                "{}: variable {name}: validation needs a condition",
                                f.name
                            ))
                        })?;
                        validations.push((cond, get("error_message")));
                    }
                    // A later file's declaration replaces an earlier one,
                    // keeping a default it does not set.
                    let prev = declared.remove(&name);
                    let default = default.or_else(|| prev.and_then(|p| p.default));
                    declared.insert(
                        name,
                        Declared {
                            file: f.name.clone(),
                            default,
                            is_var: true,
                            validations,
                        },
                    );
                }
                "function" => {
                    return Err(invalid(format!(
                        "{}: user-defined functions (function blocks) are not supported by strata",
                        f.name
                    )));
                }
                "target" | "group" => {}
                other => {
                    return Err(invalid(format!(
                        "{}: unsupported block type {other:?}",
                        f.name
                    )));
                }
            }
        }
    }
    let vars = resolve_variables(&declared, &base, inputs)?;
    let mut ctx = base;
    for (k, v) in &vars {
        ctx.declare_var(k.as_str(), v.clone());
    }

    // Targets may read other targets' attributes (`target.NAME.KEY`):
    // blocks are evaluated in passes, each pass seeing the attributes of
    // the blocks evaluated so far as the variable `target`, until all are
    // done or a pass makes no progress (then its first error stands).
    let mut blocks = Vec::new();
    for f in files {
        for block in f.body.blocks() {
            let kind = block.identifier();
            if kind != "target" && kind != "group" {
                continue;
            }
            let [label] = block.labels() else {
                return Err(invalid(format!(
                    "{}: a {kind} block needs exactly one name",
                    f.name
                )));
            };
            check_target_name(label.as_str())?;
            blocks.push((f, block, label.as_str().to_owned()));
        }
    }
    let targets: Vec<usize> = (0..blocks.len())
        .filter(|i| blocks[*i].1.identifier() == "target")
        .collect();
    let mut evaluated: BTreeMap<usize, Vec<Evaluated>> = BTreeMap::new();
    let mut attrs_by_name: hcl::Map<String, Value> = hcl::Map::new();
    loop {
        let mut c = ctx.clone();
        if !attrs_by_name.is_empty() {
            c.declare_var("target", Value::Object(attrs_by_name.clone()));
        }
        let mut first_err = None;
        let mut progressed = false;
        for &i in &targets {
            if evaluated.contains_key(&i) {
                continue;
            }
            let (f, block, label) = &blocks[i];
            match eval_target(&f.name, block, label, &c) {
                Ok(list) => {
                    for (t, attrs) in &list {
                        attrs_by_name.insert(t.name.clone(), Value::Object(attrs.clone()));
                    }
                    evaluated.insert(i, list);
                    progressed = true;
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            None => break,
            Some(e) if !progressed => return Err(e),
            Some(_) => {}
        }
    }
    if !attrs_by_name.is_empty() {
        ctx.declare_var("target", Value::Object(attrs_by_name));
    }

    let mut cfg = Config::default();
    let mut renamed: Vec<(String, Vec<String>)> = Vec::new();
    for (i, (f, block, label)) in blocks.iter().enumerate() {
        if let Some(list) = evaluated.remove(&i) {
            let names: Vec<String> = list.iter().map(|(t, _)| t.name.clone()).collect();
            cfg.targets.extend(list.into_iter().map(|(t, _)| t));
            if block.body().attributes().any(|a| a.key() == "matrix") {
                renamed.push((label.clone(), names));
            }
            continue;
        }
        let attr = |k: &str| block.body().attributes().find(|a| a.key() == k);
        if attr("matrix").is_some() {
            return Err(invalid(format!(
                "{}: group {label}: matrix is not supported for groups",
                f.name
            )));
        }
        if attr("name").is_some() {
            return Err(invalid(format!(
                "{}: group {label}: name is not supported for groups",
                f.name
            )));
        }
        let mut g = Group {
            name: label.clone(),
            ..Group::default()
        };
        for a in block.body().attributes() {
            let what = || format!("{}: group {label}: {}", f.name, a.key());
            let v = eval(a.expr(), &ctx, &what)?;
            match a.key() {
                "targets" => g.targets = string_list(&v, &what)?.unwrap_or_default(),
                "description" => g.description = value_to_string(&v),
                k => {
                    return Err(invalid(format!("{}: unsupported argument {k:?}", what())));
                }
            }
        }
        cfg.groups.push(g);
    }
    for (old, new) in renamed {
        let new = entries::dedup(new);
        if new.len() == 1 && new[0] == old {
            continue;
        }
        cfg.groups.push(Group {
            name: old,
            description: None,
            targets: new,
        });
    }
    Ok(cfg)
}

/// A target as evaluated, with its attributes as written (what
/// `target.NAME.KEY` reads).
type Evaluated = (Target, hcl::Map<String, Value>);

/// One target block: a target per matrix combination (one without a
/// matrix), each with its evaluated attributes as written (what
/// `target.NAME.KEY` reads).
fn eval_target(
    file: &str,
    block: &hcl::Block,
    label: &str,
    ctx: &Context<'_>,
) -> Result<Vec<Evaluated>> {
    let attr = |k: &str| block.body().attributes().find(|a| a.key() == k);
    let combos = match attr("matrix") {
        None => vec![BTreeMap::new()],
        Some(m) => {
            let what = || format!("{file}: target {label}: matrix");
            matrix_combinations(&eval(m.expr(), ctx, &what)?, &what)?
        }
    };
    if attr("name").is_some() && attr("matrix").is_none() {
        return Err(invalid(format!(
            "{file}: target {label}: name requires matrix"
        )));
    }
    if let Some(b) = block.body().blocks().next() {
        return Err(invalid(format!(
            "{file}: target {label}: unsupported block {:?}",
            b.identifier()
        )));
    }
    let mut out: Vec<Evaluated> = Vec::new();
    for combo in combos {
        let mut c = ctx.clone();
        for (k, v) in &combo {
            c.declare_var(k.as_str(), v.clone());
        }
        let name = match attr("name") {
            None => label.to_owned(),
            Some(n) => {
                let what = || format!("{file}: target {label}: name");
                value_to_string(&eval(n.expr(), &c, &what)?)
                    .ok_or_else(|| invalid(format!("{}: not a string", what())))?
            }
        };
        check_target_name(&name)?;
        if out.iter().any(|(t, _)| t.name == name) {
            return Err(invalid(format!(
                "{file}: target {label}: duplicate name {name:?}"
            )));
        }
        let mut t = Target {
            name: name.clone(),
            ..Target::default()
        };
        let mut attrs = hcl::Map::new();
        for a in block.body().attributes() {
            if matches!(a.key(), "name" | "matrix") {
                continue;
            }
            let what = || format!("{file}: target {name}: {}", a.key());
            let v = eval(a.expr(), &c, &what)?;
            set_field(&mut t, a.key(), &v, &what)?;
            attrs.insert(a.key().to_owned(), v);
        }
        out.push((t, attrs));
    }
    Ok(out)
}

/// `matrix = { a = [...], b = [...] }`: every combination, built as
/// buildx builds them (each key's values outermost, earlier keys'
/// combinations inner), keys in sorted order.
fn matrix_combinations(
    m: &Value,
    what: &dyn Fn() -> String,
) -> Result<Vec<BTreeMap<String, Value>>> {
    let Value::Object(map) = m else {
        return Err(invalid(format!("{}: matrix must be a map", what())));
    };
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    let mut combos: Vec<BTreeMap<String, Value>> = vec![BTreeMap::new()];
    for k in keys {
        let Value::Array(values) = &map[k] else {
            return Err(invalid(format!("{}: matrix values must be a list", what())));
        };
        let mut next = Vec::new();
        for v in values {
            for c in &combos {
                let mut c2 = c.clone();
                c2.insert(k.clone(), v.clone());
                next.push(c2);
            }
        }
        combos = next;
    }
    Ok(combos)
}

fn string_of(v: &Value, what: &dyn Fn() -> String) -> Result<Option<String>> {
    match v {
        Value::Null => Ok(None),
        other => value_to_string(other)
            .map(Some)
            .ok_or_else(|| invalid(format!("{}: expected a string, got {other}", what()))),
    }
}

fn string_list(v: &Value, what: &dyn Fn() -> String) -> Result<Option<Vec<String>>> {
    match v {
        Value::Null => Ok(None),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                value_to_string(i).ok_or_else(|| {
                    invalid(format!("{}: expected a list of strings, got {i}", what()))
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some),
        other => Err(invalid(format!(
            "{}: expected a list of strings, got {other}",
            what()
        ))),
    }
}

fn nullable_map(v: &Value, what: &dyn Fn() -> String) -> Result<Option<NullableMap>> {
    match v {
        Value::Null => Ok(None),
        Value::Object(m) => {
            let mut out = NullableMap::new();
            for (k, v) in m {
                out.insert(k.clone(), string_of(v, what)?);
            }
            Ok(Some(out))
        }
        other => Err(invalid(format!("{}: expected a map, got {other}", what()))),
    }
}

fn bool_of(v: &Value, what: &dyn Fn() -> String) -> Result<Option<bool>> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        Value::String(s) => parse_bool(s)
            .map(Some)
            .ok_or_else(|| invalid(format!("{}: expected a bool, got {s:?}", what()))),
        other => Err(invalid(format!("{}: expected a bool, got {other}", what()))),
    }
}

/// An object form of a CSV entry (`{ type = "registry", ref = "x" }`).
fn object_entry(m: &hcl::Map<String, Value>, what: &dyn Fn() -> String) -> Result<Entry> {
    let mut e = Entry::new();
    for (k, v) in m {
        if let Some(s) = string_of(v, what)? {
            e.insert(k.clone(), s);
        }
    }
    Ok(e)
}

/// A list whose items are CSV strings or objects.
fn entry_list<T>(
    v: &Value,
    what: &dyn Fn() -> String,
    from_str: &dyn Fn(&str) -> Result<Vec<T>>,
    from_obj: &dyn Fn(Entry) -> Result<T>,
) -> Result<Option<Vec<T>>> {
    let items = match v {
        Value::Null => return Ok(None),
        Value::Array(items) => items,
        other => {
            return Err(invalid(format!("{}: expected a list, got {other}", what())));
        }
    };
    let mut out = Vec::new();
    for i in items {
        match i {
            Value::Object(m) => out.push(from_obj(object_entry(m, what)?)?),
            Value::Null => {}
            other => {
                let s = value_to_string(other).ok_or_else(|| {
                    invalid(format!(
                        "{}: expected strings or objects, got {other}",
                        what()
                    ))
                })?;
                out.extend(from_str(&s).map_err(|e| invalid(format!("{}: {e}", what())))?);
            }
        }
    }
    Ok(Some(out))
}

fn require_type(e: Entry, what: &dyn Fn() -> String) -> Result<Entry> {
    if e.get("type").is_none_or(String::is_empty) {
        return Err(invalid(format!("{}: type is required", what())));
    }
    Ok(e)
}

/// Sets one target key from its evaluated value.
pub(crate) fn set_field(
    t: &mut Target,
    key: &str,
    v: &Value,
    what: &dyn Fn() -> String,
) -> Result<()> {
    match key {
        "description" => t.description = string_of(v, what)?,
        "inherits" => t.inherits = string_list(v, what)?.unwrap_or_default(),
        "annotations" => t.annotations = string_list(v, what)?,
        "attest" => {
            t.attest = entry_list(
                v,
                what,
                &|s| entries::parse_attest(s).map(|e| vec![e]),
                &|mut e| {
                    if let Some(d) = e.get("disabled").cloned() {
                        let b = parse_bool(&d).ok_or_else(|| {
                            invalid(format!("{}: disabled must be a bool", what()))
                        })?;
                        e.insert("disabled".into(), b.to_string());
                    }
                    require_type(e, what)
                },
            )?;
        }
        "context" => t.context = string_of(v, what)?,
        "contexts" => {
            t.contexts = nullable_map(v, what)?.map(|m| {
                m.into_iter()
                    .map(|(k, v)| (k, v.unwrap_or_default()))
                    .collect()
            });
        }
        "dockerfile" => t.dockerfile = string_of(v, what)?,
        "dockerfile-inline" => t.dockerfile_inline = string_of(v, what)?,
        "args" => t.args = nullable_map(v, what)?,
        "labels" => t.labels = nullable_map(v, what)?,
        "tags" => t.tags = string_list(v, what)?,
        "cache-from" => {
            t.cache_from = entry_list(v, what, &entries::parse_cache, &|e| require_type(e, what))?;
        }
        "cache-to" => {
            t.cache_to = entry_list(v, what, &entries::parse_cache, &|e| require_type(e, what))?;
        }
        "target" => t.target = string_of(v, what)?,
        "secret" => {
            t.secrets = entry_list(
                v,
                what,
                &|s| entries::parse_secret(s).map(|e| vec![e]),
                &|e| {
                    Ok(entries::Secret {
                        id: e.get("id").cloned().unwrap_or_default(),
                        src: e.get("src").cloned().unwrap_or_default(),
                        env: e.get("env").cloned().unwrap_or_default(),
                    })
                },
            )?;
        }
        "ssh" => {
            t.ssh = entry_list(v, what, &|s| Ok(vec![entries::parse_ssh(s)]), &|e| {
                Ok(entries::Ssh {
                    id: e.get("id").cloned().unwrap_or_default(),
                    paths: e
                        .get("paths")
                        .map(|p| p.split(',').map(str::to_owned).collect())
                        .unwrap_or_default(),
                })
            })?;
        }
        "platforms" => t.platforms = string_list(v, what)?,
        "output" => {
            t.outputs = entry_list(
                v,
                what,
                &|s| entries::parse_output(s).map(|e| vec![e]),
                &|e| require_type(e, what),
            )?;
        }
        "pull" => t.pull = bool_of(v, what)?,
        "no-cache" => t.no_cache = bool_of(v, what)?,
        "network" => t.network = string_of(v, what)?,
        "no-cache-filter" => t.no_cache_filter = string_list(v, what)?,
        "shm-size" => t.shm_size = string_of(v, what)?,
        "ulimits" => t.ulimits = string_list(v, what)?,
        "call" => t.call = string_of(v, what)?,
        "entitlements" => t.entitlements = string_list(v, what)?,
        "extra-hosts" => t.extra_hosts = nullable_map(v, what)?,
        k => {
            return Err(invalid(format!(
                "{}: unsupported argument {k:?} (strata knows no such target key)",
                what()
            )));
        }
    }
    Ok(())
}
