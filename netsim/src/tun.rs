//! An IP-level link: two TUN devices, each moved into its own network
//! namespace, and one task per direction that reads IP packets from one
//! device and writes them to the other after the [`Link`]'s delay, loss and
//! rate. Kernel TCP, TLS proxies and QUIC then cross exactly the same
//! impairments, which the UDP and TCP relays cannot offer (the TCP relay
//! terminates TCP). Needs root (`/dev/net/tun`, `ip netns`); everything that
//! needs no root stays on the relays.
//!
//! The TUN devices come from the `tun-rs` crate, which keeps the
//! `TUNSETIFF` ioctl out of this crate (netsim forbids `unsafe`).
//! Namespaces and addresses are set with iproute2 (`ip`), as an operator
//! would. Devices are created in the caller's namespace and then moved:
//! an open TUN file keeps working after its device changes namespace, so one
//! process forwards between namespaces without entering them.

use std::io;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tun_rs::AsyncDevice;

use crate::link::{DropCause, Fate};
use crate::network::{SharedLink, lock};
use crate::schedule::{DelayQueue, sleep_until};

/// Packets read per wake-up before the due queue is served again.
const READ_BURST: usize = 64;

/// One direction of the IP link, without I/O: packets are offered as they
/// are read, and taken back when their delivery time has come.
#[derive(Debug)]
pub struct Direction {
    link: SharedLink,
    queue: DelayQueue<Vec<u8>>,
    max_held: usize,
}

impl Direction {
    /// `max_held` bounds the bytes waiting out the delay (the link's own
    /// `queue_bytes` bounds only what waits for its rate limit).
    pub fn new(link: SharedLink, max_held: usize) -> Self {
        Direction {
            link,
            queue: DelayQueue::default(),
            max_held,
        }
    }

    /// Admits one packet read at `now`; returns why it was dropped, if it
    /// was.
    pub fn offer(&mut self, packet: &[u8], now: Instant) -> Option<DropCause> {
        let len = packet.len();
        let fate = lock(&self.link).admit(len, now);
        match fate {
            Fate::Drop(cause) => Some(cause),
            Fate::Deliver { at, duplicate_at } => {
                if self.queue.bytes() + len > self.max_held {
                    lock(&self.link).overflowed(len);
                    return Some(DropCause::QueueFull);
                }
                self.queue.push(at, len, packet.to_vec());
                if let Some(at) = duplicate_at {
                    self.queue.push(at, len, packet.to_vec());
                }
                None
            }
        }
    }

    /// When the next packet is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.next_due()
    }

    /// The next packet due at `now`, if any.
    pub fn pop_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.queue.pop_due(now)
    }

    /// Bytes waiting.
    pub fn held_bytes(&self) -> usize {
        self.queue.bytes()
    }
}

/// Opens a TUN device (IP packets, no packet-information header, no
/// offloads) named `name` with `mtu`, in the caller's namespace.
pub fn open_tun(name: &str, mtu: u16) -> io::Result<AsyncDevice> {
    tun_rs::DeviceBuilder::new()
        .name(name)
        .mtu(mtu)
        .packet_information(false)
        .offload(false)
        .build_async()
}

/// A running IP link between two TUN devices; dropping it stops both
/// directions.
#[derive(Debug)]
pub struct TunLink {
    shutdown: watch::Sender<bool>,
}

impl TunLink {
    /// Forwards packets read from `a` to `b` through `a_to_b`, and from `b`
    /// to `a` through `b_to_a`. Must be called inside a tokio runtime.
    pub fn start(
        a: AsyncDevice,
        b: AsyncDevice,
        a_to_b: SharedLink,
        b_to_a: SharedLink,
        max_held: usize,
    ) -> Self {
        let (shutdown, rx) = watch::channel(false);
        let a = Arc::new(a);
        let b = Arc::new(b);
        tokio::spawn(pump(
            a.clone(),
            b.clone(),
            Direction::new(a_to_b, max_held),
            rx.clone(),
        ));
        tokio::spawn(pump(b, a, Direction::new(b_to_a, max_held), rx));
        TunLink { shutdown }
    }
}

impl Drop for TunLink {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

async fn pump(
    from: Arc<AsyncDevice>,
    to: Arc<AsyncDevice>,
    mut dir: Direction,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let now = Instant::now();
        while let Some(packet) = dir.pop_due(now) {
            // A write fails only when the far device is down or gone; the
            // packet is lost, as on a wire.
            if let Err(e) = to.send(&packet).await {
                tracing::debug!("tun write: {e}");
            }
        }
        tokio::select! {
            r = from.readable() => {
                if let Err(e) = r {
                    tracing::warn!("tun readable: {e}");
                    return;
                }
                for _ in 0..READ_BURST {
                    match from.try_recv(&mut buf) {
                        Ok(n) => {
                            dir.offer(&buf[..n], Instant::now());
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            tracing::warn!("tun read: {e}");
                            return;
                        }
                    }
                }
            }
            _ = sleep_until(dir.next_due()) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Why the namespaces could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
    #[error("needs root (effective uid {uid}) for network namespaces and TUN devices")]
    NotRoot { uid: u32 },
}

/// Two network namespaces joined by a TUN link: `a` holds `a_addr`, `b`
/// holds `b_addr`, each a point-to-point peer of the other. Dropping it
/// deletes both namespaces (and with them the devices).
#[derive(Debug)]
pub struct NamespacePair {
    pub a: String,
    pub b: String,
    pub a_addr: Ipv4Addr,
    pub b_addr: Ipv4Addr,
}

impl NamespacePair {
    /// Creates namespaces `<prefix>-a` and `<prefix>-b` (deleting leftovers
    /// of the same name first) with loopback up.
    pub fn create(
        prefix: &str,
        a_addr: Ipv4Addr,
        b_addr: Ipv4Addr,
    ) -> Result<Self, NamespaceError> {
        let uid = effective_uid();
        if uid != 0 {
            return Err(NamespaceError::NotRoot { uid });
        }
        let pair = NamespacePair {
            a: format!("{prefix}-a"),
            b: format!("{prefix}-b"),
            a_addr,
            b_addr,
        };
        for ns in [&pair.a, &pair.b] {
            let _ = run("ip", &["netns", "del", ns]);
            run("ip", &["netns", "add", ns])?;
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(pair)
    }

    /// Moves TUN device `dev` into namespace `ns`, gives it `local` with
    /// `peer` as its point-to-point peer, and brings it up.
    pub fn attach(
        &self,
        dev: &str,
        ns: &str,
        local: Ipv4Addr,
        peer: Ipv4Addr,
    ) -> Result<(), NamespaceError> {
        run("ip", &["link", "set", dev, "netns", ns])?;
        run(
            "ip",
            &[
                "-n",
                ns,
                "addr",
                "add",
                &local.to_string(),
                "peer",
                &format!("{peer}/32"),
                "dev",
                dev,
            ],
        )?;
        run(
            "ip",
            &["-n", ns, "link", "set", dev, "txqueuelen", "10000", "up"],
        )?;
        Ok(())
    }

    /// Sets a sysctl inside namespace `ns` (e.g. `net.ipv4.tcp_rmem`).
    pub fn sysctl(&self, ns: &str, key: &str, value: &str) -> Result<(), NamespaceError> {
        run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-q",
                "-w",
                &format!("{key}={value}"),
            ],
        )
    }

    /// A command that runs `program` inside namespace `ns`.
    pub fn command(&self, ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }
}

impl Drop for NamespacePair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = run("ip", &["netns", "del", ns]);
        }
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), NamespaceError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| NamespaceError::Command {
            command: command.clone(),
            message: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NamespaceError::Command {
            command,
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// The effective uid, read from /proc (no `unsafe` for `geteuid`).
pub fn effective_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::link::{Link, LinkConfig};

    fn shared(config: LinkConfig) -> SharedLink {
        Arc::new(Mutex::new(Link::new(config, 1)))
    }

    #[test]
    fn packets_wait_out_the_latency_in_order() {
        let mut d = Direction::new(
            shared(LinkConfig {
                latency: Duration::from_millis(40),
                ..Default::default()
            }),
            1 << 20,
        );
        let now = Instant::now();
        for i in 0..10u8 {
            assert_eq!(
                d.offer(&[i; 100], now + Duration::from_micros(i.into())),
                None
            );
        }
        assert_eq!(d.held_bytes(), 1000);
        assert_eq!(d.pop_due(now + Duration::from_millis(39)), None);
        let late = now + Duration::from_millis(41);
        let got: Vec<u8> = std::iter::from_fn(|| d.pop_due(late))
            .map(|p| p[0])
            .collect();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        assert_eq!(d.next_due(), None);
    }

    #[test]
    fn loss_and_the_hold_limit_drop() {
        let mut d = Direction::new(
            shared(LinkConfig {
                loss: 1.0,
                ..Default::default()
            }),
            1 << 20,
        );
        assert_eq!(d.offer(&[0; 10], Instant::now()), Some(DropCause::Loss));

        let link = shared(LinkConfig {
            latency: Duration::from_millis(80),
            ..Default::default()
        });
        let mut d = Direction::new(link.clone(), 3000);
        let now = Instant::now();
        let fates: Vec<_> = (0..4).map(|_| d.offer(&[0; 1000], now)).collect();
        assert_eq!(fates, [None, None, None, Some(DropCause::QueueFull)]);
        let stats = lock(&link).stats().clone();
        assert_eq!(stats.delivered_packets, 3);
        assert_eq!(stats.dropped_queue_full, 1);
    }

    #[test]
    fn duplicates_are_delivered_twice() {
        let mut d = Direction::new(
            shared(LinkConfig {
                duplicate: 1.0,
                ..Default::default()
            }),
            1 << 20,
        );
        let now = Instant::now();
        d.offer(&[7; 10], now);
        assert_eq!(std::iter::from_fn(|| d.pop_due(now)).count(), 2);
    }

    /// Needs root: creates two namespaces and a TUN link, and crosses it
    /// with a TCP connect. Skips (and says why) otherwise.
    #[test]
    fn a_round_trip_crosses_the_tun_link_with_its_latency() {
        let uid = effective_uid();
        if uid != 0 || !std::path::Path::new("/dev/net/tun").exists() {
            eprintln!("skipped: needs root and /dev/net/tun (uid {uid})");
            return;
        }
        let a_addr = Ipv4Addr::new(10, 250, 0, 1);
        let b_addr = Ipv4Addr::new(10, 250, 0, 2);
        let pair = NamespacePair::create("netsim-test", a_addr, b_addr).expect("namespaces");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let link = LinkConfig {
            latency: Duration::from_millis(20),
            ..Default::default()
        };
        let _tun = rt.block_on(async {
            let a = open_tun("nstest-a", 1500).expect("tun a");
            let b = open_tun("nstest-b", 1500).expect("tun b");
            pair.attach("nstest-a", &pair.a, a_addr, b_addr).unwrap();
            pair.attach("nstest-b", &pair.b, b_addr, a_addr).unwrap();
            TunLink::start(a, b, shared(link.clone()), shared(link), 1 << 20)
        });
        // A TCP connect to a closed port is refused by B's kernel: one round
        // trip through both directions, timed.
        let handle = std::thread::spawn({
            let ns = pair.a.clone();
            move || {
                let started = Instant::now();
                let out = Command::new("ip")
                    .args(["netns", "exec", &ns, "bash", "-c"])
                    .arg(format!("exec 3<>/dev/tcp/{b_addr}/9"))
                    .output()
                    .unwrap();
                (out, started.elapsed())
            }
        });
        // Drive the forwarder while the probe runs.
        let (out, took) = rt.block_on(async {
            loop {
                if handle.is_finished() {
                    break handle.join().unwrap();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains("refused"),
            "no answer across the link: {text}"
        );
        let ms = took.as_secs_f64() * 1000.0;
        assert!(ms >= 40.0, "round trip {ms} ms is below twice the latency");
    }
}
