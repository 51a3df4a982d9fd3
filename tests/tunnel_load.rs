//! Volume through real gateways: 100 MiB each way byte-exact (SHA-256 at
//! both ends), 1,000 concurrent streams on one tunnel, and a transfer
//! through netsim at 80 ms RTT with 1% loss.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::mesh::{GatewayProcess, GatewaySpec, TestCa, free_tcp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MIB: usize = 1 << 20;

/// Deterministic bytes, different at every offset.
fn fill(buf: &mut [u8], offset: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (((offset + i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> 56) as u8;
    }
}

/// A target that reads everything, then answers with the SHA-256 of what it
/// read.
async fn hashing_sink() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut hash = Sha256::new();
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => hash.update(&buf[..n]),
                        Err(_) => return,
                    }
                }
                let _ = s.write_all(&hash.finalize()).await;
            });
        }
    });
    addr
}

/// A target that reads an 8-byte length and sends that many deterministic
/// bytes.
async fn source_target() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let n = s.read_u64().await.unwrap_or(0);
                let mut buf = vec![0u8; 256 * 1024];
                let mut sent = 0u64;
                while sent < n {
                    let len = buf.len().min((n - sent) as usize);
                    fill(&mut buf[..len], sent);
                    if s.write_all(&buf[..len]).await.is_err() {
                        return;
                    }
                    sent += len as u64;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

async fn echo_target() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// Uploads `n` bytes and returns (our hash, the target's hash).
async fn upload(addr: SocketAddr, n: usize) -> ([u8; 32], Vec<u8>) {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let writer = async {
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut sent = 0usize;
        while sent < n {
            let len = buf.len().min(n - sent);
            fill(&mut buf[..len], sent as u64);
            hash.update(&buf[..len]);
            w.write_all(&buf[..len]).await.unwrap();
            sent += len;
        }
        w.shutdown().await.unwrap();
        hash.finalize().into()
    };
    let reader = async {
        let mut answer = Vec::new();
        r.read_to_end(&mut answer).await.unwrap();
        answer
    };
    tokio::join!(writer, reader)
}

/// Downloads `n` bytes and returns (received length, our hash, expected).
async fn download(addr: SocketAddr, n: usize) -> (usize, [u8; 32], [u8; 32]) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_u64(n as u64).await.unwrap();
    let mut got = Sha256::new();
    let mut want = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut expect = vec![0u8; 256 * 1024];
    let mut total = 0usize;
    loop {
        let k = s.read(&mut buf).await.unwrap();
        if k == 0 {
            break;
        }
        got.update(&buf[..k]);
        fill(&mut expect[..k], total as u64);
        want.update(&expect[..k]);
        total += k;
    }
    (total, got.finalize().into(), want.finalize().into())
}

struct Mesh {
    _dir: tempfile::TempDir,
    _gateways: Vec<GatewayProcess>,
    imports: Vec<SocketAddr>,
}

/// west exports `sink`, `source` and `echo`; east imports them. With
/// `via`, east reaches west through that address (a netsim relay) and west
/// does not dial.
async fn mesh(via: Option<Box<dyn FnOnce(SocketAddr) -> SocketAddr>>, tunnel: &[&str]) -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let ca = TestCa::new(&d, "example.org");
    ca.gateway("eu-west", "gw-w", &d.join("gw-w"));
    ca.gateway("us-east", "gw-e", &d.join("gw-e"));
    let mut west = GatewaySpec::new("gw-w", "eu-west", d.join("gw-w"));
    let mut east = GatewaySpec::new("gw-e", "us-east", d.join("gw-e"));
    for spec in [&mut west, &mut east] {
        spec.tunnel = tunnel.iter().map(|l| l.to_string()).collect();
    }
    let target_of_east = match via {
        Some(relay) => {
            // Only the relay joins them: neither may dial the other's real
            // address around it.
            for spec in [&mut west, &mut east] {
                spec.tunnel.push("discover = false".into());
            }
            relay(west.quic)
        }
        None => {
            west.peers.push(("us-east".into(), east.quic));
            west.quic
        }
    };
    east.peers.push(("eu-west".into(), target_of_east));
    west.exports
        .push(("sink".into(), hashing_sink().await, vec![]));
    west.exports
        .push(("source".into(), source_target().await, vec![]));
    west.exports
        .push(("echo".into(), echo_target().await, vec![]));
    let imports: Vec<SocketAddr> = (0..3).map(|_| free_tcp()).collect();
    for (service, addr) in ["sink", "source", "echo"].iter().zip(&imports) {
        east.imports.push((service.to_string(), *addr));
    }
    let (w, e) = tokio::task::spawn_blocking(move || {
        let w = GatewayProcess::start(&d, &west);
        let e = GatewayProcess::start(&d, &east);
        e.wait_for_service("echo");
        (w, e)
    })
    .await
    .unwrap();
    Mesh {
        _dir: dir,
        _gateways: vec![w, e],
        imports,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_each_way_is_byte_exact() {
    let m = mesh(None, &[]).await;
    let started = Instant::now();
    let (ours, theirs) = upload(m.imports[0], 100 * MIB).await;
    assert_eq!(theirs, ours.to_vec(), "SHA-256 differs after upload");
    let (len, got, want) = download(m.imports[1], 100 * MIB).await;
    assert_eq!(len, 100 * MIB);
    assert_eq!(got, want, "SHA-256 differs after download");
    eprintln!("200 MiB through the tunnel in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_streams_on_one_tunnel() {
    let m = mesh(None, &[]).await;
    let echo = m.imports[2];
    let mut tasks = Vec::new();
    // Every connection is open at once: each waits at the barrier after its
    // first byte came back, so all 1,000 streams coexist.
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(1000));
    for i in 0..1000u64 {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(echo).await.unwrap();
            let mut data = vec![0u8; 16 * 1024];
            fill(&mut data, i * 7919);
            s.write_all(&data[..1]).await.unwrap();
            let mut first = [0u8; 1];
            s.read_exact(&mut first).await.unwrap();
            barrier.wait().await;
            s.write_all(&data[1..]).await.unwrap();
            s.shutdown().await.unwrap();
            let mut back = first.to_vec();
            s.read_to_end(&mut back).await.unwrap();
            back == data
        }));
    }
    let mut exact = 0;
    for t in tasks {
        if tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("stream stalled")
            .unwrap()
        {
            exact += 1;
        }
    }
    assert_eq!(exact, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_netsim_at_80ms_rtt_and_1_percent_loss() {
    use strait_netsim::{LinkConfig, Network, UdpRelay};
    let regions = ["eu-west", "us-east"].map(String::from);
    let net = std::sync::Arc::new(Network::new(&regions, 11, |_, _| LinkConfig {
        latency: Duration::from_millis(40),
        loss: 0.01,
        ..Default::default()
    }));
    let (tx, rx) = std::sync::mpsc::channel();
    let relay_net = net.clone();
    let via: Box<dyn FnOnce(SocketAddr) -> SocketAddr> = Box::new(move |west| {
        let handle = tokio::runtime::Handle::current();
        let relay = std::thread::spawn(move || {
            handle.block_on(UdpRelay::bind(
                "127.0.0.1:0".parse().unwrap(),
                west,
                relay_net.link("us-east", "eu-west").unwrap(),
                relay_net.link("eu-west", "us-east").unwrap(),
            ))
        })
        .join()
        .unwrap()
        .unwrap();
        let addr = relay.local_addr();
        tx.send(relay).unwrap();
        addr
    });
    let m = mesh(Some(via), &[]).await;
    let _relay = rx.recv().unwrap();
    let size: usize = std::env::var("STRAIT_NETSIM_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
        * MIB;
    let started = Instant::now();
    let (ours, theirs) = upload(m.imports[0], size).await;
    assert_eq!(
        theirs,
        ours.to_vec(),
        "SHA-256 differs after upload through netsim"
    );
    let elapsed = started.elapsed();
    let lost: u64 = net.report().iter().map(|l| l.stats.dropped_loss).sum();
    assert!(lost > 0, "the link lost nothing: {:?}", net.report());
    eprintln!(
        "{} MiB through netsim (80 ms RTT, 1% loss) in {elapsed:?} ({:.1} Mbit/s), {lost} datagrams lost",
        size / MIB,
        size as f64 * 8.0 / elapsed.as_secs_f64() / 1e6
    );
}
