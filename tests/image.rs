//! The image, built here and run as the DaemonSet runs it: user 65532, a
//! read-only root filesystem, no capabilities, configuration and identity
//! from mounted volumes, the image's own entrypoint and default config
//! path. A tunnel between the containerised gateway and one on the host
//! carries a stream byte-exact; `/healthz` and `/readyz` answer from the
//! container; SIGTERM drains it and it exits 0 within the grace period.
//! Skipped with a message where podman (as root) is missing.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::mesh::{
    GatewayProcess, GatewaySpec, TestCa, echo_server, free_tcp, free_udp, http_get,
};
use support::podman::{Container, Podman, hand_to_nonroot};

#[test]
fn the_image_runs_a_gateway_as_the_daemonset_does() {
    let Some(podman) = Podman::find() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = TestCa::new(d, "example.org");
    ca.gateway("eu-west", "gw-c", &d.join("identity"));
    ca.gateway("us-east", "gw-h", &d.join("gw-h"));
    let (quic, admin, target) = (free_udp(), free_tcp(), echo_server());
    let config_dir = d.join("config");
    std::fs::create_dir(&config_dir).unwrap();
    std::fs::write(
        config_dir.join("gateway.toml"),
        format!(
            "[gateway]\nname = \"gw-c\"\nregion = \"eu-west\"\nlisten = \"{quic}\"\n\
             admin = \"{admin}\"\ndrain_grace = \"10s\"\n\n\
             [identity]\ncert = \"/var/lib/strait/identity/cert.pem\"\n\
             key = \"/var/lib/strait/identity/key.pem\"\n\
             bundle = \"/var/lib/strait/identity/bundle.pem\"\n\n\
             [[export]]\nservice = \"echo\"\ntarget = \"{target}\"\n"
        ),
    )
    .unwrap();
    hand_to_nonroot(&config_dir);
    hand_to_nonroot(&d.join("identity"));

    let image = podman.build_image(&format!("localhost/strait:test-{}", std::process::id()));
    let name = format!("strait-test-{}", std::process::id());
    let config_mount = format!("{}:/etc/strait/config:ro", config_dir.display());
    let identity_mount = format!(
        "{}:/var/lib/strait/identity:ro",
        d.join("identity").display()
    );
    podman
        .run(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network=host",
            "--user",
            "65532:65532",
            "--read-only",
            "--cap-drop=ALL",
            "--security-opt",
            "no-new-privileges",
            "-e",
            "RUST_LOG=info",
            "-v",
            &config_mount,
            "-v",
            &identity_mount,
            &image.tag,
        ])
        .ok();
    let container = Container {
        podman: &podman,
        name: name.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(admin, "/readyz").is_none() {
        assert!(
            Instant::now() < deadline,
            "the container never became ready:\n{}",
            container.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(http_get(admin, "/healthz").as_deref(), Some("ok\n"));
    let inside = podman
        .run(&[
            "inspect",
            "--format",
            "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}}",
            &name,
        ])
        .ok();
    assert_eq!(inside.stdout.trim(), "65532:65532 true");

    let mut host = GatewaySpec::new("gw-h", "us-east", d.join("gw-h"));
    host.peers.push(("eu-west".into(), quic));
    let import = free_tcp();
    host.imports.push(("echo".into(), import));
    let host = GatewayProcess::start(d, &host);
    host.wait_for_service("echo");

    // 4 MiB there and back, byte-exact.
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut s = TcpStream::connect(import).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = s.try_clone().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || w.write_all(&sent).unwrap());
    let mut back = vec![0u8; data.len()];
    s.read_exact(&mut back).unwrap();
    writer.join().unwrap();
    assert!(back == data, "the echo came back changed");

    // SIGTERM while the stream is open: not ready, the stream still
    // carries bytes, and once it closes the container exits 0.
    let term = Instant::now();
    podman.run(&["kill", "--signal", "TERM", &name]).ok();
    let deadline = Instant::now() + Duration::from_secs(5);
    while http_get(admin, "/readyz").is_some() {
        assert!(
            Instant::now() < deadline,
            "/readyz stayed ready while draining"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    s.write_all(b"still here").unwrap();
    let mut got = [0u8; 10];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"still here");
    drop(s);
    let waited = podman.run(&["wait", &name]).ok();
    let took = term.elapsed();
    assert_eq!(
        waited.stdout.trim(),
        "0",
        "exit code:\n{}",
        container.logs()
    );
    assert!(
        took < Duration::from_secs(10),
        "the drain outlasted drain_grace: {took:?}\n{}",
        container.logs()
    );
    let logs = container.logs();
    assert!(logs.contains("drain"), "{logs}");
    eprintln!("exited 0 {took:?} after SIGTERM");
}
