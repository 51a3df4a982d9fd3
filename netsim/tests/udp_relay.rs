//! The UDP relay with real sockets on loopback: latency floor, partitions,
//! heal, and asymmetric cuts. Absence is shown by markers, never by sleeps:
//! dropped packets are gone, so a marker sent after healing is the only
//! thing that can arrive.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use strait_netsim::{LinkConfig, Network, UdpRelay};
use tokio::net::UdpSocket;

const WAIT: Duration = Duration::from_secs(10);

/// An echo target that counts what it received.
async fn echo_target() -> (
    SocketAddr,
    Arc<AtomicUsize>,
    tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let c = count.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            c.fetch_add(1, Ordering::SeqCst);
            let _ = tx.send(buf[..n].to_vec());
            let _ = sock.send_to(&buf[..n], from).await;
        }
    });
    (addr, count, rx)
}

fn network(latency: Duration) -> Network {
    let regions = ["a", "b"].map(String::from);
    Network::new(&regions, 1, |_, _| LinkConfig {
        latency,
        ..Default::default()
    })
}

async fn relay(net: &Network, target: SocketAddr) -> UdpRelay {
    UdpRelay::bind(
        "127.0.0.1:0".parse().unwrap(),
        target,
        net.link("a", "b").unwrap(),
        net.link("b", "a").unwrap(),
    )
    .await
    .unwrap()
}

async fn client(relay: &UdpRelay) -> UdpSocket {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(relay.local_addr()).await.unwrap();
    sock
}

/// Waits until the relay has decided the fate of `n` packets dropped by the
/// partition on `from -> to`: datagrams sit in socket buffers for a while
/// after `send` returns.
async fn wait_dropped(net: &Network, from: &str, n: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let dropped = net
            .report()
            .iter()
            .find(|l| l.from == from)
            .map_or(0, |l| l.stats.dropped_partition);
        if dropped >= n {
            assert_eq!(dropped, n);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {dropped} of {n} packets reached the cut link"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn recv(sock: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let n = tokio::time::timeout(WAIT, sock.recv(&mut buf))
        .await
        .expect("no reply")
        .unwrap();
    buf[..n].to_vec()
}

#[tokio::test]
async fn round_trips_never_beat_the_configured_latency() {
    let (target, ..) = echo_target().await;
    let net = network(Duration::from_millis(25));
    let relay = relay(&net, target).await;
    let sock = client(&relay).await;
    for i in 0..20u32 {
        let start = Instant::now();
        sock.send(&i.to_be_bytes()).await.unwrap();
        assert_eq!(recv(&sock).await, i.to_be_bytes());
        let rtt = start.elapsed();
        assert!(
            rtt >= Duration::from_millis(50),
            "round trip {i} took {rtt:?}, below 2 x 25 ms"
        );
    }
}

#[tokio::test]
async fn partition_drops_everything_and_heal_restores() {
    let (target, count, mut seen) = echo_target().await;
    let net = network(Duration::ZERO);
    let relay = relay(&net, target).await;
    let sock = client(&relay).await;
    sock.send(b"before").await.unwrap();
    assert_eq!(recv(&sock).await, b"before");
    assert_eq!(seen.recv().await.unwrap(), b"before");

    net.partition("a", "b", false).unwrap();
    for _ in 0..50 {
        sock.send(b"cut").await.unwrap();
    }
    wait_dropped(&net, "a", 50).await;
    net.heal(Some(("a", "b"))).unwrap();
    sock.send(b"healed").await.unwrap();
    assert_eq!(recv(&sock).await, b"healed");
    assert_eq!(
        seen.recv().await.unwrap(),
        b"healed",
        "a packet sent during the partition got through"
    );
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn asymmetric_partition_lets_the_other_direction_through() {
    let (target, count, mut seen) = echo_target().await;
    let net = network(Duration::ZERO);
    let relay = relay(&net, target).await;
    let sock = client(&relay).await;
    sock.send(b"hello").await.unwrap();
    assert_eq!(recv(&sock).await, b"hello");
    let _ = seen.recv().await;

    // Cut only b -> a: requests still arrive, replies do not.
    net.partition("b", "a", true).unwrap();
    for i in 0..20u8 {
        sock.send(&[i]).await.unwrap();
    }
    for i in 0..20u8 {
        let got = tokio::time::timeout(WAIT, seen.recv())
            .await
            .expect("request lost")
            .unwrap();
        assert_eq!(got, [i], "a -> b must keep flowing");
    }
    assert_eq!(count.load(Ordering::SeqCst), 21);
    wait_dropped(&net, "b", 20).await;
    net.heal(None).unwrap();
    sock.send(b"marker").await.unwrap();
    assert_eq!(
        recv(&sock).await,
        b"marker",
        "a reply sent during the cut arrived"
    );
}

#[tokio::test]
async fn settings_change_for_the_next_packet() {
    let (target, ..) = echo_target().await;
    let net = network(Duration::ZERO);
    let relay = relay(&net, target).await;
    let sock = client(&relay).await;
    sock.send(b"fast").await.unwrap();
    recv(&sock).await;
    net.set(
        "a",
        "b",
        true,
        &strait_netsim::LinkChange {
            latency: Some(Duration::from_millis(60)),
            ..Default::default()
        },
    )
    .unwrap();
    let start = Instant::now();
    sock.send(b"slow").await.unwrap();
    assert_eq!(recv(&sock).await, b"slow");
    assert!(start.elapsed() >= Duration::from_millis(60));
}
