//! The example configuration: the repository's top-level `config.ini`,
//! `connection_info.json`, `mappings/` and `logs/.gitignore`, embedded in the
//! binary (issue 20).
//!
//! These files are the one source of three things that must never drift apart:
//! what `hostsync init` writes ([`crate::cmd::init`]), the configuration reference of
//! the man page ([`crate::cmd::man`], which reads the comments of `config.ini`), and
//! the setup of `scripts/demo.sh` (which copies the top-level files and points them
//! at its own sshd). The example's hosts use documentation addresses (192.0.2.x,
//! RFC 5737) and are `"disabled": true`, so running hostsync on them dials nothing.

/// One file of the example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct File {
    /// Its path relative to the configuration folder, `/`-separated.
    pub(crate) path: &'static str,
    /// Its content.
    pub(crate) text: &'static str,
}

/// Every file of the example, in the order `init` writes them.
pub(crate) const FILES: &[File] = &[
    File {
        path: "config.ini",
        text: include_str!("../../config.ini"),
    },
    File {
        path: "connection_info.json",
        text: include_str!("../../connection_info.json"),
    },
    File {
        path: "mappings/192.0.2.10.json",
        text: include_str!("../../mappings/192.0.2.10.json"),
    },
    File {
        path: "mappings/192.0.2.11.json",
        text: include_str!("../../mappings/192.0.2.11.json"),
    },
    File {
        path: "logs/.gitignore",
        text: include_str!("../../logs/.gitignore"),
    },
];

/// The top-level entries of the example (what `init` refuses to overwrite).
pub(crate) const ENTRIES: &[&str] = &["config.ini", "connection_info.json", "mappings", "logs"];

/// One `key = value` line of the example config.ini with the comment above it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Key {
    /// The section, without brackets (`DEFAULT`, `ssh`, `sync`).
    pub(crate) section: String,
    /// The key.
    pub(crate) key: String,
    /// The value the example sets, which is the default.
    pub(crate) default: String,
    /// The comment lines right above the key, joined with spaces.
    pub(crate) comment: String,
}

/// The example config.ini's text.
pub(crate) fn config_ini() -> &'static str {
    FILES[0].text
}

/// Every key of the example config.ini, in file order, with its comment. Comments
/// before the first section describe the file, not a key, and are left out.
pub(crate) fn config_keys() -> Vec<Key> {
    let mut keys = Vec::new();
    let mut section = None;
    let mut comment: Vec<&str> = Vec::new();
    for line in config_ini().lines().map(str::trim) {
        if let Some(text) = line.strip_prefix('#') {
            comment.push(text.trim());
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.to_string());
            comment.clear();
        } else if let (Some(section), Some((key, value))) = (&section, line.split_once('=')) {
            keys.push(Key {
                section: section.clone(),
                key: key.trim().to_string(),
                default: value.trim().to_string(),
                comment: comment.join(" "),
            });
            comment.clear();
        } else {
            comment.clear();
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{hosts, ini, mapping};

    /// Every key hostsync knows is in the example, once, with a comment, and the
    /// values it sets are the defaults.
    #[test]
    fn config_ini_has_every_key_at_its_default() {
        let keys = config_keys();
        let known: Vec<(String, String)> = ini::KNOWN
            .iter()
            .flat_map(|(s, ks)| ks.iter().map(|k| (s.to_string(), k.to_string())))
            .collect();
        let have: Vec<(String, String)> = keys
            .iter()
            .map(|k| (k.section.clone(), k.key.clone()))
            .collect();
        assert_eq!(have, known, "the example's keys, in ini::KNOWN's order");
        for k in &keys {
            assert!(!k.comment.is_empty(), "{} has no comment", k.key);
        }
        let parsed = ini::parse(Path::new("config.ini"), config_ini()).unwrap();
        assert_eq!(parsed, ini::Settings::default());
    }

    /// Two hosts, one with a password from the environment and one with a key,
    /// both disabled, both on documentation addresses; one mapping file each,
    /// showing a file mapping, `exclude`, and `delete` with `backups`.
    #[test]
    fn hosts_and_mappings_are_a_safe_working_example() {
        let text = FILES[1].text;
        let (list, warnings) = hosts::parse_with(
            Path::new("connection_info.json"),
            Path::new("/cfg"),
            text,
            hosts::UnsetVars::Refuse,
        )
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(list.len(), 2);
        assert!(list.iter().all(|h| h.disabled), "{list:?}");
        assert!(list.iter().all(|h| h.address.starts_with("192.0.2.")));
        assert!(text.contains("\"passkey_env\"") && !text.contains("\"passkey\""));
        assert!(list.iter().any(|h| h.identity_file.is_some()));
        for h in &list {
            let path = format!("mappings/{}.json", h.address);
            let file = FILES.iter().find(|f| f.path == path).expect(&path);
            let m = mapping::parse(Path::new(&path), Path::new("/cfg"), file.text).unwrap();
            let file_mapping =
                |m: &mapping::Mapping| !m.src.to_string_lossy().ends_with('/') && !m.delete;
            assert!(m.iter().any(file_mapping), "{path}: a file mapping");
            assert!(m.iter().any(|m| !m.exclude.is_empty()), "{path}: exclude");
            assert!(
                m.iter().any(|m| m.delete && m.backups > 0),
                "{path}: delete"
            );
        }
        let mapping_files = FILES.iter().filter(|f| f.path.starts_with("mappings/"));
        assert_eq!(mapping_files.count(), list.len());
    }

    #[test]
    fn every_file_is_under_an_entry() {
        for f in FILES {
            let top = f.path.split('/').next().unwrap();
            assert!(ENTRIES.contains(&top), "{}", f.path);
        }
        assert_eq!(FILES[0].path, "config.ini");
    }
}
