//! `MAILGUARD_<SECTION>__<FIELD>=value` overrides (double underscore between section and field,
//! because field names contain single underscores).
//!
//! A value is read by the type of the field it sets, which the configuration's own defaults say:
//! - a string field (every secret among them: registry credentials, client properties, paths)
//!   takes the value as the literal string, quotes, `#` and digits included — nothing in it is
//!   interpreted, so `MAILGUARD_REGISTRY__PASSWORD=123456` is the password `123456`;
//! - a number, boolean, list or table field reads it as a TOML value (`7`, `true`, `["a"]`,
//!   `{ k = "v" }`); one that does not parse is an error naming the variable and the field,
//!   never quoting the value.
//!
//! Entries of a map (`MAILGUARD_KAFKA__CLIENT_PROPERTIES__LINGER.MS`) are strings.

use super::{Config, ConfigError, FieldError, ENV_PREFIX};

/// Applies every `MAILGUARD_…` variable of `env` to the parsed file `root`.
pub(super) fn apply(root: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    let kinds = field_kinds();
    for (key, value) in env {
        let Some(rest) = key.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.len() < 2 || path.iter().any(String::is_empty) {
            // MAILGUARD_CONFIG and friends are CLI settings, not config fields.
            continue;
        }
        let field = path.join(".");
        let parsed = value_for(kind_of(&kinds, &path), key, &field, value)?;
        let mut table = &mut *root;
        for section in &path[..path.len() - 1] {
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = match entry {
                toml::Value::Table(t) => t,
                _ => {
                    return Err(ConfigError::field(
                        &field,
                        format!("environment variable {key}: `{section}` is not a section"),
                    ))
                }
            };
        }
        table.insert(path[path.len() - 1].clone(), parsed);
    }
    Ok(())
}

/// The default configuration as TOML, with every optional non-string field set: the type of
/// each field. (Optional string fields, absent here, are strings like unknown ones.)
fn field_kinds() -> toml::Table {
    let mut probe = Config::default();
    probe.policy.strike_decay_ms = Some(1);
    probe.shadow = super::ShadowConfig {
        enabled: false,
        threshold: Some(1),
        window_ms: Some(1),
        allowed_lateness_ms: Some(1),
        base_block_ms: Some(1),
        permanent_strike: Some(1),
        strike_decay_ms: Some(1),
    };
    toml::Table::try_from(&probe).expect("the configuration serializes as TOML")
}

fn kind_of<'a>(kinds: &'a toml::Table, path: &[String]) -> Option<&'a toml::Value> {
    let (last, sections) = path.split_last()?;
    let mut table = kinds;
    for s in sections {
        table = table.get(s)?.as_table()?;
    }
    table.get(last)
}

fn value_for(
    kind: Option<&toml::Value>,
    key: &str,
    field: &str,
    value: &str,
) -> Result<toml::Value, ConfigError> {
    let Some(kind) = kind.filter(|k| !k.is_str()) else {
        return Ok(toml::Value::String(value.to_string()));
    };
    // The parser's message is a fixed description; its Display would quote the value.
    format!("x = {value}")
        .parse::<toml::Table>()
        .map_err(|e| e.message().to_string())
        .and_then(|mut t| t.remove("x").ok_or_else(|| "no value".to_string()))
        .map_err(|why| {
            ConfigError::Field(FieldError::new(
                field,
                format!(
                    "environment variable {key} is not a TOML {} ({why})",
                    kind.type_str()
                ),
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn string_fields_take_the_literal_value_and_others_parse() {
        let mut root = toml::Table::new();
        apply(
            &mut root,
            &env(&[
                ("MAILGUARD_REGISTRY__PASSWORD", "123456"),
                ("MAILGUARD_REGISTRY__USERNAME", "\"quoted\" # not a comment"),
                ("MAILGUARD_KAFKA__CLIENT_PROPERTIES__SASL.PASSWORD", "true"),
                ("MAILGUARD_STATE__DIR", "42"),
                ("MAILGUARD_POLICY__THRESHOLD", "7"),
                ("MAILGUARD_POLICY__STRIKE_DECAY_MS", "1000"),
                ("MAILGUARD_TOPICS__CREATE_MISSING", "true"),
            ]),
        )
        .unwrap();
        let c: Config = toml::Value::Table(root).try_into().unwrap();
        assert_eq!(c.registry.password, "123456");
        assert_eq!(c.registry.username, "\"quoted\" # not a comment");
        assert_eq!(c.kafka.client_properties["sasl.password"], "true");
        assert_eq!(c.state.dir, std::path::PathBuf::from("42"));
        assert_eq!(c.policy.threshold, 7);
        assert_eq!(c.policy.strike_decay_ms, Some(1000));
        assert!(c.topics.create_missing);
    }

    #[test]
    fn every_secret_scalar_is_a_string_field() {
        fn walk(prefix: &str, t: &toml::Table) {
            for (k, v) in t {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match v {
                    toml::Value::Table(t) => walk(&path, t),
                    v if crate::config::secrets::is_secret_field(&path) => {
                        assert!(v.is_str() || v.is_array(), "{path} would be parsed as TOML")
                    }
                    _ => {}
                }
            }
        }
        walk("", &field_kinds());
    }

    #[test]
    fn a_value_that_does_not_parse_names_variable_and_field_not_the_value() {
        let err = apply(
            &mut toml::Table::new(),
            &env(&[(
                "MAILGUARD_KAFKA__CLIENT_PROPERTIES",
                "{ \"sasl.password\" = s3cr3t }",
            )]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("kafka.client_properties")
                && err.contains("MAILGUARD_KAFKA__CLIENT_PROPERTIES")
                && !err.contains("s3cr3t"),
            "{err}"
        );
    }
}
