//! A real-address lab: every gateway in its own network namespace with its
//! own address on a bridge, all listening on 0.0.0.0:15443 as in
//! production, regions cut by nftables drops in the kernel (no netsim in
//! the path). A 100 MiB transfer crosses it byte-exact (SHA-256 at both
//! ends), and the failover drill runs across a kernel-level cut: eu-west's
//! clients move from us-east to ap-south when us-east is cut off, and back
//! once the cut is lifted and the hold-down has passed.
//!
//! Root only (network namespaces, veth, a bridge, nftables); elsewhere it
//! says why it skips. The test's own process (clients and targets) sits on
//! the bridge too, at 10.X.0.1.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::mesh::{TestCa, http_get};

/// `cmd args`, panicking with its output when it fails.
fn sh(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Why the lab cannot run here, if it cannot.
fn missing() -> Option<String> {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
    });
    if !root {
        return Some("needs root (network namespaces, veth, a bridge, nftables)".into());
    }
    for tool in ["ip", "nft"] {
        if Command::new(tool).arg("-V").output().is_err() {
            return Some(format!(
                "{tool} not found (Debian packages iproute2, nftables)"
            ));
        }
    }
    None
}

/// The lab's namespaces and links; torn down when dropped.
struct Lab {
    /// Second octet of 10.X.0.0/24, from the process id.
    net: u8,
    tag: String,
    namespaces: Vec<String>,
    host_link: String,
}

impl Lab {
    fn new() -> Lab {
        // Tests of this file run at once in one process: each lab has its
        // own names and network.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = (std::process::id() % 10_000) * 10 + n % 10;
        let lab = Lab {
            net: 100 + (id % 150) as u8,
            tag: format!("sl{id}"),
            namespaces: Vec::new(),
            host_link: format!("sl{id}h"),
        };
        let sw = lab.switch();
        sh("ip", &["netns", "add", &sw]);
        sh("ip", &["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        sh("ip", &["-n", &sw, "link", "set", "br0", "up"]);
        // The test's own end on the bridge.
        sh(
            "ip",
            &[
                "link",
                "add",
                &lab.host_link,
                "type",
                "veth",
                "peer",
                "name",
                "h0",
                "netns",
                &sw,
            ],
        );
        sh(
            "ip",
            &["-n", &sw, "link", "set", "h0", "master", "br0", "up"],
        );
        sh(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", lab.addr(1)),
                "dev",
                &lab.host_link,
            ],
        );
        sh("ip", &["link", "set", &lab.host_link, "up"]);
        lab
    }

    fn switch(&self) -> String {
        format!("{}-sw", self.tag)
    }

    fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net, 0, host)
    }

    /// A namespace for a gateway at 10.X.0.`host` on the bridge.
    fn host(&mut self, name: &str, host: u8) -> String {
        let ns = format!("{}-{name}", self.tag);
        let sw = self.switch();
        sh("ip", &["netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        let port = format!("p{host}");
        sh(
            "ip",
            &[
                "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ],
        );
        sh(
            "ip",
            &["-n", &sw, "link", "set", &port, "master", "br0", "up"],
        );
        sh(
            "ip",
            &[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", self.addr(host)),
                "dev",
                "eth0",
            ],
        );
        sh("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
        sh("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// Drops everything between the gateway in `ns` and `peer`, both ways,
    /// in that namespace's kernel (table `lab`).
    fn cut(&self, ns: &str, peer: Ipv4Addr) {
        drop_between(ns, "lab", peer, &[]);
    }

    fn heal(&self, ns: &str) {
        nft(ns, &["delete", "table", "inet", "lab"]);
    }

    /// Drops the UDP between the gateway in `ns` and `peer` (table
    /// `noudp`), as a firewall that passes only TCP does.
    fn block_udp(&self, ns: &str, peer: Ipv4Addr) {
        drop_between(ns, "noudp", peer, &["meta", "l4proto", "udp"]);
    }

    fn unblock_udp(&self, ns: &str) {
        nft(ns, &["delete", "table", "inet", "noudp"]);
    }
}

/// Drops packets matching `what` between namespace `ns` and `peer`, both
/// ways, in nftables table `table`.
fn drop_between(ns: &str, table: &str, peer: Ipv4Addr, what: &[&str]) {
    let p = peer.to_string();
    nft(ns, &["add", "table", "inet", table]);
    for (chain, hook, dir) in [("in", "input", "saddr"), ("out", "output", "daddr")] {
        let spec = format!("{{ type filter hook {hook} priority 0 ; }}");
        nft(ns, &["add", "chain", "inet", table, chain, &spec]);
        let mut rule = vec!["add", "rule", "inet", table, chain, "ip", dir, &p];
        rule.extend_from_slice(what);
        rule.push("drop");
        nft(ns, &rule);
    }
}

/// `nft ARGS` inside namespace `ns`.
fn nft(ns: &str, args: &[&str]) {
    let mut all = vec!["netns", "exec", ns, "nft"];
    all.extend_from_slice(args);
    sh("ip", &all);
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().chain([&self.switch()]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_link])
            .output();
    }
}

/// A gateway process inside a namespace; killed when dropped.
struct NsGateway {
    child: Child,
    admin: SocketAddr,
    log: std::path::PathBuf,
}

impl NsGateway {
    fn start(ns: &str, dir: &Path, name: &str, config: String, admin: SocketAddr) -> NsGateway {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(support::strait_bin())
            .args(["gateway", "run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        NsGateway { child, admin, log }
    }

    fn status(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&http_get(self.admin, "/status")?).ok()
    }

    fn wait_for(&self, what: &str, ok: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.status().is_some_and(|s| ok(&s)) {
            assert!(
                Instant::now() < deadline,
                "never reached: {what}\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NsGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A target on `ip` that answers one byte (`tag`) to every connection,
/// and one that reads to the end and answers the SHA-256 of what came.
fn tag_target(ip: Ipv4Addr, tag: u8, stop: Arc<AtomicBool>) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    std::thread::spawn(move || {
                        let mut b = [0u8; 1];
                        if s.read_exact(&mut b).is_ok() {
                            let _ = s.write_all(&[tag]);
                        }
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    addr
}

fn hash_target(ip: Ipv4Addr) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut h = Sha256::new();
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => h.update(&buf[..n]),
                        Err(_) => return,
                    }
                }
                let _ = s.write_all(&h.finalize());
            });
        }
    });
    addr
}

fn config(name: &str, region: &str, admin: SocketAddr, dir: &Path, extra: &str) -> String {
    let id = dir.join(name);
    format!(
        "[gateway]\nname = \"{name}\"\nregion = \"{region}\"\nlisten = \"0.0.0.0:15443\"\n\
         admin = \"{admin}\"\n\n[identity]\ncert = \"{id}/cert.pem\"\nkey = \"{id}/key.pem\"\n\
         bundle = \"{id}/bundle.pem\"\n\n[health]\ntarget_check = \"200ms\"\nhold_down = \"2s\"\n\n\
         [tunnel]\ndiscover = false\n{extra}",
        id = id.display()
    )
}

/// Three regions on the bridge: gw-a (eu-west, 10.X.0.11) imports `svc`
/// (us-east preferred, ap-south second, idempotent) and `bulk` (us-east);
/// gw-b (us-east, .12) and gw-c (ap-south, .13) export `svc`, whose targets
/// answer `B` and `C`; gw-b also exports `bulk`, whose target answers the
/// SHA-256 of what came.
struct ThreeRegions {
    gw_a: NsGateway,
    /// Kept running (and killed when dropped).
    _exporters: [NsGateway; 2],
    /// The namespaces of gw-a, gw-b and gw-c.
    ns: [String; 3],
    /// Their addresses.
    ip: [Ipv4Addr; 3],
    svc: SocketAddr,
    bulk_import: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Last: the namespaces outlive the gateways in them.
    lab: Lab,
}

impl ThreeRegions {
    /// Starts the lab and its gateways; `before` runs once the namespaces
    /// exist and before any gateway starts.
    fn start(d: &Path, before: impl FnOnce(&Lab, &[String; 3], &[Ipv4Addr; 3])) -> ThreeRegions {
        let ca = TestCa::new(d, "example.org");
        ca.gateways(
            d,
            &[
                ("eu-west", "gw-a"),
                ("us-east", "gw-b"),
                ("ap-south", "gw-c"),
            ],
        );
        let mut lab = Lab::new();
        let ns = [lab.host("a", 11), lab.host("b", 12), lab.host("c", 13)];
        let ip = [lab.addr(11), lab.addr(12), lab.addr(13)];
        let [a, b, c] = ip;
        before(&lab, &ns, &ip);
        let me = lab.addr(1);
        let stop = Arc::new(AtomicBool::new(false));
        let (b_target, c_target, bulk) = (
            tag_target(me, b'B', stop.clone()),
            tag_target(me, b'C', stop.clone()),
            hash_target(me),
        );
        let admin = |ip: Ipv4Addr| SocketAddr::new(IpAddr::V4(ip), 15000);
        let gw_b = NsGateway::start(
            &ns[1],
            d,
            "gw-b",
            config(
                "gw-b",
                "us-east",
                admin(b),
                d,
                &format!(
                    "\n[[export]]\nservice = \"svc\"\ntarget = \"{b_target}\"\n\n\
                     [[export]]\nservice = \"bulk\"\ntarget = \"{bulk}\"\n"
                ),
            ),
            admin(b),
        );
        let gw_c = NsGateway::start(
            &ns[2],
            d,
            "gw-c",
            config(
                "gw-c",
                "ap-south",
                admin(c),
                d,
                &format!("\n[[export]]\nservice = \"svc\"\ntarget = \"{c_target}\"\n"),
            ),
            admin(c),
        );
        let (svc, bulk_import) = (
            SocketAddr::new(IpAddr::V4(a), 8080),
            SocketAddr::new(IpAddr::V4(a), 8081),
        );
        let gw_a = NsGateway::start(
            &ns[0],
            d,
            "gw-a",
            config(
                "gw-a",
                "eu-west",
                // On every address: the host reaches it on the bridge, and
                // a drill inside the namespace on loopback.
                "0.0.0.0:15000".parse().unwrap(),
                d,
                &format!(
                    "\n[[peer]]\nregion = \"us-east\"\naddresses = [\"{b}:15443\"]\n\n\
                     [[peer]]\nregion = \"ap-south\"\naddresses = [\"{c}:15443\"]\n\n\
                     [[import]]\nservice = \"svc\"\nlisten = \"{svc}\"\nprefer = [\"us-east\", \"ap-south\"]\n\
                     idempotent = true\n\n\
                     [[import]]\nservice = \"bulk\"\nlisten = \"{bulk_import}\"\n"
                ),
            ),
            admin(a),
        );
        for g in [&gw_b, &gw_c] {
            g.wait_for("up", |s| s["ready"] == true);
        }
        ThreeRegions {
            gw_a,
            _exporters: [gw_b, gw_c],
            ns,
            ip,
            svc,
            bulk_import,
            stop,
            lab,
        }
    }

    /// Waits until gw-a has a working tunnel to `region` over `transport`
    /// ("quic" or "tcp").
    fn wait_for_tunnel(&self, region: &str, transport: &str) {
        self.gw_a
            .wait_for(&format!("a tunnel to {region} over {transport}"), |s| {
                s["peers"].as_array().is_some_and(|peers| {
                    peers.iter().any(|p| {
                        p["region"] == region
                            && p["state"] == "up"
                            && p["transport"]["kind"] == transport
                            && p["address"].as_str().is_some_and(|a| a.ends_with(":15443"))
                    })
                })
            });
    }

    /// One request to `svc`: which region answered.
    fn ask(&self) -> Option<u8> {
        let mut s = TcpStream::connect_timeout(&self.svc, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"?").ok()?;
        let mut tag = [0u8; 1];
        s.read_exact(&mut tag).ok()?;
        Some(tag[0])
    }

    /// 100 MiB eu-west -> us-east through `bulk`, checked by SHA-256 at
    /// the target; returns the rate in Mbit/s.
    fn send_100_mib(&self) -> f64 {
        let total = 100usize << 20;
        let mut s = TcpStream::connect(self.bulk_import).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let mut h = Sha256::new();
        let block: Vec<u8> = (0..1 << 20)
            .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let start = Instant::now();
        for i in 0..total / block.len() {
            let mut b = block.clone();
            b[0] = i as u8;
            h.update(&b);
            s.write_all(&b).unwrap();
        }
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut digest = Vec::new();
        s.read_to_end(&mut digest).unwrap();
        let took = start.elapsed();
        assert_eq!(digest, h.finalize().to_vec(), "the target saw other bytes");
        total as f64 * 8.0 / took.as_secs_f64() / 1e6
    }

    /// Cuts us-east off from gw-a (everything, in us-east's kernel) while
    /// a request goes every 20 ms: returns (time until ap-south answered,
    /// requests failed), having asserted that ap-south serves until the
    /// tunnel is called Down, and lifts the cut.
    fn fail_over(&self) -> (Duration, usize) {
        assert_eq!(self.ask(), Some(b'B'), "us-east is preferred");
        let cut = Instant::now();
        self.lab.cut(&self.ns[1], self.ip[0]);
        let mut failed = 0;
        let moved = loop {
            match self.ask() {
                Some(b'C') => break cut.elapsed(),
                Some(_) => {}
                None => failed += 1,
            }
            assert!(cut.elapsed() < Duration::from_secs(20), "never failed over");
            std::thread::sleep(Duration::from_millis(20));
        };
        // Long enough for the probes to call the tunnel down (not only
        // suspect), so that coming back waits out the hold-down.
        while cut.elapsed() < Duration::from_secs(4) {
            assert_eq!(self.ask(), Some(b'C'), "served by ap-south during the cut");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.lab.heal(&self.ns[1]);
        (moved, failed)
    }

    /// Waits until us-east answers again; returns how long that took.
    fn back_on_us_east(&self, patience: Duration) -> Duration {
        let healed = Instant::now();
        loop {
            if self.ask() == Some(b'B') {
                return healed.elapsed();
            }
            assert!(healed.elapsed() < patience, "never failed back");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ThreeRegions {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_kernel_level_cut_between_real_addresses_fails_over_and_back() {
    if let Some(why) = missing() {
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = ThreeRegions::start(d, |_, _, _| {});
    m.wait_for_tunnel("us-east", "quic");
    m.wait_for_tunnel("ap-south", "quic");
    let rate = m.send_100_mib();
    eprintln!("100 MiB eu-west -> us-east over real addresses, QUIC: {rate:.0} Mbit/s");

    let (moved, failed) = m.fail_over();
    let back = m.back_on_us_east(Duration::from_secs(30));
    eprintln!(
        "kernel cut of us-east: first answer from ap-south {moved:?} after the cut, {failed} requests failed; \
         back on us-east {back:?} after healing (hold-down 2 s)"
    );
    assert_eq!(
        failed, 0,
        "idempotent requests caught by the cut are replayed"
    );
    assert!(
        back >= Duration::from_secs(2),
        "failback before the hold-down: {back:?}"
    );
    let (a, na) = (m.ip[0], &m.ns[0]);
    let admin = |ip: Ipv4Addr| SocketAddr::new(IpAddr::V4(ip), 15000);
    let ask = || m.ask();

    // A drill is refused from anywhere but loopback: the host reaches
    // gw-a's admin over the bridge.
    let mut s = TcpStream::connect(admin(a)).unwrap();
    s.write_all(
        b"POST /drill/blackhole?region=us-east&duration=5s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 403")
            && answer.contains("drills are taken only from loopback"),
        "{answer}"
    );
    // From inside gw-a's namespace, on loopback, `strait drill run` cuts
    // us-east in gw-a itself; traffic moves and comes back.
    let scenario = d.join("drill.toml");
    std::fs::write(
        &scenario,
        "[drill]\nsettle = \"30s\"\n\n[[step]]\nat = \"0s\"\nfault = \"partition\"\n\
         from = \"eu-west\"\nto = \"us-east\"\nfor = \"5s\"\n",
    )
    .unwrap();
    let drill = Command::new("ip")
        .args(["netns", "exec", na])
        .arg(support::strait_bin())
        .args(["drill", "run"])
        .arg(&scenario)
        .args(["--admin", "http://127.0.0.1:15000", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let during = Instant::now();
    let mut served_by_c = false;
    let mut drill_failed = 0;
    while during.elapsed() < Duration::from_secs(4) {
        match ask() {
            Some(b'C') => served_by_c = true,
            Some(_) => {}
            None => drill_failed += 1,
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = drill.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    eprintln!("drill inside the lab: {}", report[0]);
    assert!(report[0]["failover_s"].as_f64().is_some(), "{report}");
    assert!(served_by_c, "ap-south served during the drill");
    assert_eq!(
        drill_failed, 0,
        "idempotent requests caught by the drill are replayed"
    );
    assert_eq!(ask(), Some(b'B'), "us-east serves again after the drill");
}

/// UDP between eu-west and us-east blocked in us-east's kernel (a firewall
/// that passes TCP only) from the start: gw-a finds no QUIC answer and
/// carries the tunnel over TLS over TCP to port 15443; 100 MiB crosses it
/// byte-exact; a full cut of us-east still fails over to ap-south and back;
/// once UDP is let through again, new streams move to QUIC and the carried
/// connection closes.
#[test]
fn a_tunnel_falls_back_to_tcp_where_udp_is_blocked_and_moves_back() {
    if let Some(why) = missing() {
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let started = Instant::now();
    let m = ThreeRegions::start(d, |lab, ns, ip| lab.block_udp(&ns[1], ip[0]));
    m.wait_for_tunnel("ap-south", "quic");
    m.wait_for_tunnel("us-east", "tcp");
    let fell_back = started.elapsed();
    let tcp_rate = m.send_100_mib();
    // A tunnel that just came up takes traffic after the hold-down.
    m.back_on_us_east(Duration::from_secs(10));

    let (moved, failed) = m.fail_over();
    let back = m.back_on_us_east(Duration::from_secs(40));
    assert_eq!(
        failed, 0,
        "idempotent requests caught by the cut are replayed"
    );
    m.wait_for_tunnel("us-east", "tcp");

    m.lab.unblock_udp(&m.ns[1]);
    let unblocked = Instant::now();
    m.wait_for_tunnel("us-east", "quic");
    let on_quic = unblocked.elapsed();
    // The carried connections drain and close: only QUIC remains.
    m.gw_a.wait_for("the TCP carrier closed", |s| {
        s["peers"].as_array().is_some_and(|peers| {
            peers
                .iter()
                .filter(|p| p["region"] == "us-east")
                .all(|p| p["transport"]["kind"] == "quic")
        })
    });
    let quic_rate = m.send_100_mib();
    assert_eq!(m.ask(), Some(b'B'));
    eprintln!(
        "UDP blocked: tunnel over TCP {fell_back:?} after start; 100 MiB at {tcp_rate:.0} Mbit/s over TCP, \
         {quic_rate:.0} Mbit/s over QUIC once UDP passed ({:.2}x); full cut: ap-south answered after {moved:?}, \
         {failed} failed, us-east back {back:?} after healing; UDP unblocked: on QUIC {on_quic:?} later",
        tcp_rate / quic_rate
    );
    let log = std::fs::read_to_string(&m.gw_a.log).unwrap();
    assert!(log.contains("dialing over the TCP carrier"), "{log}");
    assert!(log.contains("QUIC answers over UDP again"), "{log}");
}
