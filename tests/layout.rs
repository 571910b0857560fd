//! Issue 15 (the house reads as the pipeline): the folders of `src/` depend on
//! each other one way only, as README's "Architecture" draws them; every file
//! has a module doc that stays inside the repository; there is no `utils`.
//! Read from the source files themselves, so a new `use crate::...` that points
//! the wrong way fails here, with the file and the line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each top-level module of the library and the modules it may use. A module
/// always may use itself; `root` is lib.rs.
const ALLOWED: &[(&str, &[&str])] = &[
    ("escape", &[]),
    ("failure", &[]),
    ("exit", &[]),
    ("cli", &[]),
    ("log", &["failure", "escape"]),
    ("config", &["failure", "escape", "cli"]),
    ("local", &["failure", "config", "escape"]),
    ("remote", &["failure", "local", "config", "escape"]),
    (
        "transport",
        &["failure", "remote", "local", "config", "escape"],
    ),
    (
        "reconcile",
        &["failure", "remote", "local", "config", "escape"],
    ),
    ("watch", &["failure", "remote", "local", "config", "escape"]),
    ("report", &["failure", "reconcile", "escape"]),
    ("output", &["failure", "report", "escape"]),
    (
        "exec",
        &[
            "failure",
            "transport",
            "reconcile",
            "watch",
            "report",
            "remote",
            "local",
            "config",
            "escape",
        ],
    ),
    (
        "cmd",
        &[
            "failure",
            "exec",
            "output",
            "report",
            "watch",
            "reconcile",
            "transport",
            "remote",
            "local",
            "config",
            "log",
            "cli",
            "exit",
            "escape",
        ],
    ),
    ("root", &["cmd", "exec", "config", "cli", "exit", "escape"]),
];

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The library's source files by path relative to `src/` (main.rs, the binary,
/// is not part of the library).
fn sources() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let files: BTreeMap<String, String> = files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&src).unwrap().display().to_string();
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .filter(|(rel, _)| rel != "main.rs")
        .collect();
    assert!(
        files.len() > 40,
        "{} files: not the source tree?",
        files.len()
    );
    files
}

/// The top-level module a file belongs to.
fn module_of(rel: &str) -> String {
    match rel.split_once('/') {
        Some((dir, _)) => dir.to_string(),
        None if rel == "lib.rs" => "root".to_string(),
        None => rel.trim_end_matches(".rs").to_string(),
    }
}

/// The modules a line names as `crate::NAME` (comments left out).
fn crate_refs(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or_default();
    code.match_indices("crate::")
        .map(|(i, _)| {
            let rest = &code[i + "crate::".len()..];
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '{')
                .collect()
        })
        .collect()
}

#[test]
fn dependencies_point_one_way() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for (rel, text) in sources() {
        let module = module_of(&rel);
        let Some(may) = allowed.get(module.as_str()) else {
            wrong.push(format!(
                "src/{rel}: module `{module}` is not in the layout; add it to ALLOWED and README"
            ));
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            for used in crate_refs(line) {
                if used.starts_with('{') {
                    wrong.push(format!(
                        "src/{rel}:{}: `crate::{{` hides which modules are used; one `use` per module",
                        n + 1
                    ));
                } else if used != module && !may.contains(&used.as_str()) {
                    wrong.push(format!(
                        "src/{rel}:{}: `{module}` uses `{used}`, which is not below it",
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

/// The check above can fail: a line of `local` naming `exec` is caught.
#[test]
fn an_upward_reference_is_seen() {
    assert_eq!(crate_refs("use crate::exec::pool; // crate::x"), ["exec"]);
    assert_eq!(
        crate_refs("    let x = crate::remote::quote(b);"),
        ["remote"]
    );
    assert!(crate_refs("//! see [`crate::exec`]").is_empty());
    assert_eq!(module_of("exec/push/by_agent.rs"), "exec");
    assert_eq!(module_of("lib.rs"), "root");
    assert_eq!(module_of("escape.rs"), "escape");
}

#[test]
fn every_file_has_a_module_doc_that_stays_in_the_repository() {
    let mut wrong = Vec::new();
    for (rel, text) in sources() {
        if !text.starts_with("//!") {
            wrong.push(format!("src/{rel}: no module doc (//!) at the top"));
        }
        if text.contains("../shared") {
            wrong.push(format!(
                "src/{rel}: points to ../shared, outside the repository"
            ));
        }
        if rel.contains("util") {
            wrong.push(format!(
                "src/{rel}: a utils module; put each part where it belongs"
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

/// The longest a function may be, from its `fn` line to its closing brace.
const MAX_FN_LINES: usize = 60;

/// The functions of `text` longer than [`MAX_FN_LINES`]: (line, name, length).
/// Test code is left out: everything from the first top-level `#[cfg(test)]`
/// on (the files' test modules come last), where case tables may be long. A
/// function is found by its `fn` line and ends at the first line that is a
/// lone `}` at the same indent (rustfmt's layout); a declaration without a
/// body (an `extern` item, a trait method) ends at its `;`.
fn long_functions(text: &str) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let end = (lines.iter())
        .position(|l| l.starts_with("#[cfg(test)]"))
        .unwrap_or(lines.len());
    let mut long = Vec::new();
    for (i, line) in lines[..end].iter().enumerate() {
        let code = line.trim_start();
        let indent = line.len() - code.len();
        let mut rest = code;
        for prefix in ["pub(crate) ", "pub ", "const ", "unsafe ", "extern \"C\" "] {
            rest = rest.strip_prefix(prefix).unwrap_or(rest);
        }
        let Some(sig) = rest.strip_prefix("fn ") else {
            continue;
        };
        let name: String = (sig.chars())
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let close = format!("{}}}", " ".repeat(indent));
        let mut len = 0;
        for (j, l) in lines[i..end].iter().enumerate() {
            if l.trim_end().ends_with(';') && !lines[i..=i + j].iter().any(|l| l.contains('{')) {
                break;
            }
            if j > 0 && l.trim_end() == close {
                len = j + 1;
                break;
            }
        }
        if len > MAX_FN_LINES {
            long.push((i + 1, name, len));
        }
    }
    long
}

/// Issue 15: no function is longer than about 60 lines. Files that are test
/// code whole (the reconcile tables, the property tests) are left out.
#[test]
fn no_function_is_longer_than_sixty_lines() {
    let mut wrong = Vec::new();
    for (rel, text) in sources() {
        if rel == "reconcile/tests.rs" || rel == "config/fuzz.rs" {
            continue;
        }
        for (line, name, len) in long_functions(&text) {
            wrong.push(format!(
                "src/{rel}:{line}: fn {name} is {len} lines (at most {MAX_FN_LINES}); split it"
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

/// The length check sees a long body, and not a bodiless declaration or tests.
#[test]
fn a_long_function_is_seen() {
    let body = "    let x = 1;\n".repeat(61);
    let text = format!(
        "fn short() {{\n}}\n\npub(crate) fn long(\n    a: u8,\n) {{\n{body}}}\n\
         unsafe extern \"C\" {{\n    fn decl(\n        a: u8,\n    ) -> u8;\n}}\n\
         #[cfg(test)]\nmod tests {{\n    fn also_long() {{\n{body}    }}\n}}\n"
    );
    assert_eq!(long_functions(&text), [(4, "long".to_string(), 65)]);
}
