//! Configuration reload of a running gateway (SIGHUP or a changed file):
//! an import added while a 100 MiB transfer runs on another (byte-exact),
//! an export removed and its peers told, and a broken file that changes
//! nothing.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::mesh::{GatewayProcess, echo_server, free_tcp, west_east};

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn echo_once(addr: SocketAddr) -> bool {
    (|| -> std::io::Result<bool> {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"ping")?;
        let mut b = [0u8; 4];
        s.read_exact(&mut b)?;
        Ok(&b == b"ping")
    })()
    .unwrap_or(false)
}

fn fill(buf: &mut [u8], offset: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = ((offset + i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8;
    }
}

#[test]
fn reloads_add_and_remove_without_disturbing_running_streams() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_ca, mut west, mut east) = west_east(d);
    west.exports.push(("echo".into(), echo_server(), vec![]));
    west.exports.push(("extra".into(), echo_server(), vec![]));
    let import = free_tcp();
    east.imports.push(("echo".into(), import));
    let w = GatewayProcess::start(d, &west);
    let e = GatewayProcess::start(d, &east);
    e.wait_for_service("echo");

    // 100 MiB each way through the echo import, hashed at both ends.
    let transfer = std::thread::spawn(move || {
        const N: usize = 100 << 20;
        let s = TcpStream::connect(import).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut w = s.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let mut hash = Sha256::new();
            let mut buf = vec![0u8; 256 * 1024];
            let mut sent = 0;
            while sent < N {
                let len = buf.len().min(N - sent);
                fill(&mut buf[..len], sent as u64);
                hash.update(&buf[..len]);
                w.write_all(&buf[..len]).unwrap();
                sent += len;
            }
            w.shutdown(std::net::Shutdown::Write).unwrap();
            hash.finalize()
        });
        let mut r = s;
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0;
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            got += n;
        }
        (got, hash.finalize() == writer.join().unwrap())
    });

    // Meanwhile: a new import, by rewriting the file and SIGHUP.
    let added = free_tcp();
    east.imports.push(("extra".into(), added));
    std::fs::write(&e.config, east.toml()).unwrap();
    e.signal_hup();
    wait_for("the added import serves", || echo_once(added));
    let (got, exact) = transfer.join().unwrap();
    assert_eq!(got, 100 << 20);
    assert!(exact, "the transfer was not byte-exact across the reload");
    assert!(echo_once(import), "the first import stopped serving");

    // A broken file changes nothing.
    let good = east.toml();
    std::fs::write(&e.config, format!("{good}\n[surprise]\nkey = 1\n")).unwrap();
    e.signal_hup();
    wait_for("the refusal is logged", || {
        e.log_text().contains("configuration not reloaded")
    });
    assert!(
        echo_once(import) && echo_once(added),
        "a broken reload changed something"
    );
    let status = e.status().unwrap();
    assert_eq!(status["imports"].as_array().unwrap().len(), 2, "{status}");

    // An export removed on west: east hears of it (UPDATE) and stops
    // sending streams there; the remaining export keeps serving. This
    // reload comes from the file watch alone, without a signal.
    west.exports.retain(|(s, ..)| s != "extra");
    std::fs::write(&w.config, west.toml()).unwrap();
    wait_for("east hears that extra is gone", || {
        e.status().is_some_and(|s| {
            s["peers"][0]["services"]
                .as_array()
                .is_some_and(|v| v.iter().all(|x| x["name"] != "extra"))
        })
    });
    assert!(
        !echo_once(added),
        "a stream reached an export that was removed"
    );
    assert!(echo_once(import));
    let kinds = e.status().unwrap()["events"].to_string();
    assert!(
        kinds.contains("config_reloaded") && kinds.contains("config_reload_failed"),
        "{kinds}"
    );
}
