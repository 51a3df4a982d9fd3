//! Containers for the tests that run strait's image: podman with the
//! settings this kind of machine needs (runc and cgroupfs, explicit
//! ulimits: crun and podman's defaults fail on its kernel's cgroups),
//! the image built by `deploy/image/build.sh` from the binary under test,
//! and cleanup when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::Run;

/// podman, configured for this machine, or `None` (with the reason
/// printed) where it is missing. On CI (`CI` set) it must be there:
/// `.ci/run` installs it.
pub struct Podman {
    conf: PathBuf,
    _dir: tempfile::TempDir,
}

impl Podman {
    pub fn find() -> Option<Podman> {
        let found = Command::new("podman")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
        });
        if !found || !root {
            assert!(
                std::env::var_os("CI").is_none(),
                "podman (as root) is needed on CI: .ci/run installs the Debian packages podman and runc"
            );
            eprintln!(
                "skipped: {}",
                if found {
                    "needs root to run containers with host networking"
                } else {
                    "podman not found (Debian packages podman and runc)"
                }
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("containers.conf");
        std::fs::write(
            &conf,
            "[containers]\ndefault_ulimits = [\"nofile=4096:4096\", \"nproc=1024:1024\"]\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n",
        )
        .unwrap();
        Some(Podman { conf, _dir: dir })
    }

    /// `podman ARGS`, with this machine's settings.
    pub fn run(&self, args: &[&str]) -> Run {
        Command::new("podman")
            .env("CONTAINERS_CONF", &self.conf)
            .args(args)
            .output()
            .unwrap()
            .into()
    }

    /// Builds the image from the binary under test; removed when the
    /// returned guard drops.
    pub fn build_image(&self, tag: &str) -> Image<'_> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/image/build.sh");
        let out: Run = Command::new("bash")
            .arg(&script)
            .arg(super::strait_bin())
            .arg(tag)
            .env("CONTAINERS_CONF", &self.conf)
            .output()
            .unwrap()
            .into();
        let out = out.ok();
        eprintln!("{}", out.stdout.trim());
        Image {
            podman: self,
            tag: tag.to_owned(),
        }
    }
}

/// An image built for a test.
pub struct Image<'a> {
    podman: &'a Podman,
    pub tag: String,
}

impl Drop for Image<'_> {
    fn drop(&mut self) {
        self.podman.run(&["rmi", "-f", &self.tag]);
    }
}

/// A container started for a test; removed (killed first) when dropped.
pub struct Container<'a> {
    pub podman: &'a Podman,
    pub name: String,
}

impl Container<'_> {
    pub fn logs(&self) -> String {
        let r = self.podman.run(&["logs", &self.name]);
        format!("{}{}", r.stdout, r.stderr)
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        self.podman.run(&["rm", "-f", "-t", "0", &self.name]);
    }
}

/// Gives `dir` and everything in it to the image's user (65532), as
/// Kubernetes' fsGroup does for a pod's volumes (a key stays private to
/// its owner).
pub fn hand_to_nonroot(dir: &Path) {
    let run: Run = Command::new("chown")
        .args(["-R", "65532:65532"])
        .arg(dir)
        .output()
        .unwrap()
        .into();
    run.ok();
    let run: Run = Command::new("chmod")
        .args(["-R", "u+rwX"])
        .arg(dir)
        .output()
        .unwrap()
        .into();
    run.ok();
}
