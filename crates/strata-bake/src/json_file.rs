//! JSON bake files (`docker-bake.json`): the JSON syntax of HCL, where
//! every string is a template (`"${TAG}"`). Each file is turned into the
//! HCL body it stands for and evaluated with the HCL files.

use hcl::expr::{Object, ObjectKey, TemplateExpr};
use hcl::structure::{Attribute, Block};
use hcl::{Body, Expression};

use crate::error::{BakeError, Result};
use crate::hcl_file::Source;

fn expr(v: &serde_json::Value) -> Expression {
    match v {
        serde_json::Value::Null => Expression::Null,
        serde_json::Value::Bool(b) => Expression::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Expression::from(i),
            None => n
                .as_f64()
                .and_then(hcl::Number::from_f64)
                .map_or(Expression::Null, Expression::Number),
        },
        serde_json::Value::String(s) => {
            Expression::TemplateExpr(Box::new(TemplateExpr::QuotedString(s.clone())))
        }
        serde_json::Value::Array(a) => Expression::Array(a.iter().map(expr).collect()),
        serde_json::Value::Object(o) => {
            let mut obj = Object::new();
            for (k, v) in o {
                obj.insert(
                    ObjectKey::Expression(Expression::String(k.clone())),
                    expr(v),
                );
            }
            Expression::Object(obj)
        }
    }
}

fn attributes(o: &serde_json::Map<String, serde_json::Value>) -> Vec<Attribute> {
    o.iter()
        .map(|(k, v)| Attribute::new(k.as_str(), expr(v)))
        .collect()
}

pub fn parse(name: &str, text: &str) -> Result<Source> {
    let bad = |message: String| BakeError::Parse {
        file: name.to_owned(),
        message,
    };
    let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let serde_json::Value::Object(top) = doc else {
        return Err(bad("the document is not a JSON object".into()));
    };
    let mut body = Body::builder();
    for (key, value) in &top {
        match key.as_str() {
            "variable" | "target" | "group" | "function" => {
                let serde_json::Value::Object(blocks) = value else {
                    return Err(bad(format!("{key}: expected an object of named blocks")));
                };
                for (label, content) in blocks {
                    let serde_json::Value::Object(content) = content else {
                        return Err(bad(format!("{key} {label}: expected an object")));
                    };
                    let block = Block::builder(key.as_str())
                        .add_label(label.as_str())
                        .add_attributes(attributes(content))
                        .build();
                    body = body.add_block(block);
                }
            }
            _ => body = body.add_attribute(Attribute::new(key.as_str(), expr(value))),
        }
    }
    Ok(Source {
        name: name.to_owned(),
        body: body.build(),
    })
}
