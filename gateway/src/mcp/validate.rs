//! Checks a tool call's arguments against the tool's published JSON schema before anything is
//! sent to a service, so a caller learns which field is wrong (`INVALID_PARAMS` naming it)
//! from the same document it read in `tools/list`.
//!
//! It covers the keywords the schemas in [`super::args`] use (draft 2020-12 as schemars writes
//! it): `type` (one or a list), `enum`, `properties`, `required`, `additionalProperties`,
//! `minLength`/`maxLength` (Unicode scalar values), `minimum`/`maximum`, `items`,
//! `minItems`/`maxItems`, `minProperties`/`maxProperties`, and local `$ref`s into `$defs`. A
//! schema using anything else is still enforced by serde and the service behind it.

use serde_json::{Map, Value};

/// The first problem found: where (`nodes[2].key`, or `(arguments)` for the whole object) and
/// what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid {
    /// JSON path of the offending field.
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid argument `{}`: {}", self.field, self.message)
    }
}

/// Checks `arguments` (absent means `{}`) against `schema`.
///
/// # Errors
/// The first [`Invalid`] field.
pub(crate) fn check(
    schema: &Map<String, Value>,
    arguments: Option<&Map<String, Value>>,
) -> Result<(), Invalid> {
    let empty = Map::new();
    let value = Value::Object(arguments.cloned().unwrap_or(empty));
    Walker { root: schema }.check(schema, &value, "")
}

struct Walker<'a> {
    root: &'a Map<String, Value>,
}

impl Walker<'_> {
    fn check(&self, schema: &Map<String, Value>, value: &Value, path: &str) -> Result<(), Invalid> {
        if let Some(Value::String(reference)) = schema.get("$ref") {
            let target = reference
                .strip_prefix("#/$defs/")
                .and_then(|name| self.root.get("$defs")?.get(name)?.as_object());
            if let Some(target) = target {
                self.check(target, value, path)?;
            }
        }
        if let Some(types) = schema.get("type") {
            check_type(types, value, path)?;
        }
        if let Some(Value::Array(allowed)) = schema.get("enum")
            && !allowed.contains(value)
        {
            let names: Vec<String> = allowed.iter().map(Value::to_string).collect();
            return Err(invalid(
                path,
                format!("must be one of {}, got {value}", names.join(", ")),
            ));
        }
        match value {
            Value::String(text) => check_string(schema, text, path),
            Value::Number(_) => check_number(schema, value, path),
            Value::Array(items) => self.check_array(schema, items, path),
            Value::Object(fields) => self.check_object(schema, fields, path),
            Value::Null | Value::Bool(_) => Ok(()),
        }
    }

    fn check_array(
        &self,
        schema: &Map<String, Value>,
        items: &[Value],
        path: &str,
    ) -> Result<(), Invalid> {
        let len = items.len() as u64;
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && len < min
        {
            return Err(invalid(
                path,
                format!("needs at least {min} items, got {len}"),
            ));
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && len > max
        {
            return Err(invalid(
                path,
                format!("allows at most {max} items, got {len}"),
            ));
        }
        if let Some(Value::Object(item_schema)) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                self.check(item_schema, item, &format!("{}[{i}]", display(path)))?;
            }
        }
        Ok(())
    }

    fn check_object(
        &self,
        schema: &Map<String, Value>,
        fields: &Map<String, Value>,
        path: &str,
    ) -> Result<(), Invalid> {
        let len = fields.len() as u64;
        if let Some(min) = schema.get("minProperties").and_then(Value::as_u64)
            && len < min
        {
            return Err(invalid(
                path,
                format!("needs at least {min} entries, got {len}"),
            ));
        }
        if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
            && len > max
        {
            return Err(invalid(
                path,
                format!("allows at most {max} entries, got {len}"),
            ));
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        if let Some(Value::Array(required)) = schema.get("required") {
            for name in required.iter().filter_map(Value::as_str) {
                if !fields.contains_key(name) {
                    return Err(invalid(&join(path, name), "is required".into()));
                }
            }
        }
        for (name, field) in fields {
            let field_path = join(path, name);
            match properties
                .and_then(|p| p.get(name))
                .and_then(Value::as_object)
            {
                Some(field_schema) => self.check(field_schema, field, &field_path)?,
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        let known: Vec<&str> = properties
                            .map(|p| p.keys().map(String::as_str).collect())
                            .unwrap_or_default();
                        return Err(invalid(
                            &field_path,
                            format!("is not a known field (allowed: {})", known.join(", ")),
                        ));
                    }
                    Some(Value::Object(extra)) => self.check(extra, field, &field_path)?,
                    _ => {}
                },
            }
        }
        Ok(())
    }
}

fn check_type(types: &Value, value: &Value, path: &str) -> Result<(), Invalid> {
    let names: Vec<&str> = match types {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => return Ok(()),
    };
    if names.iter().any(|name| has_type(name, value)) {
        return Ok(());
    }
    Err(invalid(
        path,
        format!("must be {}, got {}", names.join(" or "), kind(value)),
    ))
}

fn has_type(name: &str, value: &Value) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => true,
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a non-integer number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_string(schema: &Map<String, Value>, text: &str, path: &str) -> Result<(), Invalid> {
    let len = text.chars().count() as u64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        return Err(invalid(
            path,
            format!("needs at least {min} characters, got {len}"),
        ));
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        return Err(invalid(
            path,
            format!("allows at most {max} characters, got {len}"),
        ));
    }
    Ok(())
}

fn check_number(schema: &Map<String, Value>, value: &Value, path: &str) -> Result<(), Invalid> {
    let Some(number) = value.as_f64() else {
        return Ok(());
    };
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
        && number < min
    {
        return Err(invalid(
            path,
            format!("must be at least {min}, got {value}"),
        ));
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
        && number > max
    {
        return Err(invalid(path, format!("must be at most {max}, got {value}")));
    }
    Ok(())
}

fn invalid(path: &str, message: String) -> Invalid {
    Invalid {
        field: display(path).to_owned(),
        message,
    }
}

fn display(path: &str) -> &str {
    if path.is_empty() { "(arguments)" } else { path }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Map<String, Value> {
        let value = json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["language", "code"],
            "properties": {
                "language": { "type": "string", "enum": ["python", "bash"] },
                "code": { "type": "string", "minLength": 1, "maxLength": 5 },
                "timeout_seconds": { "type": ["integer", "null"], "minimum": 1, "maximum": 60 },
                "args": { "type": ["array", "null"], "maxItems": 2, "items": { "type": "string" } },
                "nodes": { "type": "array", "items": { "$ref": "#/$defs/Node" } }
            },
            "$defs": { "Node": { "type": "object", "required": ["key"],
                "properties": { "key": { "type": "string", "maxLength": 3 } } } }
        });
        value.as_object().cloned().unwrap()
    }

    fn field(args: Value) -> String {
        check(&schema(), args.as_object()).unwrap_err().field
    }

    #[test]
    fn every_rule_names_its_field() {
        assert!(
            check(
                &schema(),
                json!({"language": "python", "code": "x"}).as_object()
            )
            .is_ok()
        );
        assert_eq!(field(json!({"code": "x"})), "language");
        assert_eq!(field(json!({"language": "perl", "code": "x"})), "language");
        assert_eq!(field(json!({"language": "bash", "code": ""})), "code");
        assert_eq!(
            field(json!({"language": "bash", "code": "toolong"})),
            "code"
        );
        assert_eq!(field(json!({"language": "bash", "code": 1})), "code");
        let late = json!({"language": "bash", "code": "x", "timeout_seconds": 61});
        assert_eq!(field(late), "timeout_seconds");
        let fraction = json!({"language": "bash", "code": "x", "timeout_seconds": 1.5});
        assert_eq!(field(fraction), "timeout_seconds");
        let many = json!({"language": "bash", "code": "x", "args": ["a", "b", "c"]});
        assert_eq!(field(many), "args");
        let typed = json!({"language": "bash", "code": "x", "args": ["a", 2]});
        assert_eq!(field(typed), "args[1]");
        let extra = json!({"language": "bash", "code": "x", "shell": true});
        assert_eq!(field(extra), "shell");
        let nested =
            json!({"language": "bash", "code": "x", "nodes": [{"key": "a"}, {"key": "abcd"}]});
        assert_eq!(field(nested), "nodes[1].key");
        let missing = json!({"language": "bash", "code": "x", "nodes": [{}]});
        assert_eq!(field(missing), "nodes[0].key");
        assert_eq!(check(&schema(), None).unwrap_err().field, "language");
    }
}
