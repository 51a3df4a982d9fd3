//! Real gateways for integration tests: certificates from our own CA in a
//! temporary directory, configuration files, `strait gateway run`
//! processes, and readiness read from their admin endpoints.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::strait;

/// An address for a listener a gateway will bind later. The port is found
/// free and released, so something else could take it before the gateway
/// binds it: outgoing connections take ephemeral ports all the time. Each
/// address is therefore on its own loopback IP (127.x.y.z; all of 127/8 is
/// loopback on Linux), where nothing else binds or connects from.
pub fn fresh_loopback_ip() -> std::net::Ipv4Addr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let seed = std::process::id().wrapping_mul(2_654_435_761) ^ n.wrapping_mul(40_503);
    let [a, b, _, _] = seed.to_le_bytes();
    std::net::Ipv4Addr::new(127, a.max(1), b.max(1), (n % 250 + 2) as u8)
}

pub fn free_udp() -> SocketAddr {
    UdpSocket::bind((fresh_loopback_ip(), 0))
        .unwrap()
        .local_addr()
        .unwrap()
}

pub fn free_tcp() -> SocketAddr {
    std::net::TcpListener::bind((fresh_loopback_ip(), 0))
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A CA in `dir/ca` and gateway certificates on demand.
pub struct TestCa {
    pub dir: PathBuf,
}

impl TestCa {
    pub fn new(dir: &Path, trust_domain: &str) -> TestCa {
        let ca = dir.join(format!("ca-{trust_domain}"));
        strait(
            dir,
            &format!(
                "ca init --trust-domain {trust_domain} --dir {}",
                ca.display()
            ),
        )
        .ok();
        TestCa { dir: ca }
    }

    /// Issues a certificate for each (region, name) into `dir/name`.
    pub fn gateways(&self, dir: &Path, gateways: &[(&str, &str)]) {
        for (region, name) in gateways {
            self.gateway(region, name, &dir.join(name));
        }
    }

    /// Issues a gateway certificate into `out`.
    pub fn gateway(&self, region: &str, name: &str, out: &Path) {
        strait(
            out.parent().unwrap(),
            &format!(
                "cert issue --ca {} --gateway --region {region} --name {name} --out {}",
                self.dir.display(),
                out.display()
            ),
        )
        .ok();
    }
}

/// The two-gateway mesh most tests start from: a CA of example.org,
/// `gw-w` in eu-west and `gw-e` in us-east with their certificates, and
/// east configured to dial west. Services are the caller's to add.
pub fn west_east(dir: &Path) -> (TestCa, GatewaySpec, GatewaySpec) {
    let ca = TestCa::new(dir, "example.org");
    ca.gateway("eu-west", "gw-w", &dir.join("gw-w"));
    ca.gateway("us-east", "gw-e", &dir.join("gw-e"));
    let west = GatewaySpec::new("gw-w", "eu-west", dir.join("gw-w"));
    let mut east = GatewaySpec::new("gw-e", "us-east", dir.join("gw-e"));
    east.peers.push(("eu-west".into(), west.quic));
    (ca, west, east)
}

/// What one gateway is configured with.
#[derive(Clone)]
pub struct GatewaySpec {
    pub name: String,
    pub region: String,
    pub quic: SocketAddr,
    pub admin: SocketAddr,
    /// (region, address) of peers to dial.
    pub peers: Vec<(String, SocketAddr)>,
    /// (service, target, allow patterns).
    pub exports: Vec<(String, SocketAddr, Vec<String>)>,
    /// (service, listen).
    pub imports: Vec<(String, SocketAddr)>,
    /// Directory holding cert.pem, key.pem and bundle.pem.
    pub identity: PathBuf,
    /// Extra lines for the [tunnel] section.
    pub tunnel: Vec<String>,
    /// `prefer` of every import.
    pub prefer: Vec<String>,
    /// Lines of the [health] section.
    pub health: Vec<String>,
    /// `drain_grace` in [gateway].
    pub drain_grace: Option<String>,
    /// Extra lines for the [[import]] or [[export]] of a service.
    pub service_lines: Vec<(String, String)>,
    /// Extra lines for the [identity] section.
    pub identity_lines: Vec<String>,
    /// Leave `name` out of [gateway]: the certificate names the gateway.
    pub name_from_certificate: bool,
    /// Extra lines for the [gateway] section.
    pub gateway_lines: Vec<String>,
    /// Whole tables (`[[federation]]`, a `[[peer]]` of its own) appended
    /// at the end.
    pub tables: Vec<String>,
}

impl GatewaySpec {
    pub fn new(name: &str, region: &str, identity: PathBuf) -> Self {
        GatewaySpec {
            name: name.into(),
            region: region.into(),
            quic: free_udp(),
            admin: free_tcp(),
            peers: Vec::new(),
            exports: Vec::new(),
            imports: Vec::new(),
            identity,
            tunnel: Vec::new(),
            prefer: Vec::new(),
            health: Vec::new(),
            drain_grace: None,
            service_lines: Vec::new(),
            identity_lines: Vec::new(),
            name_from_certificate: false,
            gateway_lines: Vec::new(),
            tables: Vec::new(),
        }
    }

    fn lines_for(&self, service: &str) -> String {
        self.service_lines
            .iter()
            .filter(|(s, _)| s == service)
            .map(|(_, l)| format!("{l}\n"))
            .collect()
    }

    pub fn toml(&self) -> String {
        let mut s = format!(
            "[gateway]\nname = \"{}\"\nregion = \"{}\"\nlisten = \"{}\"\nadmin = \"{}\"\n\n\
             [identity]\ncert = \"{id}/cert.pem\"\nkey = \"{id}/key.pem\"\nbundle = \"{id}/bundle.pem\"\n{}\n\
             [tunnel]\n{}{}",
            self.name,
            self.region,
            self.quic,
            self.admin,
            self.identity_lines
                .iter()
                .map(|l| format!("{l}\n"))
                .collect::<String>(),
            // Tests see a dead tunnel sooner than the default 10 s unless
            // they set their own.
            if self.tunnel.iter().any(|l| l.starts_with("idle_timeout")) {
                ""
            } else {
                "idle_timeout = \"5s\"\n"
            },
            self.tunnel
                .iter()
                .map(|l| format!("{l}\n"))
                .collect::<String>(),
            id = self.identity.display()
        );
        if !self.health.is_empty() {
            s += "\n[health]\n";
            for line in &self.health {
                s += &format!("{line}\n");
            }
        }
        for (region, addr) in &self.peers {
            s += &format!("\n[[peer]]\nregion = \"{region}\"\naddresses = [\"{addr}\"]\n");
        }
        for (service, target, allow) in &self.exports {
            let allow: Vec<String> = allow.iter().map(|a| format!("\"{a}\"")).collect();
            s += &format!(
                "\n[[export]]\nservice = \"{service}\"\ntarget = \"{target}\"\nallow = [{}]\n",
                allow.join(", ")
            );
            s += &self.lines_for(service);
        }
        if self.name_from_certificate {
            s = s.replacen(&format!("name = \"{}\"\n", self.name), "", 1);
        }
        for line in &self.gateway_lines {
            s = s.replacen("[identity]", &format!("{line}\n\n[identity]"), 1);
        }
        if let Some(grace) = &self.drain_grace {
            s = s.replacen(
                "[identity]",
                &format!("drain_grace = \"{grace}\"\n\n[identity]"),
                1,
            );
        }
        let prefer: Vec<String> = self.prefer.iter().map(|r| format!("\"{r}\"")).collect();
        for (service, listen) in &self.imports {
            s += &format!(
                "\n[[import]]\nservice = \"{service}\"\nlisten = \"{listen}\"\nprefer = [{}]\n",
                prefer.join(", ")
            );
            s += &self.lines_for(service);
        }
        for table in &self.tables {
            s += &format!("\n{table}\n");
        }
        s
    }
}

/// A running `strait gateway run`, killed when dropped; its log is kept in
/// a file for assertions and for failure messages.
pub struct GatewayProcess {
    pub spec_admin: SocketAddr,
    pub log: PathBuf,
    /// The configuration file it runs (rewrite it and send SIGHUP to reload).
    pub config: PathBuf,
    child: Child,
}

impl GatewayProcess {
    pub fn start(dir: &Path, spec: &GatewaySpec) -> GatewayProcess {
        let config = dir.join(format!("{}.toml", spec.name));
        std::fs::write(&config, spec.toml()).unwrap();
        let log = dir.join(format!("{}.log", spec.name));
        let child = Command::new(super::strait_bin())
            .args(["gateway", "run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info,strait_gateway=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let gw = GatewayProcess {
            spec_admin: spec.admin,
            log,
            config: config.clone(),
            child,
        };
        gw.wait_for("admin endpoint", |_| true);
        gw
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (up to 10 s) until the log contains `needle`; returns the log.
    pub fn wait_for_log(&self, needle: &str) -> String {
        self.wait_for_log_within(needle, Duration::from_secs(10))
    }

    /// Waits up to `patience` until the log contains `needle`.
    pub fn wait_for_log_within(&self, needle: &str, patience: Duration) -> String {
        let deadline = Instant::now() + patience;
        loop {
            let log = self.log_text();
            if log.contains(needle) {
                return log;
            }
            assert!(Instant::now() < deadline, "{needle:?} never logged:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `/metrics`, parsed.
    pub fn scrape(&self) -> HashMap<String, f64> {
        parse_metrics(&self.scrape_text())
    }

    /// `/metrics` as the gateway wrote it.
    pub fn scrape_text(&self) -> String {
        http_get(self.spec_admin, "/metrics").expect("/metrics answered")
    }

    /// `/status` as JSON, if the gateway answers.
    pub fn status(&self) -> Option<serde_json::Value> {
        let body = http_get(self.spec_admin, "/status")?;
        serde_json::from_str(&body).ok()
    }

    /// Polls `/status` until `ready(status)` holds (up to 20 s).
    pub fn wait_for(
        &self,
        what: &str,
        ready: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.status()
                && ready(&s)
            {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "gateway never reached: {what}\nstatus: {:?}\nlog:\n{}",
                self.status(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until a peer offers `service` over a tunnel.
    pub fn wait_for_service(&self, service: &str) {
        self.wait_for(&format!("a peer offering {service}"), |s| {
            s["peers"].as_array().is_some_and(|peers| {
                peers.iter().any(|p| {
                    p["services"]
                        .as_array()
                        .is_some_and(|svcs| svcs.iter().any(|v| v["name"] == service))
                })
            })
        });
    }

    /// Sends SIGHUP (the gateway reloads its configuration file).
    pub fn signal_hup(&self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    }

    /// Sends `signal` (a name `kill` knows: STOP, CONT, ...).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
    }

    /// Sends SIGTERM (the gateway starts draining).
    pub fn signal_term(&self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    }

    /// Waits (up to 30 s) for the process to exit.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not exit after SIGTERM:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn peer_count(&self) -> usize {
        self.status()
            .and_then(|s| s["peers"].as_array().map(|p| p.len()))
            .unwrap_or(0)
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP GET against an admin endpoint.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// A POST to an admin endpoint: (status line, body).
pub fn admin_post(admin: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(admin).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (
        head.lines().next().unwrap().to_owned(),
        body.trim().to_owned(),
    )
}

/// A TCP server on 127.0.0.1 that runs `serve` on its own thread for each
/// connection.
pub fn serve_each(serve: impl Fn(TcpStream) + Clone + Send + 'static) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(s) = stream else { continue };
            let serve = serve.clone();
            std::thread::spawn(move || serve(s));
        }
    });
    addr
}

/// An echo server on its own thread: echoes until the client half-closes,
/// then closes.
pub fn echo_server() -> SocketAddr {
    serve_each(|mut s| {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = s.shutdown(std::net::Shutdown::Write);
    })
}

/// A server that writes `greeting` on each connection first, then
/// echoes: a target that speaks first, or one that says which it is.
pub fn greeting_echo_server(greeting: String) -> SocketAddr {
    serve_each(move |mut s| {
        if s.write_all(greeting.as_bytes()).is_err() {
            return;
        }
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    })
}

/// An HTTP/1.x server on its own thread: reads a request head, answers
/// 200 with `body` and closes, as any small web server would.
pub fn http_server(body: &'static str) -> SocketAddr {
    serve_each(move |mut s| {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = s.shutdown(std::net::Shutdown::Write);
    })
}

/// A running `strait ca serve`, killed when dropped.
pub struct CaProcess {
    /// Where it listens (UDP).
    pub addr: SocketAddr,
    pub log: PathBuf,
    child: Child,
}

impl CaProcess {
    /// Serves the CA in `dir/<ca>` issuing certificates valid for
    /// `validity`; returns once it is ready.
    pub fn start(dir: &Path, ca: &str, validity: &str) -> CaProcess {
        let addr = free_udp();
        let log = dir.join(format!("{ca}-serve.log"));
        let child = Command::new(super::strait_bin())
            .args([
                "ca",
                "serve",
                "--ca",
                ca,
                "--validity",
                validity,
                "--listen",
            ])
            .arg(addr.to_string())
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let ca = CaProcess { addr, log, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ca.log_text().contains("CA service ready") {
            assert!(
                Instant::now() < deadline,
                "CA service did not start:\n{}",
                ca.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        ca
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for CaProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name{labels}` -> value, from Prometheus text exposition.
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample line: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        out.insert(series.to_owned(), value);
    }
    out
}

/// Sum of the samples of metric `name` whose labels contain every
/// `key="value"` in `labels`.
pub fn sum(samples: &HashMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| {
            k.starts_with(name) && k[name.len()..].starts_with(['{', ' ']) || k.as_str() == name
        })
        .filter(|(k, _)| labels.iter().all(|l| k.contains(l)))
        .map(|(_, v)| v)
        .sum()
}

/// An echo target on `addr` that can be stopped (its port then refuses
/// connections) and started again on the same address; it first writes
/// `tag` and a newline when given one.
pub struct StoppableTarget {
    pub addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl StoppableTarget {
    pub fn start(addr: SocketAddr, tag: Option<&'static str>) -> StoppableTarget {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        std::thread::spawn(move || {
                            if let Some(tag) = tag {
                                let _ = s.write_all(format!("{tag}\n").as_bytes());
                            }
                            let mut buf = [0u8; 1024];
                            while let Ok(n) = s.read(&mut buf) {
                                if n == 0 || s.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        StoppableTarget { addr, stop }
    }

    pub fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Let the accept loop see it and drop the listener.
        std::thread::sleep(Duration::from_millis(50));
    }
}
