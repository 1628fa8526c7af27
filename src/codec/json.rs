//! "Friendly" JSON ↔ Avro generic values, driven by the schema: records are objects, timestamps
//! integers (ms), optional fields a plain value or `null` (missing = the field's default), enums
//! their symbol as a string, arrays arrays. Used by `mailguard produce` / `mailguard tail`.

use apache_avro::schema::{RecordField, RecordSchema, Schema};
use apache_avro::types::Value;
use serde_json::Value as Json;

use super::CodecError;

fn err(path: &str, msg: impl std::fmt::Display) -> CodecError {
    CodecError::Json(format!("{path}: {msg}"))
}

fn kind(j: &Json) -> &'static str {
    match j {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

/// JSON → Avro value of `schema`. `path` names the field for errors.
pub(crate) fn to_value(schema: &Schema, j: &Json, path: &str) -> Result<Value, CodecError> {
    let want = |what: &str| err(path, format!("expected {what}, got {}", kind(j)));
    Ok(match schema {
        Schema::Null => match j {
            Json::Null => Value::Null,
            _ => return Err(want("null")),
        },
        Schema::Boolean => Value::Boolean(j.as_bool().ok_or_else(|| want("boolean"))?),
        Schema::Int => {
            let n = j.as_i64().ok_or_else(|| want("integer"))?;
            Value::Int(i32::try_from(n).map_err(|_| err(path, format!("{n} out of int range")))?)
        }
        Schema::Long => Value::Long(j.as_i64().ok_or_else(|| want("integer"))?),
        Schema::TimestampMillis => {
            Value::TimestampMillis(j.as_i64().ok_or_else(|| want("integer (ms since epoch)"))?)
        }
        Schema::Float => Value::Float(j.as_f64().ok_or_else(|| want("number"))? as f32),
        Schema::Double => Value::Double(j.as_f64().ok_or_else(|| want("number"))?),
        Schema::String => Value::String(j.as_str().ok_or_else(|| want("string"))?.to_string()),
        Schema::Enum(e) => enum_value(
            &e.symbols,
            j.as_str().ok_or_else(|| want("enum symbol string"))?,
            path,
        )?,
        Schema::Array(a) => {
            array_value(&a.items, j.as_array().ok_or_else(|| want("array"))?, path)?
        }
        Schema::Map(m) => map_value(&m.types, j.as_object().ok_or_else(|| want("object"))?, path)?,
        Schema::Union(u) => union_value(u.variants(), j, path)?,
        Schema::Record(r) => record_value(r, j.as_object().ok_or_else(|| want("object"))?, path)?,
        other => return Err(err(path, format!("unsupported schema type {other:?}"))),
    })
}

/// An enum's symbol, by its position in `symbols`.
fn enum_value(symbols: &[String], s: &str, path: &str) -> Result<Value, CodecError> {
    match symbols.iter().position(|x| x == s) {
        Some(i) => Ok(Value::Enum(i as u32, s.to_string())),
        None => Err(CodecError::InvalidEnumSymbol {
            field: path.to_string(),
            symbol: s.to_string(),
        }),
    }
}

/// Each item against `items`; errors name the index (`path[i]`).
fn array_value(items: &Schema, xs: &[Json], path: &str) -> Result<Value, CodecError> {
    let values = xs
        .iter()
        .enumerate()
        .map(|(i, x)| to_value(items, x, &format!("{path}[{i}]")))
        .collect::<Result<_, _>>()?;
    Ok(Value::Array(values))
}

/// Each value against `types`; errors name the key (`path.k`).
fn map_value(
    types: &Schema,
    obj: &serde_json::Map<String, Json>,
    path: &str,
) -> Result<Value, CodecError> {
    let entries = obj
        .iter()
        .map(|(k, x)| Ok((k.clone(), to_value(types, x, &format!("{path}.{k}"))?)))
        .collect::<Result<_, CodecError>>()?;
    Ok(Value::Map(entries))
}

/// `null` takes the null branch; any other value the first non-null branch it fits (the error is
/// the last branch's).
fn union_value(variants: &[Schema], j: &Json, path: &str) -> Result<Value, CodecError> {
    if j.is_null() {
        let i = variants
            .iter()
            .position(|s| matches!(s, Schema::Null))
            .ok_or_else(|| err(path, "null is not allowed"))?;
        return Ok(Value::Union(i as u32, Box::new(Value::Null)));
    }
    let mut last = None;
    for (i, s) in variants.iter().enumerate() {
        if matches!(s, Schema::Null) {
            continue;
        }
        match to_value(s, j, path) {
            Ok(v) => return Ok(Value::Union(i as u32, Box::new(v))),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| err(path, format!("expected null, got {}", kind(j)))))
}

/// An object of `r`'s fields, in schema order: unknown keys are refused, a missing field takes its
/// schema default (null for optional fields), a missing field without one is an error.
fn record_value(
    r: &RecordSchema,
    obj: &serde_json::Map<String, Json>,
    path: &str,
) -> Result<Value, CodecError> {
    if let Some(k) = obj.keys().find(|k| !r.lookup.contains_key(k.as_str())) {
        return Err(err(path, format!("unknown field {k:?} in {}", r.name.name)));
    }
    let mut fields = Vec::with_capacity(r.fields.len());
    for RecordField {
        name,
        schema,
        default,
        ..
    } in &r.fields
    {
        let sub = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        let v = match (obj.get(name), default) {
            (Some(x), _) => to_value(schema, x, &sub)?,
            (None, Some(d)) => to_value(schema, d, &sub)?,
            (None, None) => return Err(err(&sub, "missing field")),
        };
        fields.push((name.clone(), v));
    }
    Ok(Value::Record(fields))
}

/// Avro value → friendly JSON.
pub(crate) fn from_value(v: Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Boolean(b) => Json::Bool(b),
        Value::Int(x) | Value::Date(x) | Value::TimeMillis(x) => Json::from(x),
        Value::Long(x)
        | Value::TimeMicros(x)
        | Value::TimestampMillis(x)
        | Value::TimestampMicros(x)
        | Value::TimestampNanos(x)
        | Value::LocalTimestampMillis(x)
        | Value::LocalTimestampMicros(x)
        | Value::LocalTimestampNanos(x) => Json::from(x),
        Value::Float(x) => Json::from(f64::from(x)),
        Value::Double(x) => Json::from(x),
        Value::String(s) | Value::Enum(_, s) => Json::String(s),
        Value::Bytes(b) | Value::Fixed(_, b) => {
            Json::Array(b.into_iter().map(Json::from).collect())
        }
        Value::Union(_, b) => from_value(*b),
        Value::Array(items) => Json::Array(items.into_iter().map(from_value).collect()),
        Value::Map(m) => Json::Object(m.into_iter().map(|(k, v)| (k, from_value(v))).collect()),
        Value::Record(fields) => Json::Object(
            fields
                .into_iter()
                .map(|(k, v)| (k, from_value(v)))
                .collect(),
        ),
        other => Json::String(format!("{other:?}")),
    }
}
