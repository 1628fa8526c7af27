//! Secrets in the configuration: where they come from, and how they stay out of every output.
//!
//! A Kubernetes Secret reaches a pod as an environment variable or a mounted file, never inside
//! the TOML a ConfigMap holds. So any string value that is exactly `${file:/path}` or
//! `${env:NAME}` is replaced, at load time, by that file's content (one trailing newline
//! dropped) or that variable's value — the syntax of Kafka's own config providers, which platform
//! teams already know. A whole Java-style properties file can also feed the Kafka clients
//! (`kafka.client_properties_file`), which is how Secrets holding `client.properties` are mounted.
//!
//! Whatever the source, a secret is never printed: `check-config` and `Debug` go through
//! [`redact_properties`], which replaces the value of every key [`is_secret_key`] recognises.
//! References (`${file:…}`) are resolved before that, so the printed form shows `[redacted]`,
//! and error messages name the field and the file or variable, never the value.

use std::collections::BTreeMap;
use std::path::Path;

use super::FieldError;

/// What a secret value is printed as.
pub const REDACTED: &str = "[redacted]";

/// Whether a librdkafka property (or any config key) holds a secret. Errs on the side of
/// hiding: every `sasl.*` but the mechanism, anything named like a password, secret, token,
/// credential or private key, and PEM key material.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    if matches!(k.as_str(), "sasl.mechanism" | "sasl.mechanisms") {
        return false;
    }
    k.starts_with("sasl.")
        || ["password", "secret", "token", "credential", "private"]
            .iter()
            .any(|w| k.contains(w))
        || k.starts_with("ssl.key")
        || k.starts_with("ssl_key")
        || (k.contains("key") && k.ends_with(".pem"))
}

/// Whether the configuration field at dotted `path` holds a secret: every Kafka client
/// property (the map itself included), the registry's credentials, the API token hashes, and any
/// field whose name [`is_secret_key`] recognises. Errors about such a field never show its value.
pub fn is_secret_field(path: &str) -> bool {
    path == "kafka.client_properties"
        || path.starts_with("kafka.client_properties.")
        || matches!(path, "registry.username" | "registry.password")
        || (path.starts_with("api.tokens") && path.ends_with(".sha256"))
        || path.rsplit('.').next().is_some_and(is_secret_key)
}

/// The message of a type or value error (serde's `invalid type: integer `123456`, expected a
/// string`) about the field at `path`: as is, but for a secret field, whose value it would quote,
/// only what was expected is kept.
pub fn field_message(path: &str, message: &str) -> String {
    // Unknown and missing fields are named by their key, which is no secret.
    let about_a_key = ["unknown field", "missing field"]
        .iter()
        .any(|p| message.starts_with(p));
    if !is_secret_field(path) || about_a_key {
        return message.to_string();
    }
    // serde's messages end with what the type expects, which never contains the value.
    let expected = message.rfind(", expected ").map_or("", |i| &message[i..]);
    format!("wrong type or value (not shown: the field holds a secret){expected}")
}

/// A copy of `props` with every secret value replaced by [`REDACTED`].
pub fn redact_properties(props: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    props
        .iter()
        .map(|(k, v)| {
            let v = if is_secret_key(k) {
                REDACTED.to_string()
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}

/// Resolves a `${file:/path}` or `${env:NAME}` reference; any other value is returned as is.
/// `field` names the setting in errors; `env` looks up environment variables (injected for tests).
pub fn resolve(
    field: &str,
    value: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, FieldError> {
    let Some(inner) = value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) else {
        return Ok(value.to_string());
    };
    if let Some(path) = inner.strip_prefix("file:") {
        let text = std::fs::read_to_string(path)
            .map_err(|e| FieldError::new(field, format!("cannot read secret file {path}: {e}")))?;
        let text = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text);
        Ok(text.to_string())
    } else if let Some(name) = inner.strip_prefix("env:") {
        env(name).ok_or_else(|| {
            FieldError::new(field, format!("environment variable {name} is not set"))
        })
    } else {
        // Not even the scheme is echoed: the text between `${` and `}` may be a password that
        // merely looks like a reference.
        Err(FieldError::new(
            field,
            "a value of the form `${…}` must be ${file:/path} or ${env:NAME}",
        ))
    }
}

/// Reads a Java-style properties file: `key=value` or `key: value` lines, `#` and `!` comments,
/// surrounding blanks trimmed. Line continuations and escapes are not supported (an error names
/// the line), since librdkafka property values never need them.
pub fn read_properties(field: &str, path: &Path) -> Result<BTreeMap<String, String>, FieldError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| FieldError::new(field, format!("cannot read {}: {e}", path.display())))?;
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        // The line itself is never quoted: it may hold a password.
        let bad =
            |why: &str| FieldError::new(field, format!("{} line {}: {why}", path.display(), n + 1));
        if line.ends_with('\\') {
            return Err(bad("line continuations are not supported"));
        }
        let split = line
            .find(['=', ':'])
            .ok_or_else(|| bad("expected key=value"))?;
        let (k, v) = (line[..split].trim(), line[split + 1..].trim());
        if k.is_empty() {
            return Err(bad("empty key"));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn secret_keys_are_recognised() {
        for k in [
            "sasl.password",
            "sasl.username",
            "sasl.oauthbearer.client.secret",
            "ssl.key.password",
            "ssl.key.pem",
            "ssl.keystore.password",
            "password",
            "basic.auth.user.info.credentials",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "sasl.mechanism",
            "security.protocol",
            "ssl.ca.location",
            "bootstrap.servers",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
    }

    #[test]
    fn secret_fields_are_recognised_and_their_errors_keep_only_what_was_expected() {
        for f in [
            "kafka.client_properties",
            "kafka.client_properties.linger.ms",
            "registry.username",
            "registry.password",
            "api.tokens[3].sha256",
        ] {
            assert!(is_secret_field(f), "{f}");
        }
        for f in [
            "policy.threshold",
            "api.tokens[0].principal",
            "registry.url",
        ] {
            assert!(!is_secret_field(f), "{f}");
        }
        let m = field_message(
            "registry.password",
            "invalid type: integer `123456`, expected a string",
        );
        assert!(
            !m.contains("123456") && m.ends_with(", expected a string"),
            "{m}"
        );
        let m = field_message(
            "policy.threshold",
            "invalid type: string \"x\", expected u32",
        );
        assert!(m.contains("\"x\""), "{m}");
    }

    #[test]
    fn redaction_keeps_non_secrets() {
        let props: BTreeMap<String, String> = [
            ("sasl.password", "hunter2"),
            ("security.protocol", "SASL_SSL"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let r = redact_properties(&props);
        assert_eq!(r["sasl.password"], REDACTED);
        assert_eq!(r["security.protocol"], "SASL_SSL");
    }

    #[test]
    fn file_and_env_references_resolve_and_errors_name_the_source_not_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        let v = resolve("f", &format!("${{file:{}}}", p.display()), &no_env).unwrap();
        assert_eq!(v, "s3cret");
        let env = |n: &str| (n == "PW").then(|| "from-env".to_string());
        assert_eq!(resolve("f", "${env:PW}", &env).unwrap(), "from-env");
        assert_eq!(resolve("f", "plain", &no_env).unwrap(), "plain");
        let e = resolve("kafka.x", "${env:MISSING}", &no_env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("kafka.x") && e.contains("MISSING"), "{e}");
        let e = resolve("kafka.x", "${file:/nope/pw}", &no_env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nope/pw"), "{e}");
        assert!(resolve("kafka.x", "${vault:x}", &no_env).is_err());
        // A password that looks like a reference is not echoed.
        let e = resolve("kafka.x", "${hunter2}", &no_env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("kafka.x") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn properties_files_parse() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("client.properties");
        std::fs::write(
            &p,
            "# comment\n! also\nsecurity.protocol=SASL_SSL\nsasl.mechanism : SCRAM-SHA-512\n\n",
        )
        .unwrap();
        let m = read_properties("f", &p).unwrap();
        assert_eq!(m["security.protocol"], "SASL_SSL");
        assert_eq!(m["sasl.mechanism"], "SCRAM-SHA-512");
        std::fs::write(&p, "novalue\n").unwrap();
        assert!(read_properties("f", &p)
            .unwrap_err()
            .to_string()
            .contains("line 1"));
    }
}
