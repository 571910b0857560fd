//! Property tests ("fuzzing") of the three configuration parsers (issue 4): for
//! arbitrary text and for structured, nearly valid input, [`ini::parse`],
//! [`hosts::parse`] and [`mapping::parse`] never panic, and every line of every
//! error starts with the file's name, so a user always knows which file to fix.
//!
//! Bounded by proptest's default case count so `cargo test` stays fast; run it
//! longer with `PROPTEST_CASES=100000 cargo test --lib config::fuzz`.

use std::path::Path;

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::{hosts, ini, mapping};

/// Fails the property unless every line of the error (one per problem) names `file` first.
fn named<T>(file: &str, result: anyhow::Result<T>) -> Result<(), TestCaseError> {
    if let Err(e) = result {
        let text = format!("{e:#}");
        for line in text.lines() {
            prop_assert!(
                line.starts_with(file),
                "line does not start with {file}: {line:?} (whole error: {text:?})"
            );
        }
    }
    Ok(())
}

/// A JSON value of the kinds config files hold, plus the usual mistakes.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("127.0.0.1"),
            Just("::1"),
            Just("300.1.1.1"),
            Just("web1.example.net"),
            Just("/srv/www"),
            Just("relative/x"),
            Just("/"),
            Just("/a/../b"),
            Just("~/k"),
            Just("")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::btree_map(".{0,6}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An array of objects whose keys are mostly the real field names.
fn near_valid_json(fields: &'static [&'static str]) -> impl Strategy<Value = String> {
    let key = prop_oneof![
        4 => prop::sample::select(fields).prop_map(String::from),
        1 => ".{0,8}",
    ];
    let object = prop::collection::vec((key, json_value()), 0..7)
        .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>()));
    (
        prop::collection::vec(object, 0..4),
        any::<prop::sample::Index>(),
        0..3u8,
    )
        .prop_map(|(objects, cut, mutation)| {
            let text = Value::Array(objects).to_string();
            // Sometimes break the syntax: truncate, or add a trailing comma.
            match mutation {
                0 => {
                    let mut end = cut.index(text.len() + 1);
                    while !text.is_char_boundary(end) {
                        end -= 1;
                    }
                    text[..end].to_string()
                }
                1 => text.replacen("}]", "},]", 1),
                _ => text,
            }
        })
}

/// config.ini-like text: real sections and keys with odd values, and junk lines.
fn near_valid_ini() -> impl Strategy<Value = String> {
    const KEYS: &[&str] = &[
        "number_of_connections",
        "log_path",
        "connection_info_path",
        "address_mapper_path",
        "known_hosts",
        "host_key_policy",
        "connect_timeout",
        "io_timeout",
        "debounce_ms",
        "retry_max_s",
    ];
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        Just("99999999999999999999999".to_string()),
        Just("strict".to_string()),
        ".{0,10}",
    ];
    let line = prop_oneof![
        prop::sample::select(&["[DEFAULT]", "[ssh]", "[sync]", "[other]", "[", "]"][..])
            .prop_map(String::from),
        (
            prop::sample::select(KEYS),
            value,
            prop::sample::select(&[" = ", ":", "=", " "][..])
        )
            .prop_map(|(k, v, sep)| format!("{k}{sep}{v}")),
        "[^\n]{0,16}",
        Just("; comment".to_string()),
        Just(String::new()),
    ];
    prop::collection::vec(line, 0..12).prop_map(|lines| lines.join("\n"))
}

const HOST_FIELDS: &[&str] = &[
    "ip_address",
    "user",
    "port",
    "passkey",
    "passkey_env",
    "identity_file",
    "passphrase",
    "passphrase_env",
    "disabled",
    "proxy_jump",
];
const MAPPING_FIELDS: &[&str] = &["src", "dest", "delete", "exclude", "backups", "post_sync"];

proptest! {
    #[test]
    fn ini_parse_any_text(text in ".*") {
        named("config.ini", ini::parse(Path::new("config.ini"), &text))?;
    }

    #[test]
    fn ini_parse_near_valid(text in near_valid_ini()) {
        named("config.ini", ini::parse(Path::new("config.ini"), &text))?;
    }

    #[test]
    fn hosts_parse_any_text(text in ".*") {
        let r = hosts::parse(Path::new("hosts.json"), Path::new("/cfg"), &text);
        named("hosts.json", r)?;
    }

    #[test]
    fn hosts_parse_near_valid(text in near_valid_json(HOST_FIELDS)) {
        let r = hosts::parse(Path::new("hosts.json"), Path::new("/cfg"), &text);
        named("hosts.json", r)?;
    }

    #[test]
    fn mapping_parse_any_text(text in ".*") {
        let r = mapping::parse(Path::new("m.json"), Path::new("/cfg"), &text);
        named("m.json", r)?;
    }

    #[test]
    fn mapping_parse_near_valid(text in near_valid_json(MAPPING_FIELDS)) {
        let r = mapping::parse(Path::new("m.json"), Path::new("/cfg"), &text);
        named("m.json", r)?;
    }
}
