//! `strait ca ...`

use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context;
use strait_ca::{CaOptions, CertificateAuthority};

use crate::args::CaInit;

pub fn init(args: CaInit) -> anyhow::Result<ExitCode> {
    let mut opts = CaOptions::new(args.trust_domain.clone());
    opts.key_type = args.key_type.into();
    opts.intermediate = args.intermediate;
    opts.validity = args.validity;
    let ca = CertificateAuthority::init(&args.dir, &opts, SystemTime::now())
        .with_context(|| format!("cannot create a CA in {}", args.dir.display()))?;
    let until = strait_ca::time::rfc3339(ca.not_after());
    println!(
        "created CA for trust domain {} in {} ({}, valid until {until})",
        ca.trust_domain(),
        args.dir.display(),
        opts.key_type
    );
    println!("  ca.pem                root certificate");
    println!("  ca-key.pem            root private key (0600)");
    if args.intermediate {
        println!("  intermediate.pem      intermediate certificate, signs everything");
        println!("  intermediate-key.pem  intermediate private key (0600)");
        println!("  (ca-key.pem is not needed to issue: keep it offline)");
    }
    println!("  bundle.pem            trust bundle for gateways");
    for fp in ca.bundle().fingerprints() {
        println!("root SHA-256 fingerprint: {fp}");
    }
    Ok(ExitCode::SUCCESS)
}
