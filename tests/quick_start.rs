//! The README's quick start, run as written: its TOML blocks become the
//! files their first line names, its shell lines run in order in one bash
//! (the build and PATH lines aside: the binary under test is on PATH).
//! The one liberty: `curl` is retried until the tunnel is up, as a person
//! would press Enter again.

mod support;

use std::path::Path;

/// (files to write, shell lines) of the README's "Quick start" section.
fn quick_start() -> (Vec<(String, String)>, Vec<String>) {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Quick start\n"))
        .expect("README has a \"## Quick start\" section");
    let (mut files, mut lines) = (Vec::new(), Vec::new());
    let mut block: Option<(String, String)> = None;
    for line in section.lines() {
        match (&mut block, line.strip_prefix("```")) {
            (None, Some(info)) => block = Some((info.to_owned(), String::new())),
            (Some(_), Some("")) => {
                let (info, body) = block.take().unwrap();
                match info.as_str() {
                    "toml" => {
                        let name = body
                            .lines()
                            .next()
                            .and_then(|l| l.strip_prefix("# "))
                            .expect("a quick-start TOML block starts with # FILE");
                        files.push((name.to_owned(), body.clone()));
                    }
                    "sh" => lines.extend(
                        body.lines()
                            .filter(|l| !l.starts_with("cargo ") && !l.starts_with("export PATH="))
                            .map(str::to_owned),
                    ),
                    other => panic!("quick start: unexpected block ```{other}"),
                }
            }
            (Some((_, body)), _) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    (files, lines)
}

#[test]
fn the_readmes_quick_start_runs_as_written() {
    let (files, lines) = quick_start();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(lines.iter().any(|l| l.starts_with("curl ")), "{lines:?}");
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in &files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let script = format!(
        "set -e\n\
         trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n\
         curl() {{ for _ in $(seq 150); do command curl --fail \"$@\" && return 0; sleep 0.2; done; return 1; }}\n\
         {}\n",
        lines.join("\n")
    );
    let bin_dir = support::strait_bin().parent().unwrap().to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out: support::Run = std::process::Command::new("bash")
        .args(["-c", &script])
        .env("PATH", path)
        .current_dir(dir.path())
        .output()
        .expect("cannot run bash")
        .into();
    let log = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    let context = format!(
        "{out:#?}\nwest.log:\n{}\neast.log:\n{}",
        log("west.log"),
        log("east.log")
    );
    assert!(out.success, "{context}");
    assert!(out.stdout.contains("Directory listing for /"), "{context}");
    assert!(out.stdout.contains("gw-west"), "{context}");
    assert!(
        log("east.log").contains("stream closed (import)"),
        "{context}"
    );
}
