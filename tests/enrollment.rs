//! Joining a mesh with a token, automatic renewal and revocation, with real
//! `strait ca serve`, `strait gateway join` and `strait gateway run`
//! processes (and netsim between the gateways and the CA where the CA must
//! become unreachable).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::mesh::{CaProcess, GatewayProcess, GatewaySpec, echo_server, free_tcp, sum};
use support::{strait, strait_argv};

fn token(dir: &Path, args: &str) -> String {
    let run = strait(dir, &format!("token create --ca ca {args}")).ok();
    run.stdout.trim().to_owned()
}

fn join(dir: &Path, token: &str, extra: &[&str]) -> support::Run {
    let mut args = vec!["gateway", "join", "--token", token];
    args.extend_from_slice(extra);
    strait_argv(dir, &args)
}

/// One echo round trip of `len` bytes through an import.
fn echo_once(import: SocketAddr, len: usize) -> Result<(), String> {
    let mut s = TcpStream::connect(import).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    s.write_all(&data).map_err(|e| format!("write: {e}"))?;
    s.shutdown(std::net::Shutdown::Write).ok();
    let mut back = Vec::new();
    s.read_to_end(&mut back).map_err(|e| format!("read: {e}"))?;
    if back == data {
        Ok(())
    } else {
        Err(format!("{} bytes back of {len}", back.len()))
    }
}

fn events(gw: &GatewayProcess, kind: &str) -> Vec<String> {
    gw.status()
        .and_then(|s| s["events"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| e["detail"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// West imports `echo` from east.
fn west_east_specs(d: &Path, identity_lines: Vec<String>) -> (GatewaySpec, GatewaySpec) {
    let mut west = GatewaySpec::new("gw-w", "eu-west", d.join("west"));
    let mut east = GatewaySpec::new("gw-e", "us-east", d.join("east"));
    east.exports.push(("echo".into(), echo_server(), vec![]));
    west.imports.push(("echo".into(), free_tcp()));
    west.peers.push(("us-east".into(), east.quic));
    west.identity_lines = identity_lines.clone();
    east.identity_lines = identity_lines;
    (west, east)
}

#[test]
fn join_flow_end_to_end_and_bad_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    strait(d, "ca init --trust-domain example.org --dir ca").ok();
    let ca = CaProcess::start(d, "ca", "1h");

    let west_token = token(d, "--region eu-west --name gw-* --uses 1");
    let east_token = token(d, "--region us-east --uses 1");
    let out = join(d, &west_token, &["--out", "west", "--name", "gw-w"]).ok();
    assert!(
        out.stdout
            .contains("joined as spiffe://example.org/region/eu-west/gateway/gw-w"),
        "{out:?}"
    );
    join(d, &east_token, &["--out", "east", "--name", "gw-e"]).ok();
    let key_mode = std::fs::metadata(d.join("west/key.pem")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(key_mode.permissions().mode() & 0o777, 0o600);

    // The tokens are spent: a second gateway cannot use them.
    let err = join(d, &west_token, &["--out", "w2", "--name", "gw-2"]).failed();
    assert!(err.contains("is used up (1 of 1 uses)"), "{err}");
    assert!(!d.join("w2").exists(), "nothing written on a refusal");
    // Expired.
    let short = token(d, "--region eu-west --ttl 1s");
    std::thread::sleep(Duration::from_millis(2100));
    let err = join(d, &short, &["--out", "w3", "--name", "gw-3"]).failed();
    assert!(err.contains("expired at"), "{err}");
    // Wrong region, and a name outside the pattern.
    let multi = token(d, "--region eu-west --name gw-* --uses 5");
    let err = join(
        d,
        &multi,
        &["--out", "w4", "--name", "gw-4", "--region", "us-east"],
    )
    .failed();
    assert!(err.contains("is for region eu-west, not us-east"), "{err}");
    let err = join(d, &multi, &["--out", "w5", "--name", "db-1"]).failed();
    assert!(
        err.contains("allows gateway names matching \"gw-*\", not \"db-1\""),
        "{err}"
    );
    // A token pinning another CA's root: the handshake fails on the joining
    // side, before the secret is sent, so the CA never sees the token.
    strait(d, "ca init --trust-domain example.org --dir other").ok();
    let addr = ca.addr.to_string();
    let foreign = strait(
        d,
        &format!("token create --ca other --region eu-west --ca-address {addr}"),
    )
    .ok()
    .stdout;
    let err = join(d, foreign.trim(), &["--out", "w6", "--name", "gw-6"]).failed();
    assert!(
        err.contains("did not present the root pinned by the token"),
        "{err}"
    );
    let foreign_id = strait(d, "token list --ca other").ok().stdout;
    let foreign_id = foreign_id
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert!(!ca.log_text().contains(foreign_id), "{}", ca.log_text());
    // Garbage.
    let err = join(d, "hello", &["--out", "w7", "--name", "gw-7"]).failed();
    assert!(err.contains("malformed join token"), "{err}");
    // A restarted pod keeps its identity without spending a use.
    let again = join(
        d,
        &west_token,
        &["--out", "west", "--name", "gw-w", "--if-missing"],
    )
    .ok();
    assert!(again.stdout.contains("not joining again"), "{again:?}");
    let list = strait(d, "token list --ca ca").ok().stdout;
    assert!(list.contains("0 of 1"), "{list}");

    // The joined identities carry a tunnel; west's config leaves its name
    // to the certificate, as a DaemonSet's shared config does.
    let (mut west, east) = west_east_specs(d, vec![format!("ca_service = \"{addr}\"")]);
    west.name_from_certificate = true;
    let import = west.imports[0].1;
    let _e = GatewayProcess::start(d, &east);
    let w = GatewayProcess::start(d, &west);
    w.wait_for_service("echo");
    echo_once(import, 100_000).unwrap();
    let check = strait(d, "gateway check --config gw-w.toml").ok().stdout;
    assert!(
        check.contains(&format!("renewal  through the CA service at {addr}")),
        "{check}"
    );
    assert!(check.contains("gateway  gw-w in eu-west"), "{check}");
    assert!(
        !std::fs::read_to_string(&w.config)
            .unwrap()
            .contains("name =")
    );

    // Pointing a running gateway at another CA service needs a restart: the
    // reload is refused and says so, and the tunnel stays.
    let text = std::fs::read_to_string(&w.config).unwrap();
    std::fs::write(&w.config, text.replace(&addr, "127.0.0.1:9")).unwrap();
    w.signal_hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !w
        .log_text()
        .contains("identity.ca_service cannot change while running")
    {
        assert!(Instant::now() < deadline, "{}", w.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    echo_once(import, 1_000).unwrap();
}

/// Opens an echo connection every 50 ms and keeps one long-lived stream
/// exchanging a message every 250 ms, until `stop`; counts failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(import: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let short = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match echo_once(import, 2_000) {
                    Ok(()) => {
                        o.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => f.lock().unwrap().push(format!("short stream: {e}")),
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let long = std::thread::spawn(move || {
            let mut conn = TcpStream::connect(import).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut n: u32 = 0;
            while !s.load(Ordering::SeqCst) {
                n += 1;
                let msg = n.to_be_bytes();
                let mut back = [0u8; 4];
                if let Err(e) = conn
                    .write_all(&msg)
                    .and_then(|()| conn.read_exact(&mut back))
                {
                    f.lock()
                        .unwrap()
                        .push(format!("long stream, message {n}: {e}"));
                    return;
                }
                if back != msg {
                    f.lock()
                        .unwrap()
                        .push(format!("long stream, message {n} garbled"));
                    return;
                }
                o.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        Load {
            stop,
            ok,
            failed,
            threads: vec![short, long],
        }
    }

    fn failures(&self) -> Vec<String> {
        self.failed.lock().unwrap().clone()
    }

    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        let failed = self.failed.lock().unwrap().clone();
        (self.ok.load(Ordering::SeqCst), failed)
    }
}

/// A join that could not write its identity must not spend a use: the
/// output directory is checked before the CA is asked.
#[test]
fn a_join_that_cannot_write_spends_no_token_use() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    strait(d, "ca init --trust-domain example.org --dir ca").ok();
    let _ca = CaProcess::start(d, "ca", "1h");
    let two = token(d, "--region eu-west --uses 2");
    std::fs::write(d.join("a-file"), "").unwrap();
    for out in ["/proc/nope", "a-file/west"] {
        let err = join(d, &two, &["--out", out, "--name", "gw-w"]).failed();
        assert!(
            err.contains(&format!("cannot write the identity into {out}")),
            "{err}"
        );
    }
    let list = strait(d, "token list --ca ca").ok().stdout;
    assert!(list.contains("2 of 2"), "{list}");
    join(d, &two, &["--out", "west/identity", "--name", "gw-w"]).ok();
    let list = strait(d, "token list --ca ca").ok().stdout;
    assert!(list.contains("1 of 2"), "{list}");
}

/// A CA service nobody answers (a mistyped address) is reported: WARN,
/// a counter by result and an event, not only a debug line.
#[test]
fn failed_bundle_refreshes_are_logged_counted_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = support::mesh::TestCa::new(d, "example.org");
    ca.gateway("eu-west", "gw-w", &d.join("west"));
    let nobody = support::mesh::free_udp();
    let mut west = GatewaySpec::new("gw-w", "eu-west", d.join("west"));
    west.identity_lines = vec![
        format!("ca_service = \"{nobody}\""),
        "refresh = \"1s\"".into(),
    ];
    let w = GatewayProcess::start(d, &west);
    let deadline = Instant::now() + Duration::from_secs(60);
    while events(&w, "bundle_refresh_failed").is_empty() {
        assert!(Instant::now() < deadline, "{}", w.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = w.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("bundle and deny list refresh failed")),
        "{log}"
    );
    let m = w.scrape();
    assert!(
        sum(&m, "strait_bundle_refreshes_total", &["result=\"error\""]) >= 1.0,
        "{m:?}"
    );
}

#[test]
fn thirty_second_certificates_renew_under_load_and_outlast_a_ca_partition_until_expiry() {
    let rt = support::relay_runtime();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    strait(d, "ca init --trust-domain example.org --dir ca").ok();
    let ca = CaProcess::start(d, "ca", "30s");
    // The gateways reach the CA through netsim, one relay per region.
    let regions = ["eu-west", "us-east", "ca"].map(String::from);
    let net = Arc::new(strait_netsim::Network::new(&regions, 7, |_, _| {
        strait_netsim::LinkConfig {
            latency: Duration::from_millis(5),
            ..Default::default()
        }
    }));
    let relay = |region: &str| {
        rt.block_on(strait_netsim::UdpRelay::bind(
            "127.0.0.1:0".parse().unwrap(),
            ca.addr,
            net.link(region, "ca").unwrap(),
            net.link("ca", region).unwrap(),
        ))
        .unwrap()
    };
    let (west_relay, east_relay) = (relay("eu-west"), relay("us-east"));
    let t = token(d, "--region eu-west --uses 1");
    join(d, &t, &["--out", "west", "--name", "gw-w"]).ok();
    let t = token(d, "--region us-east --uses 1");
    join(d, &t, &["--out", "east", "--name", "gw-e"]).ok();
    let (mut west, mut east) = west_east_specs(d, vec!["refresh = \"2s\"".into()]);
    west.identity_lines
        .push(format!("ca_service = \"{}\"", west_relay.local_addr()));
    east.identity_lines
        .push(format!("ca_service = \"{}\"", east_relay.local_addr()));
    let import = west.imports[0].1;
    let e = GatewayProcess::start(d, &east);
    let w = GatewayProcess::start(d, &west);
    w.wait_for_service("echo");

    // Two minutes of load on certificates that live 30 s.
    let load = Load::start(import);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_secs(1));
        let failures = load.failures();
        assert!(
            failures.is_empty(),
            "streams failed during renewals: {failures:?}\nwest:\n{}",
            w.log_text()
        );
    }
    let renewed = |gw: &GatewayProcess| {
        sum(
            &gw.scrape(),
            "strait_certificate_renewals_total",
            &["result=\"ok\""],
        )
    };
    let (rw, re) = (renewed(&w), renewed(&e));
    eprintln!(
        "two minutes: {} exchanges, west renewed {rw} times, east {re} times",
        load.ok.load(Ordering::SeqCst)
    );
    // At 2/3 of 30 s: about six each; far more would mean renewing in a
    // loop.
    assert!(
        (4.0..=10.0).contains(&rw) && (4.0..=10.0).contains(&re),
        "renewals: west {rw}, east {re}\nwest:\n{}",
        w.log_text()
    );
    assert_eq!(
        sum(&w.scrape(), "strait_identity_reloads_failed_total", &[]),
        0.0
    );
    assert!(!events(&w, "certificate_renewed").is_empty());
    assert!(
        events(&w, "certificate_expired").is_empty(),
        "{:?}",
        events(&w, "certificate_expired")
    );

    // The CA goes away: renewals fail, the gateways serve on until the
    // certificate expires and then say so.
    net.isolate("ca").unwrap();
    let cut = Instant::now();
    let expired = |gw: &GatewayProcess| !events(gw, "certificate_expired").is_empty();
    while !(expired(&w) && expired(&e)) {
        assert!(
            cut.elapsed() < Duration::from_secs(45),
            "no expiry reported\nwest:\n{}",
            w.log_text()
        );
        let failures = load.failures();
        assert!(
            failures.is_empty(),
            "streams failed with the CA unreachable: {failures:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "certificates expired {:?} after the CA was cut off: {:?}",
        cut.elapsed(),
        events(&w, "certificate_expired")
    );
    // Open tunnels keep going past expiry.
    std::thread::sleep(Duration::from_secs(2));
    let (ok, failures) = load.finish();
    assert!(failures.is_empty(), "{failures:?}");
    echo_once(import, 10_000).unwrap();
    let m = w.scrape();
    assert!(
        sum(
            &m,
            "strait_certificate_renewals_total",
            &["result=\"error\""]
        ) >= 1.0,
        "{m:?}"
    );
    assert!(
        sum(&m, "strait_certificate_remaining_seconds", &[]) < 0.0,
        "{m:?}"
    );
    assert!(!events(&w, "certificate_renewal_failed").is_empty());
    let log = w.log_text();
    assert!(log.contains("certificate renewal failed, serving on the current certificate"));
    assert!(log.contains("certificate expired"));
    eprintln!("{ok} exchanges in all, none failed");
}

#[test]
fn a_revoked_gateway_is_cut_off_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    strait(d, "ca init --trust-domain example.org --dir ca").ok();
    let ca = CaProcess::start(d, "ca", "1h");
    let t = token(d, "--region eu-west --uses 1");
    join(d, &t, &["--out", "west", "--name", "gw-w"]).ok();
    let t = token(d, "--region us-east --uses 1");
    join(d, &t, &["--out", "east", "--name", "gw-e"]).ok();
    let (west, east) = west_east_specs(
        d,
        vec![
            format!("ca_service = \"{}\"", ca.addr),
            "refresh = \"500ms\"".into(),
        ],
    );
    let import = west.imports[0].1;
    let e = GatewayProcess::start(d, &east);
    let w = GatewayProcess::start(d, &west);
    w.wait_for_service("echo");
    let mut long = TcpStream::connect(import).unwrap();
    long.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    long.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    long.read_exact(&mut back).unwrap();

    let revoked_at = Instant::now();
    let out = strait(
        d,
        "ca revoke --ca ca --id spiffe://example.org/region/us-east/gateway/gw-e",
    )
    .ok();
    assert!(
        out.stdout
            .contains("revoked: id spiffe://example.org/region/us-east/gateway/gw-e")
    );
    w.wait_for("the revoked peer cut off", |s| {
        s["peers"].as_array().is_some_and(|p| p.is_empty())
    });
    eprintln!(
        "tunnel cut {:?} after `strait ca revoke`",
        revoked_at.elapsed()
    );
    // The stream through the revoked peer ends.
    let mut rest = Vec::new();
    assert!(
        long.write_all(b"more").is_err()
            || long.read_to_end(&mut rest).map(|n| n == 0).unwrap_or(true),
        "a stream through a revoked peer must not go on"
    );
    // Log figures: from the deny list reaching west to the cut.
    let log = w.log_text();
    let when = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .map(|l| l.split_whitespace().next().unwrap().to_owned())
            .unwrap_or_else(|| panic!("no {needle:?} in west's log:\n{log}"))
    };
    eprintln!(
        "deny list fetched {}, loaded {}, tunnel cut {}",
        when("deny list changed at the CA"),
        when("deny list loaded"),
        when("tunnel cut: the deny list names the peer's certificate")
    );
    assert_eq!(
        sum(
            &w.scrape(),
            "strait_peers_revoked_total",
            &["peer=\"gw-e\""]
        ),
        1.0
    );
    assert_eq!(events(&w, "peer_revoked").len(), 1);

    // West keeps redialing east and refuses it every time; the CA refuses
    // east's own requests.
    let deadline = Instant::now() + Duration::from_secs(20);
    while w.log_text().matches("is revoked").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "no refusals logged:\n{}",
            w.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(w.peer_count(), 0);
    let err = echo_once(import, 10);
    assert!(err.is_err(), "no peer may serve echo any more");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ca.log_text().contains("gw-e is revoked") {
        assert!(
            Instant::now() < deadline,
            "CA log:\n{}\neast:\n{}",
            ca.log_text(),
            e.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
