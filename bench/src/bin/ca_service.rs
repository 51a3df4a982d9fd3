//! The CA service under load: joins (token and CSR) and renewals (mutual
//! TLS and CSR) per second over loopback QUIC, each on a new connection
//! with a new P-256 key made by the client, as gateways do.
//!
//! `cargo run --release -p strait-bench --bin ca-service [-- --seconds S]`
//! runs each row for S seconds (default 3) and prints a table. Client and
//! service share this process and its two cores, so the rates are a floor.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use strait_ca::{
    CaOptions, CertificateAuthority, Identity, IdentityPaths, TokenPolicy, TokenStore, TrustBundle,
    TrustDomain,
};
use strait_enroll::{CaServiceOptions, serve};

fn pct(lat: &mut [Duration], p: f64) -> u128 {
    lat.sort();
    lat[((lat.len() - 1) as f64 * p) as usize].as_micros()
}

fn main() {
    let seconds = strait_bench::seconds_arg(3.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(Duration::from_secs_f64(seconds)));
}

async fn run(budget: Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_dir = dir.path().join("ca");
    let td = TrustDomain::parse("example.org").expect("static trust domain");
    let ca = CertificateAuthority::init(&ca_dir, &CaOptions::new(td.clone()), SystemTime::now())
        .expect("CA");
    let service = serve(CaServiceOptions {
        dir: ca_dir.clone(),
        listen: "127.0.0.1:0".parse().expect("static"),
        validity: Duration::from_secs(24 * 3600),
    })
    .await
    .expect("CA service");
    let addr = service.local_addr().to_string();
    let (token, _) = TokenStore::new(&ca_dir)
        .create(
            &TokenPolicy {
                region: "eu-west".into(),
                name_pattern: "*".into(),
                ttl: Duration::from_secs(3600),
                uses: 1_000_000,
            },
            vec![addr.clone()],
            strait_ca::root_pin(ca.root()),
            &td,
            SystemTime::now(),
        )
        .expect("token");

    println!(
        "CA service over loopback QUIC, {:.1} s per row, new connection and P-256 key per request",
        budget.as_secs_f64()
    );
    println!();
    println!("| request | concurrency | done | per second | p50 us | p99 us |");
    println!("|---|---:|---:|---:|---:|---:|");

    // Joins, one at a time: each spends a use of the token (a file
    // rewritten with fsync under the service's token lock).
    let mut lat = Vec::new();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget && n < 100_000 {
        let t = Instant::now();
        strait_enroll::join(&token, &format!("gw-{n}"), None)
            .await
            .expect("join");
        lat.push(t.elapsed());
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    println!(
        "| join | 1 | {n} | {rate:.0} | {} | {} |",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );

    // Renewals with a joined identity.
    let enrolled = strait_enroll::join(&token, "renewer", None)
        .await
        .expect("join");
    let id_dir = dir.path().join("renewer");
    let paths = IdentityPaths::in_dir(&id_dir);
    enrolled
        .write(&paths, strait_ca::Overwrite::Never)
        .expect("write identity");
    let identity = Arc::new(Identity::load(&paths.cert, &paths.key).expect("load identity"));
    let bundle = Arc::new(TrustBundle::load(&paths.bundle).expect("load bundle"));
    for concurrency in [1usize, 16] {
        let done = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (identity, bundle) = (identity.clone(), bundle.clone());
            let (addr, done) = (addr.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                while start.elapsed() < budget && done.load(Ordering::Relaxed) < 100_000 {
                    let t = Instant::now();
                    strait_enroll::renew(&addr, &identity, &bundle)
                        .await
                        .expect("renew");
                    lat.push(t.elapsed());
                    done.fetch_add(1, Ordering::Relaxed);
                }
                lat
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.expect("task"));
        }
        let n = done.load(Ordering::Relaxed);
        let rate = n as f64 / start.elapsed().as_secs_f64();
        println!(
            "| renew | {concurrency} | {n} | {rate:.0} | {} | {} |",
            pct(&mut lat, 0.5),
            pct(&mut lat, 0.99)
        );
    }
    service.shutdown().await;
}
