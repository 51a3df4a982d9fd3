//! A gateway killed with SIGKILL and restarted on the same ports: its peer
//! takes the new connection at once instead of holding on to the dead one
//! until its idle timeout (5 s in these tests), streams in flight on the
//! dead tunnel are reset promptly, and nothing flaps afterwards.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::mesh::{GatewayProcess, GatewaySpec, echo_server, free_tcp, west_east};

/// One request through the import: true when echoed back.
fn echo_once(import: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(import) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    if s.write_all(b"ping").is_err() {
        return false;
    }
    let mut out = [0u8; 4];
    s.read_exact(&mut out).is_ok() && &out == b"ping"
}

/// A client connection through the import with a round trip done, left
/// open (reads time out after 20 s).
fn open_stream(import: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(import).unwrap();
    s.write_all(b"hold").unwrap();
    let mut four = [0u8; 4];
    s.read_exact(&mut four).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Requests every 200 ms until one is served; returns how long that took.
fn served_within(import: SocketAddr, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if echo_once(import) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// West imports `echo`, which east exports; east dials west.
fn pair(dir: &std::path::Path) -> (GatewaySpec, GatewaySpec, SocketAddr) {
    let (_ca, mut west, mut east) = west_east(dir);
    east.exports.push(("echo".into(), echo_server(), vec![]));
    let import = free_tcp();
    west.imports.push(("echo".into(), import));
    (west, east, import)
}

#[test]
fn a_restarted_exporting_gateway_is_served_again_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (west, east, import) = pair(dir.path());
    let west_gw = GatewayProcess::start(dir.path(), &west);
    let east_gw = GatewayProcess::start(dir.path(), &east);
    west_gw.wait_for_service("echo");
    assert!(echo_once(import));

    // A transfer in flight on the tunnel that is about to die.
    let mut inflight = open_stream(import);

    let killed_at = Instant::now();
    drop(east_gw);
    let reset = std::thread::spawn(move || {
        let mut buf = [0u8; 16];
        let _ = inflight.read(&mut buf);
        killed_at.elapsed()
    });
    std::thread::sleep(Duration::from_millis(500));
    let restarted_at = Instant::now();
    let _east_gw = GatewayProcess::start(dir.path(), &east);
    let served = served_within(import, Duration::from_secs(15))
        .expect("never served again after the restart");
    let reset_after = reset.join().unwrap();
    eprintln!(
        "served again {served:?} after the restart ({:?} after the kill); the stream in flight ended {reset_after:?} after the kill",
        restarted_at.duration_since(killed_at) + served
    );
    // New streams go to the restarted gateway at once.
    assert!(
        served < Duration::from_secs(3),
        "served only {served:?} after the restart:\n{}",
        west_gw.log_text()
    );
    // The old tunnel keeps its stream, as it would through a cut, until the
    // QUIC idle timeout (5 s in tests) says the peer is gone.
    assert!(
        reset_after < Duration::from_secs(9),
        "the stream on the dead tunnel hung for {reset_after:?}"
    );
    for _ in 0..20 {
        assert!(echo_once(import), "a request failed after recovery");
    }
}

#[test]
fn a_restarted_importing_gateway_is_served_again_without_flapping() {
    let dir = tempfile::tempdir().unwrap();
    let (west, east, import) = pair(dir.path());
    let west_gw = GatewayProcess::start(dir.path(), &west);
    let _east_gw = GatewayProcess::start(dir.path(), &east);
    west_gw.wait_for_service("echo");
    assert!(echo_once(import));
    drop(west_gw);
    std::thread::sleep(Duration::from_millis(500));
    let west_gw = GatewayProcess::start(dir.path(), &west);
    let served = served_within(import, Duration::from_secs(15)).unwrap_or_else(|| {
        panic!(
            "never served again after the restart:\n{}",
            west_gw.log_text()
        )
    });
    eprintln!("served again {served:?} after the importing gateway restarted");
    assert!(served < Duration::from_secs(3), "{}", west_gw.log_text());
    let failed = (0..25)
        .filter(|_| {
            std::thread::sleep(Duration::from_millis(200));
            !echo_once(import)
        })
        .count();
    assert_eq!(
        failed,
        0,
        "requests failed after recovery:\n{}",
        west_gw.log_text()
    );
}

#[test]
fn streams_on_a_silent_tunnel_are_kept_until_the_idle_timeout_then_reset() {
    // No restart: nothing answers the old connection (no stateless reset),
    // so a dead peer looks like a cut. The tunnel is found Down at once
    // (new streams would go elsewhere) but its streams are kept, since a
    // cut may heal, until the QUIC idle timeout (5 s in tests); then the
    // import resets its client.
    let dir = tempfile::tempdir().unwrap();
    let (west, east, import) = pair(dir.path());
    let west_gw = GatewayProcess::start(dir.path(), &west);
    let east_gw = GatewayProcess::start(dir.path(), &east);
    west_gw.wait_for_service("echo");
    let mut inflight = open_stream(import);
    let killed_at = Instant::now();
    drop(east_gw);
    let mut buf = [0u8; 16];
    let _ = inflight.read(&mut buf);
    let ended = killed_at.elapsed();
    eprintln!("the stream on the dead tunnel ended {ended:?} after the kill");
    assert!(
        ended > Duration::from_secs(2) && ended < Duration::from_secs(9),
        "the stream ended {ended:?} after the kill, not at the 5 s idle timeout:\n{}",
        west_gw.log_text()
    );
    // Closed as dead by the plane, or lost by QUIC's own idle timeout:
    // either says so. The log line can trail the reset by a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = west_gw.log_text();
        if log.contains("reason=dead")
            || log.contains("reason=\"dead\"")
            || log.contains("connection lost")
        {
            break;
        }
        assert!(Instant::now() < deadline, "{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
