//! Parsing Canonical Form and CRC-64-AVRO fingerprints, written from the Avro 1.12
//! specification ("Parsing Canonical Form for Schemas", "Schema Fingerprints").
//!
//! Why our own: single-object headers must carry the fingerprint every other Avro implementation
//! computes (Java, fastavro, …), and apache-avro 0.21's `Schema::canonical_form` differs for our
//! schemas. It canonicalises a re-serialised `Schema`, keeps `{"type":"long"}` for a
//! `timestamp-millis` long instead of reducing it to `"long"` (its PRIMITIVES check runs before
//! STRIP), and keeps `order`, `precision` and `scale`; so its fingerprint of OutboundVerdict is
//! 0xafb428aa4b03f8d4 where the spec's is 0x7c7a939ba345b39a.
//!
//! The form is computed from the schema's JSON text (not from a parsed `Schema`), so nothing a
//! parser adds or drops can leak into it.

use std::collections::HashSet;
use std::fmt::Write as _;

use serde_json::{Map, Value};

const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

/// CRC-64-AVRO of `data` (the spec's 64-bit Rabin fingerprint), as the `u64` whose
/// little-endian bytes form the single-object header.
pub fn crc64_avro(data: &[u8]) -> u64 {
    let mut fp = EMPTY;
    for &b in data {
        fp = (fp >> 8) ^ TABLE[((fp ^ u64::from(b)) & 0xff) as usize];
    }
    fp
}

/// The spec's `EMPTY` constant: the fingerprint of zero bytes.
const EMPTY: u64 = 0xc15d_213a_a4d7_a795;

static TABLE: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut fp = i as u64;
        let mut j = 0;
        while j < 8 {
            // fp = (fp >>> 1) ^ (EMPTY & -(fp & 1L)), as in the spec.
            fp = (fp >> 1) ^ (EMPTY & (fp & 1).wrapping_neg());
            j += 1;
        }
        t[i] = fp;
        i += 1;
    }
    t
};

/// The Parsing Canonical Form of a schema given as JSON text: PRIMITIVES, FULLNAMES, STRIP
/// (only `type`, `name`, `fields`, `symbols`, `items`, `values`, `size` survive, so `doc`,
/// `aliases`, `default`, `logicalType`, `order`, … go), ORDER, STRINGS, INTEGERS, WHITESPACE.
/// A named type is written in full at its first occurrence and by its full name after that.
pub fn parsing_canonical_form(schema_json: &str) -> Result<String, String> {
    let v: Value = serde_json::from_str(schema_json).map_err(|e| format!("not JSON: {e}"))?;
    let mut out = String::with_capacity(schema_json.len() / 2);
    Canon::default().write(&v, "", &mut out)?;
    Ok(out)
}

/// The reference fingerprint of a schema given as JSON text: CRC-64-AVRO of its Parsing
/// Canonical Form.
pub fn fingerprint(schema_json: &str) -> Result<u64, String> {
    Ok(crc64_avro(parsing_canonical_form(schema_json)?.as_bytes()))
}

#[derive(Default)]
struct Canon {
    /// Full names of the named types already written.
    defined: HashSet<String>,
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_full_name(s: &str) -> bool {
    s.split('.').all(is_name)
}

/// The full name of `name` declared (or referenced) with the optional `namespace` attribute
/// inside a type whose namespace is `enclosing` ("" = null namespace).
fn full_name(name: &str, namespace: Option<&str>, enclosing: &str) -> String {
    if name.contains('.') {
        return name.to_string();
    }
    let ns = namespace.unwrap_or(enclosing);
    if ns.is_empty() {
        name.to_string()
    } else {
        format!("{ns}.{name}")
    }
}

fn str_attr<'v>(m: &'v Map<String, Value>, key: &str) -> Result<Option<&'v str>, String> {
    match m.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("\"{key}\" must be a string, got {other}")),
    }
}

impl Canon {
    fn write(&mut self, v: &Value, ns: &str, out: &mut String) -> Result<(), String> {
        match v {
            Value::String(s) => self.write_name_ref(s, ns, out),
            Value::Array(branches) => {
                out.push('[');
                for (i, b) in branches.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.write(b, ns, out)?;
                }
                out.push(']');
                Ok(())
            }
            Value::Object(m) => self.write_object(m, ns, out),
            other => Err(format!("not a schema: {other}")),
        }
    }

    /// A type given by name: a primitive, or a reference to a named type (always written as its
    /// full name, since it was defined earlier).
    fn write_name_ref(&mut self, s: &str, ns: &str, out: &mut String) -> Result<(), String> {
        if PRIMITIVES.contains(&s) {
            let _ = write!(out, "\"{s}\"");
            return Ok(());
        }
        if !is_full_name(s) {
            return Err(format!("invalid type name {s:?}"));
        }
        // Relative to the enclosing namespace first, then the null namespace (as Java does).
        let qualified = full_name(s, None, ns);
        let name = if self.defined.contains(&qualified) || !self.defined.contains(s) {
            qualified
        } else {
            s.to_string()
        };
        let _ = write!(out, "\"{name}\"");
        Ok(())
    }

    fn write_object(
        &mut self,
        m: &Map<String, Value>,
        ns: &str,
        out: &mut String,
    ) -> Result<(), String> {
        let ty = m.get("type").ok_or("schema object without \"type\"")?;
        let ty = match ty {
            Value::String(t) => t.as_str(),
            // {"type": {...}} / {"type": [...]}: the attributes around it are stripped.
            nested => return self.write(nested, ns, out),
        };
        match ty {
            // PRIMITIVES (after STRIP, so logical types and other attributes vanish).
            t if PRIMITIVES.contains(&t) => {
                let _ = write!(out, "\"{t}\"");
                Ok(())
            }
            "array" => {
                out.push_str("{\"type\":\"array\",\"items\":");
                self.write(m.get("items").ok_or("array without \"items\"")?, ns, out)?;
                out.push('}');
                Ok(())
            }
            "map" => {
                out.push_str("{\"type\":\"map\",\"values\":");
                self.write(m.get("values").ok_or("map without \"values\"")?, ns, out)?;
                out.push('}');
                Ok(())
            }
            "record" | "error" | "enum" | "fixed" => self.write_named(ty, m, ns, out),
            // {"type": "some.Named"}: a reference.
            other => self.write_name_ref(other, ns, out),
        }
    }

    fn write_named(
        &mut self,
        ty: &str,
        m: &Map<String, Value>,
        ns: &str,
        out: &mut String,
    ) -> Result<(), String> {
        let name = str_attr(m, "name")?.ok_or_else(|| format!("{ty} without \"name\""))?;
        let full = full_name(name, str_attr(m, "namespace")?, ns);
        if !is_full_name(&full) {
            return Err(format!("invalid name {full:?}"));
        }
        if !self.defined.insert(full.clone()) {
            // Each named type is written once; later occurrences by full name.
            let _ = write!(out, "\"{full}\"");
            return Ok(());
        }
        // The namespace nested definitions and references inherit.
        let inner_ns = full.rsplit_once('.').map_or("", |(ns, _)| ns);
        // Java writes errors as records too.
        let kind = if ty == "error" { "record" } else { ty };
        let _ = write!(out, "{{\"name\":\"{full}\",\"type\":\"{kind}\"");
        match kind {
            "record" => self.write_fields(&full, m, inner_ns, out)?,
            "enum" => write_symbols(&full, m, out)?,
            _ => write_size(&full, m, out)?,
        }
        out.push('}');
        Ok(())
    }

    /// A record's `"fields"`, each as its name and type (nested definitions in `inner_ns`).
    fn write_fields(
        &mut self,
        full: &str,
        m: &Map<String, Value>,
        inner_ns: &str,
        out: &mut String,
    ) -> Result<(), String> {
        let fields = open_array(m, "fields", "record", full, out)?;
        for (i, f) in fields.iter().enumerate() {
            let f = f
                .as_object()
                .ok_or_else(|| format!("record {full}: a field is not an object"))?;
            let fname = str_attr(f, "name")?
                .filter(|n| is_name(n))
                .ok_or_else(|| format!("record {full}: field without a valid name"))?;
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{{\"name\":\"{fname}\",\"type\":");
            let ftype = f
                .get("type")
                .ok_or_else(|| format!("field {full}.{fname} without \"type\""))?;
            self.write(ftype, inner_ns, out)?;
            out.push('}');
        }
        out.push(']');
        Ok(())
    }
}

/// The array attribute `key` of the `ty` named `full`, its opening (`,"key":[`) written.
fn open_array<'m>(
    m: &'m Map<String, Value>,
    key: &str,
    ty: &str,
    full: &str,
    out: &mut String,
) -> Result<&'m [Value], String> {
    let items = m
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{ty} {full} without a \"{key}\" array"))?;
    let _ = write!(out, ",\"{key}\":[");
    Ok(items)
}

/// An enum's `"symbols"`, each a valid name.
fn write_symbols(full: &str, m: &Map<String, Value>, out: &mut String) -> Result<(), String> {
    let symbols = open_array(m, "symbols", "enum", full, out)?;
    for (i, s) in symbols.iter().enumerate() {
        let s = s
            .as_str()
            .filter(|s| is_name(s))
            .ok_or_else(|| format!("enum {full}: invalid symbol {s}"))?;
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "\"{s}\"");
    }
    out.push(']');
    Ok(())
}

/// A fixed's `"size"`. INTEGERS: a size given as a string or with a fraction-free float is
/// written as a plain integer.
fn write_size(full: &str, m: &Map<String, Value>, out: &mut String) -> Result<(), String> {
    let size = match m.get("size") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("fixed {full} without a valid \"size\""))?;
    let _ = write!(out, ",\"size\":{size}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64_of_the_empty_input_is_the_spec_constant() {
        assert_eq!(crc64_avro(b""), EMPTY);
        // The spec's example: the fingerprint of the canonical form "\"int\"" used by
        // single-object examples (cross-checked with fastavro 1.13.1).
        assert_eq!(crc64_avro(b"\"int\""), 0x7275_d51a_3f39_5c8f);
    }

    #[test]
    fn named_types_are_written_once_and_qualified() {
        let src = r#"{"type":"record","name":"R","namespace":"a.b","doc":"x","fields":[
            {"name":"e","type":{"type":"enum","name":"E","symbols":["X","Y"],"default":"X"},"default":"Y"},
            {"name":"e2","type":"E"},
            {"name":"f","type":{"type":"fixed","name":"c.F","size":"4","aliases":["G"]}},
            {"name":"f2","type":["null","c.F"]},
            {"name":"t","type":{"type":"long","logicalType":"timestamp-millis"},"order":"descending"},
            {"name":"m","type":{"type":"map","values":{"type":"array","items":"a.b.E"}}}
        ]}"#;
        assert_eq!(
            parsing_canonical_form(src).unwrap(),
            r#"{"name":"a.b.R","type":"record","fields":[{"name":"e","type":{"name":"a.b.E","type":"enum","symbols":["X","Y"]}},{"name":"e2","type":"a.b.E"},{"name":"f","type":{"name":"c.F","type":"fixed","size":4}},{"name":"f2","type":["null","c.F"]},{"name":"t","type":"long"},{"name":"m","type":{"type":"map","values":{"type":"array","items":"a.b.E"}}}]}"#
        );
    }

    #[test]
    fn malformed_schemas_are_errors() {
        for bad in [
            "",
            "3",
            r#"{"type":"record","name":"R"}"#,
            r#"{"type":"enum","name":"E","symbols":["a-b"]}"#,
            r#"{"type":"fixed","name":"F"}"#,
            r#"{"items":"int"}"#,
            r#""not-a-name""#,
        ] {
            assert!(parsing_canonical_form(bad).is_err(), "{bad}");
        }
    }
}
