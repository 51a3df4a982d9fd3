//! Certificates issued per second by strait-ca, key generation included,
//! for each key type, on one thread (so one core).
//!
//! `cargo run --release -p strait-bench --bin cert-issue [-- --seconds S]`
//! issues for S seconds (default 2) per key type, and prints a table with
//! the rate and per-certificate latency percentiles.

use std::time::{Duration, Instant, SystemTime};

use strait_ca::{CaOptions, CertificateAuthority, KeyType, SpiffeId, SvidRequest, TrustDomain};

fn main() {
    let seconds = strait_bench::seconds_arg(2.0);
    let td = TrustDomain::parse("example.org").expect("static trust domain");
    println!(
        "strait-ca issuance, one thread, {seconds:.1} s per row (key generation + signing + PEM)"
    );
    println!();
    println!("| leaf key | CA key | certificates | per second | p50 us | p99 us |");
    println!("|---|---|---:|---:|---:|---:|");
    for key_type in KeyType::ALL {
        let mut opts = CaOptions::new(td.clone());
        opts.key_type = key_type;
        let (ca, _) = CertificateAuthority::create(&opts, SystemTime::now()).expect("create CA");
        let mut latencies = Vec::new();
        let start = Instant::now();
        let budget = Duration::from_secs_f64(seconds);
        let mut n = 0u64;
        // Bounded by time and by count, whichever ends first.
        while start.elapsed() < budget && n < 1_000_000 {
            let id = SpiffeId::gateway(&td, "eu-west", &format!("gw-{n}")).expect("valid id");
            let t = Instant::now();
            let svid = ca
                .issue(&SvidRequest::new(id), key_type, SystemTime::now())
                .expect("issue");
            let pem = svid.chain_pem();
            std::hint::black_box((pem, svid.key_pem));
            latencies.push(t.elapsed());
            n += 1;
        }
        let elapsed = start.elapsed().as_secs_f64();
        latencies.sort();
        let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_micros();
        println!(
            "| {key_type} | {key_type} | {n} | {:.0} | {} | {} |",
            n as f64 / elapsed,
            pct(0.50),
            pct(0.99)
        );
    }
}
