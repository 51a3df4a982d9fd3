//! `strait token ...`: join tokens for new gateways.

use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context;
use strait_ca::{CertificateAuthority, SERVICE_ADDRESS_FILE, TokenPolicy, TokenStore};

use crate::args::TokenCreate;

pub fn create(args: TokenCreate) -> anyhow::Result<ExitCode> {
    let ca = CertificateAuthority::load(&args.ca)?;
    if let Some(ca_region) = ca.region() {
        anyhow::ensure!(
            ca_region == args.region,
            "{} is the regional CA of {ca_region}: it issues join tokens for {ca_region} only, not {}",
            args.ca.display(),
            args.region
        );
    }
    let addresses = if args.ca_address.is_empty() {
        let recorded = args.ca.join(SERVICE_ADDRESS_FILE);
        let text = std::fs::read_to_string(&recorded).with_context(|| {
            format!(
                "no CA service address: {} is missing (run `strait ca serve --ca {}` first, or pass --ca-address host:port)",
                recorded.display(),
                args.ca.display()
            )
        })?;
        text.split_whitespace().map(str::to_owned).collect()
    } else {
        args.ca_address.clone()
    };
    let policy = TokenPolicy {
        region: args.region.clone(),
        name_pattern: args.name.clone(),
        ttl: args.ttl,
        uses: args.uses,
    };
    let store = TokenStore::new(&args.ca);
    let (token, record) = store.create(
        &policy,
        addresses,
        strait_ca::root_pin(ca.root()),
        ca.trust_domain(),
        SystemTime::now(),
    )?;
    println!("{}", token.encode());
    eprintln!(
        "token {} for region {} (names {:?}), {} use(s), expires {}; CA at {}",
        record.id,
        record.region,
        record.name_pattern,
        record.uses_allowed,
        strait_ca::time::rfc3339(strait_ca::time::from_unix(record.expires_at as i64)),
        token.ca.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

pub fn list(ca: &std::path::Path) -> anyhow::Result<ExitCode> {
    let records = TokenStore::new(ca).list()?;
    if records.is_empty() {
        println!("no join tokens in {}", ca.display());
        return Ok(ExitCode::SUCCESS);
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    println!(
        "{:<14} {:<12} {:<12} {:>9}  EXPIRES",
        "ID", "REGION", "NAMES", "USES LEFT"
    );
    for r in records {
        let state = if r.expires_at <= now {
            " (expired)"
        } else {
            ""
        };
        println!(
            "{:<14} {:<12} {:<12} {:>4} of {:<2}  {}{state}",
            r.id,
            r.region,
            r.name_pattern,
            r.uses_left,
            r.uses_allowed,
            strait_ca::time::rfc3339(strait_ca::time::from_unix(r.expires_at as i64))
        );
    }
    Ok(ExitCode::SUCCESS)
}
