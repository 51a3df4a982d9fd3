//! A full CA rotation under load, with zero failed streams: the bundle
//! gains the new root, gateways move to certificates of the new CA one by
//! one, the old root is removed, and a gateway of the new CA alone can
//! still join.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::mesh::{GatewayProcess, GatewaySpec, TestCa, echo_server, free_tcp};
use support::strait;

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn reloads(gw: &GatewayProcess) -> usize {
    gw.log_text().matches("identity reloaded").count()
}

/// Issues `name` from the CA in `ca` into a scratch directory, then moves
/// key and certificate into place (key first; a reload between the two
/// is refused and retried at the next poll) and writes `bundle`.
fn move_to(ca: &Path, region: &str, name: &str, dir: &Path, bundle: &str) {
    let scratch = dir.join(format!("{name}-next"));
    let _ = std::fs::remove_dir_all(&scratch);
    strait(
        dir,
        &format!(
            "cert issue --ca {} --gateway --region {region} --name {name} --out {}",
            ca.display(),
            scratch.display()
        ),
    )
    .ok();
    let live = dir.join(name);
    std::fs::write(live.join("bundle.pem"), bundle).unwrap();
    std::fs::copy(scratch.join("key.pem"), live.join("key.pem")).unwrap();
    std::fs::copy(scratch.join("cert.pem"), live.join("cert.pem")).unwrap();
}

#[test]
fn a_ca_rotation_under_load_fails_no_stream() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old = TestCa::new(d, "example.org");
    old.gateway("eu-west", "gw-w", &d.join("gw-w"));
    old.gateway("us-east", "gw-e", &d.join("gw-e"));
    let mut west = GatewaySpec::new("gw-w", "eu-west", d.join("gw-w"));
    let mut east = GatewaySpec::new("gw-e", "us-east", d.join("gw-e"));
    east.peers.push(("eu-west".into(), west.quic));
    west.exports.push(("echo".into(), echo_server(), vec![]));
    let import: SocketAddr = free_tcp();
    east.imports.push(("echo".into(), import));
    let w = GatewayProcess::start(d, &west);
    let e = GatewayProcess::start(d, &east);
    e.wait_for_service("echo");

    // Load for the whole rotation: new connections, one request each.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let served = (|| -> std::io::Result<bool> {
                    let mut s = TcpStream::connect(import)?;
                    s.set_read_timeout(Some(Duration::from_secs(5)))?;
                    s.write_all(b"ping")?;
                    let mut b = [0u8; 4];
                    s.read_exact(&mut b)?;
                    Ok(&b == b"ping")
                })()
                .unwrap_or(false);
                if served { &ok } else { &failed }.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // 1. A new CA; every bundle trusts both roots.
    let new_ca = d.join("ca-new");
    strait(
        d,
        &format!(
            "ca init --trust-domain example.org --dir {}",
            new_ca.display()
        ),
    )
    .ok();
    let old_root = std::fs::read_to_string(old.dir.join("bundle.pem")).unwrap();
    let new_root = std::fs::read_to_string(new_ca.join("bundle.pem")).unwrap();
    let both = format!("{old_root}{new_root}");
    for (gw, name) in [(&w, "gw-w"), (&e, "gw-e")] {
        let before = reloads(gw);
        std::fs::write(d.join(name).join("bundle.pem"), &both).unwrap();
        wait_for("bundle with both roots loaded", || reloads(gw) > before);
    }
    // 2. Gateways move to certificates of the new CA, one by one.
    for (gw, region, name) in [(&w, "eu-west", "gw-w"), (&e, "us-east", "gw-e")] {
        let before = reloads(gw);
        move_to(&new_ca, region, name, d, &both);
        wait_for("new certificate loaded", || reloads(gw) > before);
    }
    // 3. The old root goes.
    for (gw, name) in [(&w, "gw-w"), (&e, "gw-e")] {
        let before = reloads(gw);
        std::fs::write(d.join(name).join("bundle.pem"), &new_root).unwrap();
        wait_for("bundle without the old root loaded", || {
            reloads(gw) > before
        });
    }
    // 4. New handshakes work with the new CA alone: a gateway issued by it
    // joins and reaches the service.
    let mut x = GatewaySpec::new("gw-x", "ap-south", d.join("gw-x"));
    strait(
        d,
        &format!(
            "cert issue --ca {} --gateway --region ap-south --name gw-x --out {}",
            new_ca.display(),
            d.join("gw-x").display()
        ),
    )
    .ok();
    x.peers.push(("eu-west".into(), west.quic));
    let x_import = free_tcp();
    x.imports.push(("echo".into(), x_import));
    let x = GatewayProcess::start(d, &x);
    x.wait_for_service("echo");

    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    assert_eq!(
        failed, 0,
        "{failed} streams failed during the rotation ({ok} served)"
    );
    assert!(ok > 20, "only {ok} streams ran during the rotation");
    let events = w.log_text() + &e.log_text();
    eprintln!(
        "rotation: {ok} streams, 0 failed; refused reloads on the way: {}",
        events.matches("do not load").count()
    );
}
