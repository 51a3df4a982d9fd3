//! What the netsim UDP relay costs by itself, with no impairment: how many
//! 1,200-byte datagrams per second it forwards, and how much latency it adds
//! to a round trip.
//!
//! `cargo run --release -p strait-bench --bin netsim-relay [-- --seconds S]`
//!
//! Forwarding: one thread offers datagrams through the relay to a sink at
//! stepped rates, sending one datagram per system call and then 32 per GSO
//! send (S seconds in all, default 10); the table shows what the sink
//! received at each.
//! Latency: 5,000 ping-pongs of 1,200 bytes to an echo socket, directly and
//! through the relay (which the datagram crosses twice per round trip).
//! The relay runs on a current-thread tokio runtime of its own thread, the
//! load on other threads: on a 2-core machine they compete for cores.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use std::io::IoSliceMut;

use strait_netsim::batch::BatchSocket;
use strait_netsim::{LinkConfig, Network, UdpRelay};

const DATAGRAM: usize = 1200;
const PINGS: usize = 5000;

fn main() {
    let seconds = strait_bench::seconds_arg(10.0);
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sink_addr = start_sink(received.clone(), stop.clone());
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let targets = [sink_addr, echo.local_addr().unwrap()];
    let (relays_tx, relays_rx) = std::sync::mpsc::channel();
    let stop_relay = stop.clone();
    let relay_thread = thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let regions = ["a", "b"].map(String::from);
            let net = Network::new(&regions, 1, |_, _| LinkConfig::default());
            let mut relays = Vec::new();
            for target in targets {
                let relay = UdpRelay::bind(
                    "127.0.0.1:0".parse().unwrap(),
                    target,
                    net.link("a", "b").unwrap(),
                    net.link("b", "a").unwrap(),
                )
                .await
                .expect("bind relay");
                relays.push(relay);
            }
            relays_tx
                .send([relays[0].local_addr(), relays[1].local_addr()])
                .unwrap();
            while !stop_relay.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    });
    let [to_sink, to_echo] = relays_rx.recv().unwrap();

    println!("netsim UDP relay, no impairment, {DATAGRAM}-byte datagrams, loopback");
    println!();

    println!(
        "| sender | offered packets/s | sent | forwarded | forwarded packets/s | Gbit/s | not forwarded |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let step = Duration::from_secs_f64(seconds / (2 * RATES.len()) as f64);
    for (gso, label) in [(1, "1 datagram per send"), (GSO_BATCH, "GSO, 32 per send")] {
        for rate in RATES {
            let (sent, received, elapsed) = blast(to_sink, &received, rate, gso, step);
            let offered = rate.map_or_else(|| "unpaced".to_owned(), |r| r.to_string());
            println!(
                "| {label} | {offered} | {sent} | {received} | {:.0} | {:.2} | {:.1}% |",
                received as f64 / elapsed,
                received as f64 * DATAGRAM as f64 * 8.0 / elapsed / 1e9,
                100.0 * sent.saturating_sub(received) as f64 / sent.max(1) as f64
            );
        }
    }
    println!();

    let echo_addr = targets[1];
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            let _ = echo.send_to(&buf[..n], from);
        }
    });
    let direct = ping(echo_addr);
    let through = ping(to_echo);
    println!("| round trip ({PINGS} pings) | p50 us | p99 us |");
    println!("|---|---:|---:|");
    println!(
        "| direct | {:.0} | {:.0} |",
        pct(&direct, 0.5),
        pct(&direct, 0.99)
    );
    println!(
        "| through relay | {:.0} | {:.0} |",
        pct(&through, 0.5),
        pct(&through, 0.99)
    );
    println!(
        "| added by the relay (2 crossings) | {:.0} | {:.0} |",
        pct(&through, 0.5) - pct(&direct, 0.5),
        pct(&through, 0.99) - pct(&direct, 0.99)
    );
    println!(
        "| added per crossing | {:.0} | {:.0} |",
        (pct(&through, 0.5) - pct(&direct, 0.5)) / 2.0,
        (pct(&through, 0.99) - pct(&direct, 0.99)) / 2.0
    );

    stop.store(true, Ordering::SeqCst);
    relay_thread.join().unwrap();
}

/// Offered loads, in datagrams per second (`None`: as fast as the sender
/// can go).
const RATES: [Option<u64>; 5] = [
    Some(100_000),
    Some(150_000),
    Some(200_000),
    Some(250_000),
    None,
];
/// Datagrams per send in the GSO rows.
const GSO_BATCH: usize = 32;

/// A sink on its own thread and runtime that counts every datagram it
/// receives (GRO buffers count as the datagrams they hold).
fn start_sink(count: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let sink = BatchSocket::bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
            tx.send(sink.local_addr().unwrap()).unwrap();
            let mut bufs = vec![vec![0u8; 65536]; 8];
            let mut meta = vec![quinn_udp::RecvMeta::default(); 8];
            while !stop.load(Ordering::SeqCst) {
                let mut iovs: Vec<IoSliceMut<'_>> =
                    bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
                if let Ok(Ok(n)) = tokio::time::timeout(
                    Duration::from_millis(100),
                    sink.recv(&mut iovs, &mut meta),
                )
                .await
                {
                    let datagrams: u64 = meta[..n]
                        .iter()
                        .map(|m| m.len.div_ceil(m.stride.max(1)) as u64)
                        .sum();
                    count.fetch_add(datagrams, Ordering::Relaxed);
                }
            }
        });
    });
    rx.recv().unwrap()
}

/// Sends at `rate` for `duration` (and at most 50 million datagrams), one
/// datagram per system call or `gso` datagrams per GSO send; returns sent,
/// received (once the path has drained) and the seconds sent for.
fn blast(
    relay: SocketAddr,
    received: &AtomicU64,
    rate: Option<u64>,
    gso: usize,
    duration: Duration,
) -> (u64, u64, f64) {
    let before = received.load(Ordering::SeqCst);
    let start = Instant::now();
    let sent = if gso > 1 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let sender = BatchSocket::bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
            let payload = vec![0x5a_u8; DATAGRAM * gso];
            let start = Instant::now();
            let mut sent = 0u64;
            while start.elapsed() < duration && sent < 50_000_000 {
                let due = rate.map_or(sent + gso as u64, |r| {
                    (start.elapsed().as_secs_f64() * r as f64) as u64
                });
                while sent < due {
                    sender.send(relay, &payload, Some(DATAGRAM)).await;
                    sent += gso as u64;
                }
                if rate.is_some() {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            }
            sent
        })
    } else {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        set_buffers(&sender);
        sender.connect(relay).unwrap();
        let payload = [0x5a_u8; DATAGRAM];
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < duration && sent < 50_000_000 {
            let due = rate.map_or(sent + 64, |r| {
                (start.elapsed().as_secs_f64() * r as f64) as u64
            });
            while sent < due {
                if sender.send(&payload).is_ok() {
                    sent += 1;
                }
            }
            if rate.is_some() {
                thread::sleep(Duration::from_micros(200));
            }
        }
        sent
    };
    let elapsed = start.elapsed().as_secs_f64();
    // Let the relay drain: done once the count stops moving for 50 ms.
    let mut last = received.load(Ordering::SeqCst);
    loop {
        thread::sleep(Duration::from_millis(50));
        let now = received.load(Ordering::SeqCst);
        if now == last {
            break;
        }
        last = now;
    }
    (sent, last - before, elapsed)
}

fn ping(addr: SocketAddr) -> Vec<f64> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 2048];
    let payload = [0x42_u8; DATAGRAM];
    // Warm up the flow (the relay opens its upstream socket on first use).
    for _ in 0..100 {
        sock.send(&payload).unwrap();
        let _ = sock.recv(&mut buf);
    }
    let mut rtts = Vec::with_capacity(PINGS);
    for _ in 0..PINGS {
        let t = Instant::now();
        sock.send(&payload).unwrap();
        if sock.recv(&mut buf).is_ok() {
            rtts.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    rtts.sort_by(f64::total_cmp);
    rtts
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn set_buffers(sock: &UdpSocket) {
    // Best effort: rmem_max caps what an unprivileged request gets.
    let _ = socket2::SockRef::from(sock).set_recv_buffer_size(8 << 20);
    let _ = socket2::SockRef::from(sock).set_send_buffer_size(8 << 20);
}
