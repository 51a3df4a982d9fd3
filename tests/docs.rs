//! The configuration examples in README.md and docs/*.md are real: every
//! fenced TOML block is checked the way a user would check it.
//!
//! - ```` ```toml ````: a whole gateway configuration; `strait gateway
//!   check --skip-identity` must accept it.
//! - ```` ```toml fragment ````: some sections of one; it is merged into the
//!   last whole block before it in the same file (tables key by key, arrays
//!   of tables replaced) and the result must pass the same check.
//! - ```` ```toml netsim ````: a netsim topology; it must load.
//! - ```` ```toml scenario ````: a fault scenario (`strait drill run`, the
//!   soak); it must parse.

mod support;

use std::path::{Path, PathBuf};

/// (file, line, info string, body) of every fenced TOML block.
fn toml_blocks() -> Vec<(PathBuf, usize, String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut blocks = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut open: Option<(usize, String, String)> = None;
        for (n, line) in text.lines().enumerate() {
            let fence = line.trim_start().strip_prefix("```");
            match (&mut open, fence) {
                (None, Some(info)) if info.split_whitespace().next() == Some("toml") => {
                    open = Some((n + 1, info.trim().to_owned(), String::new()));
                }
                (Some(_), Some("")) => {
                    let (at, info, body) = open.take().unwrap();
                    blocks.push((file.clone(), at, info, body));
                }
                (Some((_, _, body)), _) => {
                    body.push_str(line);
                    body.push('\n');
                }
                _ => {}
            }
        }
        assert!(open.is_none(), "{}: unclosed ```toml block", file.display());
    }
    blocks
}

/// `fragment` laid over `base`: tables merge key by key, anything else
/// (values, arrays of tables) is replaced.
fn merge(base: &mut toml::Table, fragment: toml::Table) {
    for (key, value) in fragment {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(f)) => merge(b, f),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn gateway_check(dir: &Path, what: &str, text: &str) {
    let file = dir.join("gw.toml");
    std::fs::write(&file, text).unwrap();
    let run = support::strait_argv(
        dir,
        &["gateway", "check", "--skip-identity", "--config", "gw.toml"],
    );
    assert!(
        run.success,
        "{what} fails `strait gateway check`:\n{}\n{text}",
        run.stderr
    );
}

#[test]
fn every_toml_block_in_the_readme_and_docs_checks() {
    let dir = tempfile::tempdir().unwrap();
    let blocks = toml_blocks();
    let mut base: Option<(PathBuf, toml::Table)> = None;
    let mut checked = 0;
    for (file, line, info, body) in blocks {
        let what = format!("the block at {}:{line}", file.display());
        match info.as_str() {
            "toml" => {
                gateway_check(dir.path(), &what, &body);
                base = Some((file, body.parse().unwrap()));
            }
            "toml fragment" => {
                let Some((_, mut whole)) = base.clone().filter(|(f, _)| *f == file) else {
                    panic!("{what}: a fragment needs a whole ```toml block before it");
                };
                let fragment: toml::Table = body
                    .parse()
                    .unwrap_or_else(|e| panic!("{what} is not TOML: {e}"));
                merge(&mut whole, fragment);
                gateway_check(dir.path(), &what, &toml::to_string(&whole).unwrap());
            }
            "toml netsim" => {
                strait_netsim::Topology::parse(Path::new("topology.toml"), &body)
                    .unwrap_or_else(|e| panic!("{what} is not a netsim topology: {e}"));
            }
            "toml scenario" => {
                strait_gateway::scenario::Scenario::parse(Path::new("drill.toml"), &body)
                    .unwrap_or_else(|e| panic!("{what} is not a fault scenario: {e}"));
            }
            other => panic!("{what}: unknown info string {other:?}"),
        }
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} TOML blocks found");
}
