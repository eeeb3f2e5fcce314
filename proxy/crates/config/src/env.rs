//! `PORTCULLIS_<SECTION>_<KEY>` environment overrides, applied to the parsed TOML table before it
//! is deserialised, so an override is validated exactly like the file value it replaces.
//!
//! The value's type is taken from the default config (integers, booleans, strings, lists as
//! comma-separated values). The environment is passed in, so tests never touch the process's.

use super::{Config, ConfigError};

const PREFIX: &str = "PORTCULLIS_";

/// Applies every `PORTCULLIS_*` variable to `table`; unknown sections/keys and unparsable values
/// are errors naming the variable.
pub fn apply_env_overrides(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), Vec<ConfigError>> {
    let defaults = toml::Table::try_from(Config::default()).expect("Config serialises to a table");
    let mut errs = Vec::new();
    let mut vars: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k.starts_with(PREFIX)).collect();
    vars.sort();
    for (name, raw) in vars {
        let rest = &name[PREFIX.len()..];
        let Some((section, key)) = rest.split_once('_') else {
            errs.push(ConfigError::new(&name, "", &raw, "expected PORTCULLIS_<SECTION>_<KEY>"));
            continue;
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        let sect_defaults = defaults.get(&section).and_then(|s| s.as_table());
        // A key of a table inside the section (`PORTCULLIS_TLS_ACME_ENABLED`: `[tls.acme] enabled`).
        let nested = sect_defaults.and_then(|s| {
            key.match_indices('_').map(|(i, _)| (&key[..i], &key[i + 1..])).find_map(|(sub, k)| {
                let d = s.get(sub)?.as_table()?.get(k)?;
                Some((sub.to_owned(), k.to_owned(), d))
            })
        });
        let (sub, key, default) = match (sect_defaults.and_then(|s| s.get(&key)), nested) {
            (Some(d), _) if !d.is_table() => (None, key, d),
            (_, Some((sub, k, d))) => (Some(sub), k, d),
            _ => {
                errs.push(ConfigError::new(&name, format!("{section}.{key}"), &raw, "no such config key"));
                continue;
            }
        };
        let (section, key) = match &sub {
            Some(sub) => (section, format!("{sub}.{key}")),
            None => (section, key),
        };
        let integers = default.as_array().is_some_and(|a| match a.first() {
            Some(first) => first.is_integer(),
            None => list_takes_integers(&defaults, &section, &key),
        });
        let value = match typed_value(default, &raw, integers) {
            Ok(v) => v,
            Err(msg) => {
                errs.push(ConfigError::new(&name, format!("{section}.{key}"), &raw, msg));
                continue;
            }
        };
        let sect = table.entry(section.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let target = match (sect.as_table_mut(), key.split_once('.')) {
            (Some(t), None) => Some((t, key.clone())),
            (Some(t), Some((sub, k))) => t
                .entry(sub.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .map(|t| (t, k.to_owned())),
            (None, _) => None,
        };
        match target {
            Some((t, k)) => {
                t.insert(k, value);
            }
            None => errs.push(ConfigError::new(&name, section, &raw, "config file has this name as a non-table")),
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

/// Whether the list `section.key`, empty by default, holds integers (`[ebpf] syn_ports`): the
/// default config with `[1]` there deserialises.
fn list_takes_integers(defaults: &toml::Table, section: &str, key: &str) -> bool {
    let mut probe = defaults.clone();
    let Some(t) = probe.get_mut(section).and_then(|s| s.as_table_mut()) else { return false };
    t.insert(key.to_owned(), toml::Value::Array(vec![toml::Value::Integer(1)]));
    probe.try_into::<Config>().is_ok()
}

fn typed_value(default: &toml::Value, raw: &str, integers: bool) -> Result<toml::Value, String> {
    use toml::Value;
    if integers {
        let items: Result<Vec<Value>, String> = raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().map(Value::Integer).map_err(|_| format!("expected comma-separated integers, got `{s}`")))
            .collect();
        return items.map(Value::Array);
    }
    Ok(match default {
        Value::Integer(_) => Value::Integer(raw.trim().parse().map_err(|_| "expected an integer".to_string())?),
        Value::Float(_) => Value::Float(raw.trim().parse().map_err(|_| "expected a number".to_string())?),
        Value::Boolean(_) => Value::Boolean(match raw.trim() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err("expected true or false".into()),
        }),
        Value::Array(_) => Value::Array(
            raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| Value::String(s.to_string())).collect(),
        ),
        _ => Value::String(raw.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn overrides_win_over_file() {
        let cfg = Config::parse(
            Path::new("t.toml"),
            "[admin]\nsecret = \"file\"\n",
            env(&[("PORTCULLIS_ADMIN_SECRET", "s3cret"), ("PORTCULLIS_PROXY_WORKERS", "3"), ("HOME", "/x")]),
        )
        .unwrap();
        assert_eq!(cfg.admin.secret, "s3cret");
        assert_eq!(cfg.proxy.workers, 3);
    }

    #[test]
    fn lists_of_integers_are_integers() {
        let cfg = Config::parse(Path::new("t.toml"), "", env(&[("PORTCULLIS_EBPF_SYN_PORTS", "80, 443")])).unwrap();
        assert_eq!(cfg.ebpf.syn_ports, [80, 443]);
        let e = Config::parse(Path::new("t.toml"), "", env(&[("PORTCULLIS_EBPF_SYN_PORTS", "80,https")])).unwrap_err();
        assert_eq!((e[0].file.as_str(), e[0].field.as_str()), ("PORTCULLIS_EBPF_SYN_PORTS", "ebpf.syn_ports"));
        assert!(e[0].message.contains("`https`"), "{e:?}");
        // Lists of strings stay strings, numbers included.
        let cfg = Config::parse(
            Path::new("t.toml"),
            "",
            env(&[("PORTCULLIS_VISIBILITY_CONTENT_TYPES", "application/json,+json")]),
        )
        .unwrap();
        assert_eq!(cfg.visibility.content_types, ["application/json", "+json"]);
    }

    #[test]
    fn keys_of_tables_inside_sections() {
        let vars = [
            ("PORTCULLIS_TLS_ACME_ENABLED", "true"),
            ("PORTCULLIS_TLS_ACME_RENEW_BEFORE_DAYS", "20"),
            ("PORTCULLIS_TLS_TICKET_KEY_PERIOD_SECS", "600"),
        ];
        let cfg = Config::parse(Path::new("t.toml"), "[tls.acme]\nemail = \"a@b\"\n", env(&vars)).unwrap();
        assert!(cfg.tls.acme.enabled);
        assert_eq!(cfg.tls.acme.renew_before_days, 20);
        assert_eq!(cfg.tls.acme.email, "a@b", "the file's keys of the table stay");
        assert_eq!(cfg.tls.ticket_key_period_secs, 600);
        let e = Config::parse(Path::new("t.toml"), "", env(&[("PORTCULLIS_TLS_ACME_NOPE", "1")])).unwrap_err();
        assert_eq!(e[0].field, "tls.acme_nope");
    }

    #[test]
    fn keys_with_underscores() {
        let cfg = Config::parse(Path::new("t.toml"), "", env(&[("PORTCULLIS_PROXY_MAX_CONNECTIONS_PER_WORKER", "7")]))
            .unwrap();
        assert_eq!(cfg.proxy.max_connections_per_worker, 7);
    }

    #[test]
    fn the_visibility_sample_rate_is_a_number_and_checked() {
        let cfg =
            Config::parse(Path::new("t.toml"), "", env(&[("PORTCULLIS_VISIBILITY_SAMPLE_RATE", "0.25")])).unwrap();
        assert_eq!(cfg.visibility.sample_rate, 0.25);
        let cfg = Config::parse(Path::new("t.toml"), "", env(&[("PORTCULLIS_VISIBILITY_SAMPLE_RATE", "2")])).unwrap();
        let e = cfg.validate(Path::new("t.toml")).unwrap_err();
        assert!(e.iter().any(|e| e.field == "visibility.sample_rate"), "{e:?}");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = Config::parse(
            Path::new("t.toml"),
            "",
            env(&[("PORTCULLIS_PROXY_WORKERS", "many"), ("PORTCULLIS_PROXY_NOPE", "1")]),
        )
        .unwrap_err();
        assert_eq!(e.len(), 2);
        assert!(e.iter().any(|e| e.file == "PORTCULLIS_PROXY_WORKERS" && e.value == "many"));
        assert!(e.iter().any(|e| e.file == "PORTCULLIS_PROXY_NOPE"));
    }
}
