//! `strait ca ...`

use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context;
use strait_ca::{CaOptions, CertificateAuthority, DENY_FILE, DenyEntry, DenyList};
use strait_enroll::CaServiceOptions;

use crate::args::{BundleFormat, CaBundle, CaInit, CaIntermediate, CaRevoke, CaServe};

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

pub fn intermediate(args: CaIntermediate) -> anyhow::Result<ExitCode> {
    let ca = CertificateAuthority::init_regional(
        &args.root,
        &args.dir,
        &args.region,
        args.validity,
        args.key_type.into(),
        SystemTime::now(),
    )
    .with_context(|| {
        format!(
            "cannot make the regional CA of {} in {}",
            args.region,
            args.dir.display()
        )
    })?;
    println!(
        "created the regional CA of {} for trust domain {} in {} (valid until {})",
        args.region,
        ca.trust_domain(),
        args.dir.display(),
        strait_ca::time::rfc3339(ca.not_after())
    );
    println!("  intermediate.pem      regional CA certificate, signed by the root");
    println!("  intermediate-key.pem  regional CA private key (0600)");
    println!("  ca.pem, bundle.pem    the root and the bundle peers trust");
    println!(
        "it issues gateway identities of {} only; serve it in that region with `strait ca serve --ca {}`, and keep {} offline",
        args.region,
        args.dir.display(),
        args.root.join("ca-key.pem").display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn serve(args: CaServe) -> anyhow::Result<ExitCode> {
    super::gateway::init_logging(args.runtime.log_format);
    // Fail before binding if the directory holds no usable CA.
    let ca = CertificateAuthority::load(&args.ca)
        .with_context(|| format!("cannot serve the CA in {}", args.ca.display()))?;
    let runtime = super::gateway::runtime(&args.runtime)?;
    runtime.block_on(async {
        let service = strait_enroll::serve(CaServiceOptions {
            dir: args.ca.clone(),
            listen: args.listen,
            validity: args.validity,
        })
        .await?;
        let advertise = args
            .advertise
            .clone()
            .unwrap_or_else(|| service.local_addr().to_string());
        if args.advertise.is_none() && service.local_addr().ip().is_unspecified() {
            tracing::warn!(
                "listening on {} without --advertise: new join tokens carry an address no other machine can dial; pass --advertise host:port (or --ca-address to `token create`)",
                service.local_addr()
            );
        }
        strait_ca::files::write(
            &args.ca.join(strait_ca::SERVICE_ADDRESS_FILE),
            format!("{advertise}\n").as_bytes(),
            strait_ca::files::PUBLIC_MODE,
            strait_ca::Overwrite::Replace,
        )?;
        tracing::info!(
            trust_domain = %ca.trust_domain(),
            %advertise,
            validity = %humantime::format_duration(args.validity),
            "CA service ready; new join tokens point at {advertise}"
        );
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
        service.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

pub fn revoke(args: CaRevoke) -> anyhow::Result<ExitCode> {
    let ca = CertificateAuthority::load(&args.ca)?;
    let path = args.ca.join(DENY_FILE);
    let mut deny = DenyList::load(&path)?;
    let mut entries = Vec::new();
    for s in &args.what.serial {
        let serial = strait_ca::normalize_serial(s)
            .with_context(|| format!("--serial {s:?} is not a hex serial"))?;
        entries.push(DenyEntry::Serial(serial));
    }
    for id in &args.what.id {
        // No certificate of this CA can carry another trust domain's ID.
        anyhow::ensure!(
            id.trust_domain() == ca.trust_domain(),
            "--id {id} is not of this CA's trust domain {}; nothing it issues carries that ID",
            ca.trust_domain()
        );
        entries.push(DenyEntry::Id(id.clone()));
    }
    for cert in &args.what.cert {
        let der = strait_ca::files::read_certificates(cert)?;
        let serial = strait_ca::certificate_serial(&der[0])
            .with_context(|| format!("{}: cannot read its serial", cert.display()))?;
        entries.push(DenyEntry::Serial(serial));
    }
    for entry in entries {
        if deny.insert(entry.clone()) {
            println!("revoked: {entry}");
        } else {
            println!("already revoked: {entry}");
        }
    }
    // Signed, so that gateways can pass it on to each other and a gateway
    // cut off from this CA still learns of it from its peers.
    let signed = ca.sign_deny_list(&deny, SystemTime::now())?;
    strait_ca::files::write(
        &path,
        signed.as_bytes(),
        strait_ca::files::PUBLIC_MODE,
        strait_ca::Overwrite::Replace,
    )?;
    println!(
        "{} now holds {} entr{}, signed by this CA; gateways get it at their next bundle refresh, and from each other",
        path.display(),
        deny.len(),
        if deny.len() == 1 { "y" } else { "ies" }
    );
    Ok(ExitCode::SUCCESS)
}

/// Prints the CA's trust bundle for a partner trust domain.
pub fn bundle(args: CaBundle) -> anyhow::Result<ExitCode> {
    let path = args.ca.join(strait_ca::CA_BUNDLE);
    anyhow::ensure!(
        path.exists(),
        "{}: no trust bundle here; is {} a CA directory (strait ca init)?",
        path.display(),
        args.ca.display()
    );
    let bundle = strait_ca::TrustBundle::load(&path)?;
    match args.format {
        BundleFormat::Pem => print!("{}", bundle.to_pem()),
        BundleFormat::Spiffe => print!("{}", strait_ca::federation::to_spiffe_json(&bundle, 300)?),
    }
    Ok(ExitCode::SUCCESS)
}
