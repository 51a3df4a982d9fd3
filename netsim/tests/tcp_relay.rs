//! The TCP relay with real sockets: handshake and chunk latency, half-close,
//! and both partition behaviours (stall until healed, reset).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use strait_netsim::{LinkConfig, Network, PartitionMode, TcpRelay};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(10);

/// A target that echoes until the client half-closes, then sends "bye" and
/// closes.
async fn echo_target() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
                let _ = s.write_all(b"bye").await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

fn network(latency: Duration) -> Network {
    let regions = ["a", "b"].map(String::from);
    Network::new(&regions, 1, |_, _| LinkConfig {
        latency,
        ..Default::default()
    })
}

async fn relay(net: &Network, mode: PartitionMode) -> TcpRelay {
    let target = echo_target().await;
    TcpRelay::bind(
        "127.0.0.1:0".parse().unwrap(),
        target,
        net.link("a", "b").unwrap(),
        net.link("b", "a").unwrap(),
        mode,
    )
    .await
    .unwrap()
}

async fn read_exact(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(WAIT, s.read_exact(&mut buf))
        .await
        .expect("no data")
        .unwrap();
    buf
}

#[tokio::test]
async fn first_byte_costs_two_round_trips_like_real_tcp() {
    let net = network(Duration::from_millis(20));
    let relay = relay(&net, PartitionMode::Stall).await;
    let start = Instant::now();
    let mut s = TcpStream::connect(relay.local_addr()).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    assert_eq!(read_exact(&mut s, 4).await, b"ping");
    let first = start.elapsed();
    assert!(
        first >= Duration::from_millis(80),
        "connect + first response took {first:?}, below 2 RTT"
    );
    let start = Instant::now();
    s.write_all(b"again").await.unwrap();
    assert_eq!(read_exact(&mut s, 5).await, b"again");
    assert!(start.elapsed() >= Duration::from_millis(40));
}

#[tokio::test]
async fn half_close_delivers_the_whole_response() {
    let net = network(Duration::from_millis(2));
    let relay = relay(&net, PartitionMode::Stall).await;
    let mut s = TcpStream::connect(relay.local_addr()).await.unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = s.split();
    let writer = async {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let reader = async {
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        got
    };
    let ((), got) = tokio::time::timeout(WAIT, async { tokio::join!(writer, reader) })
        .await
        .unwrap();
    assert_eq!(got.len(), data.len() + 3);
    assert!(got[..data.len()] == data[..]);
    assert_eq!(&got[data.len()..], b"bye");
}

#[tokio::test]
async fn stall_mode_holds_bytes_until_the_link_heals() {
    let net = network(Duration::ZERO);
    let relay = relay(&net, PartitionMode::Stall).await;
    let mut s = TcpStream::connect(relay.local_addr()).await.unwrap();
    s.write_all(b"one").await.unwrap();
    assert_eq!(read_exact(&mut s, 3).await, b"one");
    net.partition("a", "b", false).unwrap();
    s.write_all(b"two").await.unwrap();
    // Wait until the relay has tried, and been held by, the cut link.
    let deadline = Instant::now() + WAIT;
    while net.report().iter().all(|l| l.stats.dropped_partition == 0) {
        assert!(
            Instant::now() < deadline,
            "the relay never met the partition"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    net.heal(None).unwrap();
    assert_eq!(read_exact(&mut s, 3).await, b"two");
}

#[tokio::test]
async fn reset_mode_resets_connections_and_refuses_new_ones() {
    let net = network(Duration::ZERO);
    let relay = relay(&net, PartitionMode::Reset).await;
    let mut s = TcpStream::connect(relay.local_addr()).await.unwrap();
    s.write_all(b"one").await.unwrap();
    assert_eq!(read_exact(&mut s, 3).await, b"one");
    net.partition("a", "b", false).unwrap();
    let mut buf = [0u8; 8];
    let outcome = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .expect("connection neither reset nor closed");
    match outcome {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        Ok(n) => panic!("read {n} bytes instead of a reset"),
    }
    let mut fresh = TcpStream::connect(relay.local_addr()).await.unwrap();
    let _ = fresh.write_all(b"x").await;
    let outcome = tokio::time::timeout(WAIT, fresh.read(&mut buf))
        .await
        .expect("new connection hung");
    assert!(matches!(outcome, Err(_) | Ok(0)), "{outcome:?}");
}
