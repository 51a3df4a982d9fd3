//! Limits through real gateways: a bulkhead whose queue fills and times
//! out, a rate limit that refuses and recovers, a flood on one import
//! that leaves another serving, idle clients cut at the first-byte
//! timeout (through a tunnel and to a local target) while a server that
//! speaks first is not, and a full import that gives the slot of its
//! longest-silent client to a new one.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::mesh::{GatewayProcess, echo_server, free_tcp, greeting_echo_server, west_east};

/// Opens a connection, sends a byte and waits for the echo: `Some` with
/// the open connection when served, `None` when refused.
fn open(addr: SocketAddr) -> Option<TcpStream> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"x").ok()?;
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(1) => Some(s),
        _ => None,
    }
}

struct Pair {
    _dir: tempfile::TempDir,
    _gateways: Vec<GatewayProcess>,
    imports: Vec<SocketAddr>,
}

/// west exports echo services, east imports them; `lines` go into the
/// sections of the named services.
fn pair(services: &[&str], lines: &[(&str, &str)]) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_ca, mut west, mut east) = west_east(d);
    let mut imports = Vec::new();
    for service in services {
        west.exports
            .push((format!("{service}-x"), echo_server(), vec![]));
        let listen = free_tcp();
        // Import and export names differ so `lines` can target either side.
        east.imports.push((format!("{service}-x"), listen));
        imports.push(listen);
    }
    for (service, line) in lines {
        let (spec, name) = match service.strip_prefix("export:") {
            Some(s) => (&mut west, format!("{s}-x")),
            None => (&mut east, format!("{service}-x")),
        };
        spec.service_lines.push((name, line.to_string()));
    }
    // The same name is imported on east and exported on west; lines for
    // one side only reach that side's file.
    let west_gw = GatewayProcess::start(d, &west);
    let east_gw = GatewayProcess::start(d, &east);
    for service in services {
        east_gw.wait_for_service(&format!("{service}-x"));
    }
    Pair {
        _dir: dir,
        _gateways: vec![west_gw, east_gw],
        imports,
    }
}

#[test]
fn a_full_bulkhead_queues_then_refuses_and_recovers() {
    let p = pair(
        &["a"],
        &[
            ("a", "max_concurrent = 2"),
            ("a", "queue = 1"),
            ("a", "queue_timeout = \"400ms\""),
        ],
    );
    let import = p.imports[0];
    let first = open(import).expect("first admitted");
    let _second = open(import).expect("second admitted");
    // The third waits in the queue and gives up after the queue timeout.
    let queued = std::thread::spawn(move || {
        let started = Instant::now();
        (open(import).is_none(), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(100));
    // The fourth finds the queue full and is refused at once.
    let started = Instant::now();
    assert!(
        open(import).is_none(),
        "a fourth client was admitted past the limit"
    );
    assert!(
        started.elapsed() < Duration::from_millis(350),
        "refusal took {:?}",
        started.elapsed()
    );
    let (refused, waited) = queued.join().unwrap();
    assert!(
        refused,
        "the queued client was admitted while both slots were held"
    );
    assert!(
        waited >= Duration::from_millis(400),
        "the queued client gave up after {waited:?}"
    );
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    while open(import).is_none() {
        assert!(
            Instant::now() < deadline,
            "no slot came back after a stream ended"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_rate_limit_refuses_and_recovers() {
    // On the export side: OVERLOADED reaches the importer, which has no
    // other peer to try, so the client is refused.
    let p = pair(
        &["r"],
        &[("export:r", "rate = 2.0"), ("export:r", "burst = 2")],
    );
    let import = p.imports[0];
    let results: Vec<bool> = (0..4).map(|_| open(import).is_some()).collect();
    assert_eq!(results.iter().filter(|ok| **ok).count(), 2, "{results:?}");
    std::thread::sleep(Duration::from_millis(1100));
    assert!(open(import).is_some(), "the rate limit did not recover");
}

#[test]
fn a_flood_on_one_import_leaves_the_other_serving() {
    let p = pair(&["flood", "calm"], &[("flood", "max_concurrent = 4")]);
    let (flood, calm) = (p.imports[0], p.imports[1]);
    let flooders: Vec<_> = (0..40)
        .map(|_| {
            std::thread::spawn(move || {
                let started = Instant::now();
                let held = open(flood);
                let admitted = held.is_some();
                // Admitted clients hold their slot for a while.
                std::thread::sleep(Duration::from_millis(if admitted { 1500 } else { 0 }));
                (admitted, started.elapsed())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..20 {
        let started = Instant::now();
        assert!(
            open(calm).is_some(),
            "the calm import failed request {i} during the flood"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "calm request {i} took {:?}",
            started.elapsed()
        );
    }
    let outcomes: Vec<(bool, Duration)> = flooders.into_iter().map(|t| t.join().unwrap()).collect();
    let admitted = outcomes.iter().filter(|o| o.0).count();
    assert!(
        admitted <= 8,
        "{admitted} flood clients admitted past a limit of 4"
    );
    assert!(
        outcomes
            .iter()
            .filter(|o| !o.0)
            .all(|o| o.1 < Duration::from_secs(2)),
        "refused clients were parked"
    );
}

#[test]
fn an_idle_stream_is_reset_after_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_ca, mut west, mut east) = west_east(d);
    west.exports.push(("echo".into(), echo_server(), vec![]));
    let import = free_tcp();
    east.imports.push(("echo".into(), import));
    for spec in [&mut west, &mut east] {
        spec.tunnel.push("stream_idle_timeout = \"600ms\"".into());
    }
    let w = GatewayProcess::start(d, &west);
    let e = GatewayProcess::start(d, &east);
    e.wait_for_service("echo");
    let mut s = open(import).expect("admitted");
    // Activity keeps it alive...
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(300));
        s.write_all(b"y").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
    }
    // ...silence ends it.
    let started = Instant::now();
    let mut b = [0u8; 1];
    let r = s.read(&mut b);
    assert!(matches!(r, Err(_) | Ok(0)), "{r:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "reset after {:?}",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    // Whichever side's timer fires first logs "idle"; the other sees a reset.
    while !(e.log_text().contains("outcome=\"idle\"") || w.log_text().contains("outcome=\"idle\""))
    {
        assert!(
            Instant::now() < deadline,
            "{}\n{}",
            e.log_text(),
            w.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_full_import_gives_the_slot_of_the_client_silent_longest_to_a_new_one() {
    let p = pair(&["a"], &[("a", "max_concurrent = 3")]);
    let import = p.imports[0];
    let mut talker = open(import).expect("a client that spoke");
    let silent: Vec<TcpStream> = (0..2)
        .map(|_| {
            let s = TcpStream::connect(import).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            s
        })
        .collect();
    // Silent past the second a stream must be before its slot is taken.
    std::thread::sleep(Duration::from_millis(1300));
    let started = Instant::now();
    let mut newcomer = open(import).expect("refused while silent clients held every slot");
    println!("newcomer served {:?} after it connected", started.elapsed());

    // The one silent longest was cut; the other and the talker were not.
    let mut b = [0u8; 1];
    let mut oldest = &silent[0];
    oldest
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let got = oldest.read(&mut b);
    assert!(matches!(got, Ok(0) | Err(_)), "{got:?}");
    let mut younger = &silent[1];
    younger
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let got = younger.read(&mut b);
    assert!(
        matches!(&got, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "the younger silent client was cut too: {got:?}"
    );
    for s in [&mut talker, &mut newcomer] {
        s.write_all(b"y").unwrap();
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"y");
    }
    // The younger silent client gives way to the next newcomer; then
    // every slot is held by a client that spoke, and the next is refused.
    let _second = open(import).expect("the second newcomer was refused");
    younger
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let got = younger.read(&mut b);
    assert!(matches!(got, Ok(0) | Err(_)), "{got:?}");
    assert!(open(import).is_none(), "admitted past the limit");
}

#[test]
fn an_idle_client_is_cut_at_the_first_byte_timeout_and_a_server_that_speaks_first_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_ca, mut west, mut east) = west_east(d);
    west.exports.push(("quiet".into(), echo_server(), vec![]));
    west.exports.push((
        "greets".into(),
        greeting_echo_server("hello\n".into()),
        vec![],
    ));
    let (quiet, greets) = (free_tcp(), free_tcp());
    east.imports.push(("quiet".into(), quiet));
    east.imports.push(("greets".into(), greets));
    east.tunnel.push("first_byte_timeout = \"500ms\"".into());
    let _w = GatewayProcess::start(d, &west);
    let e = GatewayProcess::start(d, &east);
    e.wait_for_service("quiet");
    e.wait_for_service("greets");

    // Sends nothing: reset once 500 ms passed with no byte either way.
    let cut_after = cut_while_silent(quiet);

    // The server speaks first: a byte moved, so the silent client stays.
    let mut listener = TcpStream::connect(greets).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut hello = [0u8; 6];
    listener.read_exact(&mut hello).unwrap();
    assert_eq!(&hello, b"hello\n");
    std::thread::sleep(Duration::from_millis(1200));
    listener.write_all(b"x").unwrap();
    let mut echo = [0u8; 1];
    listener.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"x");
    let log = e.wait_for_log("outcome=\"idle\"");
    assert!(log.contains("service=quiet"), "{log}");
    println!("idle client cut {cut_after:?} after it connected (first_byte_timeout 500 ms)");
}

#[test]
fn an_idle_client_of_a_local_target_is_cut_at_the_first_byte_timeout_too() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_ca, mut west, mut east) = west_east(d);
    west.exports.push(("near".into(), echo_server(), vec![]));
    west.exports.push((
        "near-greets".into(),
        greeting_echo_server("remote\n".into()),
        vec![],
    ));
    let (near, greets) = (free_tcp(), free_tcp());
    east.imports.push(("near".into(), near));
    east.imports.push(("near-greets".into(), greets));
    // Both imports are served by targets in east's own region first.
    let local_greeter = greeting_echo_server("hello\n".into());
    east.service_lines
        .push(("near".into(), format!("local = \"{}\"", echo_server())));
    east.service_lines
        .push(("near-greets".into(), format!("local = \"{local_greeter}\"")));
    east.tunnel.push("first_byte_timeout = \"500ms\"".into());
    let _w = GatewayProcess::start(d, &west);
    let e = GatewayProcess::start(d, &east);
    e.wait_for_service("near");
    e.wait_for_service("near-greets");

    let cut_after = cut_while_silent(near);
    let log = e.wait_for_log("outcome=\"idle\"");
    assert!(
        log.contains("service=near") && log.contains("peer=\"local\""),
        "{log}"
    );

    // The local target speaks first (its greeting, not the remote one):
    // a byte moved, so the silent client stays.
    let mut listener = TcpStream::connect(greets).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut hello = [0u8; 6];
    listener.read_exact(&mut hello).unwrap();
    assert_eq!(&hello, b"hello\n");
    std::thread::sleep(Duration::from_millis(1200));
    listener.write_all(b"x").unwrap();
    let mut echo = [0u8; 1];
    listener.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"x");
    println!("idle client of a local target cut {cut_after:?} after it connected");
}

/// Connects to `import`, sends nothing, and returns how long until the
/// gateway cut the connection, which must be after the 500 ms
/// `first_byte_timeout` and well before 4 s.
fn cut_while_silent(import: std::net::SocketAddr) -> Duration {
    let mut idle = TcpStream::connect(import).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut b = [0u8; 1];
    let got = idle.read(&mut b);
    let cut_after = started.elapsed();
    assert!(
        matches!(got, Ok(0) | Err(_)) && cut_after < Duration::from_secs(4),
        "{got:?} after {cut_after:?}"
    );
    assert!(
        cut_after >= Duration::from_millis(400),
        "cut after {cut_after:?}"
    );
    cut_after
}
