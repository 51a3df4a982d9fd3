//! The Kubernetes manifests in `deploy/` and the Dockerfile: every manifest
//! parses, the DaemonSet has the ports, probes, shutdown timing, rollout
//! and mounts the gateway needs, each region's configuration passes
//! `strait gateway check` and agrees with the manifests (ports, paths,
//! drain grace), and every import has a Service.

mod support;

use std::path::{Path, PathBuf};

use serde_norway::Value;
use support::strait_argv;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every YAML document of every file under `dir` (but the alerting rules
/// of `observability/`), with its file.
fn documents(dir: &Path) -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                // Prometheus rules, not Kubernetes manifests.
                if !path.ends_with("observability") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                let text = std::fs::read_to_string(&path).unwrap();
                for doc in serde_norway::Deserializer::from_str(&text) {
                    let value = <Value as serde::Deserialize>::deserialize(doc)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    out.push((path.clone(), value));
                }
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn kind<'a>(docs: &'a [(PathBuf, Value)], kind: &str) -> Vec<&'a (PathBuf, Value)> {
    docs.iter().filter(|(_, v)| v["kind"] == kind).collect()
}

fn str_of(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v:?}"))
}

fn int_of(v: &Value) -> i64 {
    v.as_i64()
        .unwrap_or_else(|| panic!("expected an integer, got {v:?}"))
}

fn seq(v: &Value) -> &Vec<Value> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("expected a list, got {v:?}"))
}

/// Seconds of a humantime duration such as "30s".
fn seconds(s: &str) -> i64 {
    s.strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{s:?} is not whole seconds"))
}

fn port_of(addr: &str) -> i64 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn manifests_hold_what_a_gateway_needs() {
    let deploy = repo().join("deploy");
    let docs = documents(&deploy);
    assert!(docs.len() >= 7, "{} documents", docs.len());
    for (path, doc) in &docs {
        assert!(
            doc["kind"].as_str().is_some() && doc["apiVersion"].as_str().is_some(),
            "{}: every document needs kind and apiVersion",
            path.display()
        );
    }

    let daemonsets: Vec<_> = kind(&docs, "DaemonSet")
        .into_iter()
        .filter(|(p, _)| p.starts_with(deploy.join("base")))
        .collect();
    assert_eq!(daemonsets.len(), 1, "one DaemonSet in the base");
    let ds = &daemonsets[0].1;
    let spec = &ds["spec"];
    assert_eq!(spec["updateStrategy"]["type"], "RollingUpdate");
    assert_eq!(
        int_of(&spec["updateStrategy"]["rollingUpdate"]["maxUnavailable"]),
        1
    );
    let pod_labels = &spec["template"]["metadata"]["labels"];
    for (k, v) in spec["selector"]["matchLabels"].as_mapping().unwrap() {
        assert_eq!(&pod_labels[k], v, "the selector must match the pod labels");
    }
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let gateway = seq(&pod["containers"])
        .iter()
        .find(|c| c["name"] == "gateway")
        .expect("a container named gateway");

    let ports = seq(&gateway["ports"]);
    let quic = ports
        .iter()
        .find(|p| p["name"] == "quic")
        .expect("quic port");
    assert_eq!(int_of(&quic["containerPort"]), 15443);
    assert_eq!(int_of(&quic["hostPort"]), 15443);
    assert_eq!(quic["protocol"], "UDP");
    // Peers dial the node's IP at the host port: STRAIT_ADVERTISE names
    // both, the IP from the downward API.
    let env = |name: &str| {
        seq(&gateway["env"])
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("gateway env {name}"))
            .clone()
    };
    assert_eq!(
        env("STRAIT_HOST_IP")["valueFrom"]["fieldRef"]["fieldPath"],
        "status.hostIP"
    );
    let advertise = env("STRAIT_ADVERTISE");
    assert_eq!(
        str_of(&advertise["value"]),
        format!("$(STRAIT_HOST_IP):{}", int_of(&quic["hostPort"]))
    );
    let admin = ports
        .iter()
        .find(|p| p["name"] == "admin")
        .expect("admin port");
    assert_eq!(int_of(&admin["containerPort"]), 15000);
    assert_eq!(admin["protocol"], "TCP");
    assert_eq!(gateway["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(int_of(&gateway["readinessProbe"]["httpGet"]["port"]), 15000);
    assert_eq!(gateway["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(int_of(&gateway["livenessProbe"]["httpGet"]["port"]), 15000);
    let pre_stop = int_of(&gateway["lifecycle"]["preStop"]["sleep"]["seconds"]);
    let grace_period = int_of(&pod["terminationGracePeriodSeconds"]);

    // Mounts: the config directory the args name, the identity directory,
    // and the join token for the init container; each backed by a volume.
    let args: Vec<&str> = seq(&gateway["args"]).iter().map(str_of).collect();
    let config_arg = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
    let mounts = |c: &Value| -> Vec<(String, String)> {
        seq(&c["volumeMounts"])
            .iter()
            .map(|m| {
                (
                    str_of(&m["name"]).to_owned(),
                    str_of(&m["mountPath"]).to_owned(),
                )
            })
            .collect()
    };
    let volumes: Vec<&Value> = seq(&pod["volumes"]).iter().collect();
    let volume = |name: &str| {
        *volumes
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    };
    let gw_mounts = mounts(gateway);
    for (name, _) in &gw_mounts {
        volume(name);
    }
    let config_mount = gw_mounts
        .iter()
        .find(|(_, path)| Path::new(config_arg).parent() == Some(Path::new(path)))
        .expect("the --config file's directory is mounted");
    let config_map = str_of(&volume(&config_mount.0)["configMap"]["name"]);
    let identity_mount = gw_mounts
        .iter()
        .find(|(name, _)| name == "identity")
        .expect("an identity mount")
        .1
        .clone();
    let join = seq(&pod["initContainers"])
        .iter()
        .find(|c| c["name"] == "join")
        .expect("the join init container");
    let join_cmd: Vec<&str> = seq(&join["command"]).iter().map(str_of).collect();
    assert_eq!(join_cmd[1..4], ["gateway", "join", "--token-file"]);
    let join_mounts = mounts(join);
    let token_file = Path::new(join_cmd[4]);
    let token_mount = join_mounts
        .iter()
        .find(|(_, p)| token_file.parent() == Some(Path::new(p)))
        .expect("the token file's directory is mounted in the init container");
    assert!(
        volume(&token_mount.0)["secret"]["secretName"]
            .as_str()
            .is_some()
    );
    let out = join_cmd[join_cmd.iter().position(|a| *a == "--out").unwrap() + 1];
    assert!(join_mounts.contains(&("identity".to_owned(), out.to_owned())));
    assert_eq!(out, identity_mount, "join writes where the gateway reads");
    assert_eq!(
        join["env"][0]["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName",
        "gateways are named after their node"
    );

    // The component that swaps the join token for certificates from a
    // Secret patches things the base has, by name.
    let patch = &kind(&docs, "DaemonSet")
        .into_iter()
        .find(|(p, _)| p.starts_with(deploy.join("components/identity-from-secret")))
        .expect("the identity-from-secret patch")
        .1;
    let patched = &patch["spec"]["template"]["spec"];
    assert_eq!(patch["metadata"]["name"], ds["metadata"]["name"]);
    assert_eq!(patched["initContainers"][0]["name"], "join");
    assert_eq!(patched["initContainers"][0]["$patch"], "delete");
    let patched_volumes = seq(&patched["volumes"]);
    assert!(
        patched_volumes
            .iter()
            .any(|v| v["name"] == token_mount.0 && v["$patch"] == "delete")
    );
    let secret_identity = patched_volumes
        .iter()
        .find(|v| v["name"] == "identity")
        .expect("the identity volume is replaced");
    assert!(secret_identity["secret"]["secretName"].as_str().is_some());
    assert!(secret_identity["emptyDir"].is_null());

    // Each region's overlay.
    let overlays: Vec<PathBuf> = std::fs::read_dir(deploy.join("overlays"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(overlays.len() >= 2, "an overlay per region");
    let services = kind(&docs, "Service");
    for overlay in &overlays {
        let k: Value = serde_norway::from_str(
            &std::fs::read_to_string(overlay.join("kustomization.yaml")).unwrap(),
        )
        .unwrap();
        for r in seq(&k["resources"]) {
            assert!(
                overlay.join(str_of(r)).exists(),
                "{}: {r:?}",
                overlay.display()
            );
        }
        let generator = seq(&k["configMapGenerator"])
            .iter()
            .find(|g| g["name"] == config_map)
            .unwrap_or_else(|| panic!("{}: generates no {config_map}", overlay.display()));
        let file = str_of(&seq(&generator["files"])[0]);
        assert_eq!(
            Path::new(file).file_name(),
            Path::new(config_arg).file_name(),
            "the generated key is the file the gateway reads"
        );
        let config_path = overlay.join(file);
        let run = strait_argv(
            &repo(),
            &[
                "gateway",
                "check",
                "--skip-identity",
                "--config",
                config_path.to_str().unwrap(),
            ],
        );
        assert!(run.success, "{}: {run:?}", config_path.display());
        let config: toml::Table =
            toml::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
        let gw = &config["gateway"];
        assert_eq!(port_of(gw["listen"].as_str().unwrap()), 15443);
        assert_eq!(
            gw["admin"].as_str().unwrap(),
            "0.0.0.0:15000",
            "kubelet probes reach the admin port"
        );
        let region = gw["region"].as_str().unwrap();
        assert!(
            overlay.ends_with(region),
            "{} configures {region}",
            overlay.display()
        );
        let drain = seconds(gw["drain_grace"].as_str().unwrap());
        assert!(
            grace_period >= pre_stop + drain && grace_period <= pre_stop + drain + 30,
            "terminationGracePeriodSeconds {grace_period} must cover preStop {pre_stop} s + drain_grace {drain} s, with a little margin"
        );
        for key in ["cert", "key", "bundle"] {
            let p = config["identity"][key].as_str().unwrap();
            assert_eq!(
                Path::new(p).parent(),
                Some(Path::new(&identity_mount)),
                "{key}"
            );
        }
        assert!(
            config["identity"].get("ca_service").is_some(),
            "renewal is on"
        );
        // A Service in this overlay in front of every import.
        let own: Vec<&Value> = services
            .iter()
            .filter(|(p, _)| p.starts_with(overlay))
            .map(|(_, v)| v)
            .collect();
        for import in config["import"].as_array().unwrap() {
            let service = import["service"].as_str().unwrap();
            let port = port_of(import["listen"].as_str().unwrap());
            let svc = own
                .iter()
                .find(|s| s["metadata"]["name"] == service)
                .unwrap_or_else(|| {
                    panic!("{}: no Service for import {service}", overlay.display())
                });
            assert!(
                seq(&svc["spec"]["ports"])
                    .iter()
                    .any(|p| int_of(&p["targetPort"]) == port),
                "Service {service} must target the import's port {port}"
            );
            for (k, v) in svc["spec"]["selector"].as_mapping().unwrap() {
                assert_eq!(
                    &pod_labels[k], v,
                    "Service {service} selects the gateway pods"
                );
            }
        }
    }
}

#[test]
fn dockerfile_builds_a_small_non_root_gateway_image() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    let froms = lines.iter().filter(|l| l.starts_with("FROM ")).count();
    assert!(froms >= 2, "multi-stage build");
    let user = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("USER "))
        .expect("USER");
    let uid = user["USER ".len()..].split(':').next().unwrap();
    assert!(uid != "0" && uid != "root", "runs as non-root, not {uid}");
    let expose = lines
        .iter()
        .find(|l| l.starts_with("EXPOSE "))
        .expect("EXPOSE");
    assert!(
        expose.contains("15443/udp") && expose.contains("15000/tcp"),
        "{expose}"
    );
    let entry = lines
        .iter()
        .find(|l| l.starts_with("ENTRYPOINT "))
        .expect("ENTRYPOINT");
    assert!(entry.contains("\"gateway\", \"run\""), "{entry}");
    let cmd = lines.iter().find(|l| l.starts_with("CMD ")).expect("CMD");
    let deploy = std::fs::read_to_string(repo().join("deploy/base/daemonset.yaml")).unwrap();
    let config = cmd.split('"').nth(3).unwrap();
    assert!(
        deploy.contains(config),
        "the image's default config path {config} is where the DaemonSet mounts it"
    );
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    assert!(
        ignore.lines().any(|l| l.trim() == "target/"),
        "the build context leaves target/ out"
    );
}
