//! The manual cannot drift from the code: every intra-repository link (and its
//! `#anchor`) in README.md and docs/ points at something that exists; every key
//! of `config/default.toml` is in the README's configuration table with its
//! default; every subcommand the README's command table names exists.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every .md under docs/.
fn documents() -> Vec<PathBuf> {
    let mut v = vec![root().join("README.md")];
    let mut stack = vec![root().join("docs")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("docs/") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "md") {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

/// Lines outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fence = false;
    text.lines()
        .filter(|l| {
            if l.trim_start().starts_with("```") {
                fence = !fence;
                return false;
            }
            !fence
        })
        .collect()
}

/// GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    prose(&text)
        .into_iter()
        .filter(|l| l.starts_with('#'))
        .map(|l| slug(l.trim_start_matches('#')))
        .collect()
}

/// Targets of `[text](target)` and `![alt](target)` on one line, inline code
/// spans left out.
fn links(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut code = false;
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'`' {
            code = !code;
        } else if !code && b[i] == b']' && b.get(i + 1) == Some(&b'(') {
            if let Some(end) = line[i + 2..].find(')') {
                out.push(line[i + 2..i + 2 + end].to_string());
                i += 2 + end;
            }
        }
        i += 1;
    }
    out
}

#[test]
fn no_dead_intra_repository_links() {
    let mut dead = Vec::new();
    let mut n = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).expect("read");
        let dir = doc.parent().expect("parent");
        for (k, line) in prose(&text).iter().enumerate() {
            for t in links(line) {
                let t = t.split_whitespace().next().unwrap_or("").to_string();
                if t.contains("://") || t.starts_with("mailto:") {
                    continue;
                }
                n += 1;
                let (path, anchor) = match t.split_once('#') {
                    Some((p, a)) => (p.to_string(), Some(a.to_string())),
                    None => (t.clone(), None),
                };
                let target = if path.is_empty() {
                    doc.clone()
                } else {
                    dir.join(&path)
                };
                let shown = format!("{}:{}: ({t})", doc.display(), k + 1);
                if !target.exists() {
                    dead.push(format!("{shown}: no such file"));
                    continue;
                }
                if let Some(a) = anchor {
                    if target.extension().is_some_and(|x| x == "md")
                        && !anchors(&target).contains(&a)
                    {
                        dead.push(format!("{shown}: no heading #{a}"));
                    }
                }
            }
        }
    }
    assert!(n > 20, "only {n} links found: is the parser broken?");
    assert!(dead.is_empty(), "dead links:\n{}", dead.join("\n"));
}

/// `section.key` -> default, flattened from `config/default.toml`.
fn default_keys() -> BTreeMap<String, toml::Value> {
    let text = std::fs::read_to_string(root().join("config/default.toml")).expect("config");
    let v: toml::Table = toml::from_str(&text).expect("default.toml parses");
    let mut out = BTreeMap::new();
    for (section, t) in v {
        let toml::Value::Table(t) = t else {
            panic!("top-level {section} is not a section")
        };
        for (k, val) in t {
            out.insert(format!("{section}.{k}"), val);
        }
    }
    out
}

/// The README's configuration rows: key -> default cell (without backticks).
fn readme_config_rows() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(root().join("README.md")).expect("README");
    let start = text
        .find("\n## Configuration")
        .expect("a Configuration section");
    let section = &text[start + 1..];
    let end = section[3..]
        .find("\n## ")
        .map(|e| e + 3)
        .unwrap_or(section.len());
    let mut rows = BTreeMap::new();
    for l in section[..end].lines() {
        let cells: Vec<&str> = l.split(" | ").collect();
        if !l.starts_with("| `") || cells.len() < 3 {
            continue;
        }
        let key = cells[0]
            .trim_start_matches("| ")
            .trim_matches('`')
            .to_string();
        rows.insert(key, cells[1].trim().trim_matches('`').to_string());
    }
    rows
}

/// Equal as configuration values: numbers by value (30 and 30.0 alike).
fn same(a: &toml::Value, b: &toml::Value) -> bool {
    use toml::Value as V;
    match (a, b) {
        (V::Integer(_) | V::Float(_), V::Integer(_) | V::Float(_)) => {
            let f = |v: &V| v.as_float().or(v.as_integer().map(|i| i as f64));
            f(a) == f(b)
        }
        (V::Table(x), V::Table(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (V::Array(x), V::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w))
        }
        _ => a == b,
    }
}

#[test]
fn every_configuration_key_is_documented_with_its_default() {
    let keys = default_keys();
    let rows = readme_config_rows();
    let mut wrong = Vec::new();
    for (k, v) in &keys {
        match rows.get(k) {
            None => wrong.push(format!("{k}: not in the README's configuration table")),
            Some(cell) => {
                let parsed: Result<toml::Table, _> = toml::from_str(&format!("v = {cell}"));
                match parsed.ok().and_then(|t| t.get("v").cloned()) {
                    Some(doc) if same(&doc, v) => {}
                    _ => wrong.push(format!("{k}: README says {cell}, default.toml {v}")),
                }
            }
        }
    }
    // A documented key that the defaults do not set must be an optional one.
    for (k, cell) in &rows {
        if !keys.contains_key(k) && cell != "unset" {
            wrong.push(format!(
                "{k}: documented with default {cell}, not in default.toml"
            ));
        }
    }
    assert!(rows.len() >= keys.len(), "{} rows", rows.len());
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_subcommand_in_the_readme_exists() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_organdose"))
        .arg("--help")
        .output()
        .expect("organdose --help");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let subcommands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(subcommands.contains(&"demo"), "{help}");
    let text = std::fs::read_to_string(root().join("README.md")).expect("README");
    let mut missing = Vec::new();
    // The command table's first column, and every line of a code block that
    // runs organdose.
    for l in text.lines().filter(|l| l.starts_with("| `")) {
        let cell = l.trim_start_matches("| `");
        let first = cell.split([' ', '`']).next().unwrap_or("");
        if first.contains(['.', '/']) || first.is_empty() {
            continue; // configuration keys, files and folders
        }
        if !subcommands.contains(&first) && first != "run" {
            missing.push(first.to_string());
        }
    }
    let mut fence = false;
    for l in text.lines() {
        let t = l.trim_start();
        if t.starts_with("```") {
            fence = !fence;
            continue;
        }
        if !fence {
            continue;
        }
        if let Some(rest) = t.strip_prefix("organdose ") {
            let first = rest
                .split_whitespace()
                .find(|w| !w.starts_with('-') && !w.contains('/') && !w.contains('.'));
            if let Some(w) = first {
                if !subcommands.contains(&w) && w != "run" {
                    missing.push(w.to_string());
                }
            }
        }
    }
    assert!(missing.is_empty(), "not subcommands: {missing:?}");
}
