//! What the netsim UDP relay costs by itself, with no impairment: how many
//! 1,200-byte datagrams per second it forwards, and how much latency it adds
//! to a round trip.
//!
//! `cargo run --release -p strait-bench --bin netsim-relay [-- --seconds S]`
//!
//! Forwarding: one thread offers datagrams through the relay to a sink at
//! stepped rates (S seconds in all, default 5); the table shows what the
//! sink received at each.
//! Latency: 5,000 ping-pongs of 1,200 bytes to an echo socket, directly and
//! through the relay (which the datagram crosses twice per round trip).
//! The relay runs on a current-thread tokio runtime of its own thread, the
//! load on other threads: on a 2-core machine they compete for cores.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use strait_netsim::{LinkConfig, Network, UdpRelay};

const DATAGRAM: usize = 1200;
const PINGS: usize = 5000;

fn main() {
    let seconds = seconds_arg();
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    set_buffers(&sink);
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let targets = [sink.local_addr().unwrap(), echo.local_addr().unwrap()];
    let (relays_tx, relays_rx) = std::sync::mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
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
        "| offered packets/s | sent | forwarded | forwarded packets/s | Gbit/s | not forwarded |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let step = Duration::from_secs_f64(seconds / RATES.len() as f64);
    for rate in RATES {
        let (sent, received, elapsed) = blast(to_sink, &sink, rate, step);
        let offered = rate.map_or_else(|| "unpaced".to_owned(), |r| r.to_string());
        println!(
            "| {offered} | {sent} | {received} | {:.0} | {:.2} | {:.1}% |",
            received as f64 / elapsed,
            received as f64 * DATAGRAM as f64 * 8.0 / elapsed / 1e9,
            100.0 * sent.saturating_sub(received) as f64 / sent.max(1) as f64
        );
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

/// Offered loads, in datagrams per second (`None`: as fast as one thread
/// can send).
const RATES: [Option<u64>; 5] = [
    Some(100_000),
    Some(150_000),
    Some(200_000),
    Some(250_000),
    None,
];

/// Sends at `rate` for `duration` (and at most 50 million datagrams);
/// returns sent, received and the seconds the sink received over.
fn blast(
    relay: SocketAddr,
    sink: &UdpSocket,
    rate: Option<u64>,
    duration: Duration,
) -> (u64, u64, f64) {
    let done = AtomicBool::new(false);
    sink.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    thread::scope(|scope| {
        let receiver = scope.spawn(|| {
            let mut buf = [0u8; 2048];
            let mut count = 0u64;
            let mut first: Option<Instant> = None;
            let mut last = Instant::now();
            loop {
                match sink.recv(&mut buf) {
                    Ok(_) => {
                        count += 1;
                        first.get_or_insert_with(Instant::now);
                        last = Instant::now();
                    }
                    Err(_) if done.load(Ordering::SeqCst) => break,
                    Err(_) => {}
                }
            }
            (
                count,
                first.map_or(1.0, |f| (last - f).as_secs_f64().max(1e-6)),
            )
        });
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
        done.store(true, Ordering::SeqCst);
        let (received, span) = receiver.join().unwrap();
        (sent, received, span)
    })
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

fn seconds_arg() -> f64 {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--seconds") {
        Some(i) => args
            .get(i + 1)
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| *s > 0.0 && *s <= 60.0)
            .unwrap_or_else(|| {
                eprintln!("--seconds takes a number of seconds between 0 and 60");
                std::process::exit(2)
            }),
        None => 5.0,
    }
}
