//! `strait cert ...`

use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context;
use strait_ca::files::{self, KEY_MODE, Output, PUBLIC_MODE};
use strait_ca::{
    CSR_FILE, CertificateAuthority, IssuedSvid, KEY_FILE, KeyType, Overwrite, PeerRequirement,
    PeerRole, SpiffeId, SvidRequest, TrustBundle, generate_csr, inspect_file, verify_chain,
};

use crate::args::{CertCsr, CertInspect, CertIssue, CertSign, CertVerify, IssueOptions, RoleArg};
use crate::commands::time_left;

fn overwrite(force: bool) -> Overwrite {
    if force {
        Overwrite::Replace
    } else {
        Overwrite::Never
    }
}

fn request(id: SpiffeId, opts: &IssueOptions) -> SvidRequest {
    let mut req = SvidRequest::new(id);
    req.dns_names = opts.dns.clone();
    req.ttl = opts.ttl;
    req
}

fn load_ca(dir: &Path) -> anyhow::Result<CertificateAuthority> {
    CertificateAuthority::load(dir)
        .with_context(|| format!("cannot load the CA in {}", dir.display()))
}

fn report(svid: &IssuedSvid, out: &Path) {
    println!(
        "issued {} (valid until {})",
        svid.id,
        strait_ca::time::rfc3339(svid.not_after)
    );
    println!("  {}", out.join(strait_ca::CERT_FILE).display());
    if svid.key_pem.is_some() {
        println!("  {} (0600)", out.join(KEY_FILE).display());
    }
    println!("  {}", out.join(strait_ca::BUNDLE_FILE).display());
}

pub fn issue(args: CertIssue) -> anyhow::Result<ExitCode> {
    let ca = load_ca(&args.ca)?;
    let id = match (&args.spiffe_id, &args.region, &args.name) {
        (Some(id), ..) => id.clone(),
        (None, Some(region), Some(name)) => SpiffeId::gateway(ca.trust_domain(), region, name)
            .context("--region and --name must be valid SPIFFE path segments")?,
        _ => anyhow::bail!("give either --spiffe-id, or --gateway with --region and --name"),
    };
    let svid = ca.issue(
        &request(id, &args.common),
        args.key_type.into(),
        SystemTime::now(),
    )?;
    svid.write_to(&args.common.out, overwrite(args.common.force))?;
    report(&svid, &args.common.out);
    Ok(ExitCode::SUCCESS)
}

pub fn csr(args: CertCsr) -> anyhow::Result<ExitCode> {
    let key_type: KeyType = args.key_type.into();
    let (key_pem, csr_pem) = generate_csr(&args.spiffe_id, key_type)?;
    let key_path = args.out.join(KEY_FILE);
    let csr_path = args.out.join(CSR_FILE);
    files::create_dir(&args.out)?;
    files::write_set(
        &[
            Output {
                path: key_path.clone(),
                contents: key_pem,
                mode: KEY_MODE,
            },
            Output {
                path: csr_path.clone(),
                contents: csr_pem,
                mode: PUBLIC_MODE,
            },
        ],
        overwrite(args.force),
    )?;
    println!("made a {key_type} key and a CSR for {}", args.spiffe_id);
    println!("  {} (0600, stays here)", key_path.display());
    println!("  {} (send this to the CA)", csr_path.display());
    Ok(ExitCode::SUCCESS)
}

pub fn sign(args: CertSign) -> anyhow::Result<ExitCode> {
    let ca = load_ca(&args.ca)?;
    let csr_pem = std::fs::read_to_string(&args.csr)
        .with_context(|| format!("cannot read {}", args.csr.display()))?;
    let svid = ca.sign_csr(
        &csr_pem,
        &args.csr,
        &request(args.spiffe_id, &args.common),
        SystemTime::now(),
    )?;
    svid.write_to(&args.common.out, overwrite(args.common.force))?;
    report(&svid, &args.common.out);
    Ok(ExitCode::SUCCESS)
}

pub fn inspect(args: CertInspect) -> anyhow::Result<ExitCode> {
    let infos = inspect_file(&args.file, SystemTime::now())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&infos)?);
        return Ok(ExitCode::SUCCESS);
    }
    let total = infos.len();
    for (i, info) in infos.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!(
            "certificate {} of {total} in {}",
            i + 1,
            args.file.display()
        );
        let none = || "-".to_owned();
        let list = |v: &[String]| if v.is_empty() { none() } else { v.join(", ") };
        let rows = [
            ("subject", info.subject.clone()),
            ("spiffe id", info.spiffe_id.clone().unwrap_or_else(none)),
            ("issuer", info.issuer.clone()),
            ("serial", info.serial.clone()),
            ("not before", info.not_before.clone()),
            (
                "not after",
                format!("{} ({})", info.not_after, time_left(info.seconds_left)),
            ),
            ("key type", info.key_type.clone()),
            ("ca", if info.is_ca { "yes" } else { "no" }.to_owned()),
            ("key usage", list(&info.key_usage)),
            ("ext key usage", list(&info.extended_key_usage)),
            ("uri names", list(&info.uri_sans)),
            ("dns names", list(&info.dns_sans)),
            ("sha256", info.sha256_fingerprint.clone()),
        ];
        for (label, value) in rows {
            println!("  {label:<14} {value}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn verify(args: CertVerify) -> anyhow::Result<ExitCode> {
    let bundle = TrustBundle::load(&args.bundle)?;
    let chain = files::read_certificates(&args.file)?;
    let now = SystemTime::now();
    // Without --trust-domain the leaf's own trust domain is required, so the
    // check is the chain and the SVID rules alone.
    let td = match &args.trust_domain {
        Some(td) => td.clone(),
        None => match strait_ca::check_leaf(&chain[0], now) {
            Ok(id) => id.trust_domain().clone(),
            Err(reason) => return Ok(rejected(&args.file, &reason)),
        },
    };
    let requirement = match (&args.region, args.gateway) {
        (Some(region), _) => PeerRequirement::GatewayInRegion(td, region.clone()),
        (None, true) => PeerRequirement::Gateway(td),
        (None, false) => PeerRequirement::AnyInTrustDomain(td),
    };
    let role = match args.role {
        RoleArg::Client => PeerRole::Client,
        RoleArg::Server => PeerRole::Server,
    };
    match verify_chain(&chain, &bundle, &requirement, role, now) {
        Ok(id) => {
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        Err(reason) => Ok(rejected(&args.file, &reason)),
    }
}

fn rejected(file: &Path, reason: &strait_ca::VerifyError) -> ExitCode {
    eprintln!("{}: rejected: {reason}", file.display());
    ExitCode::FAILURE
}
