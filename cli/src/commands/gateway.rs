//! `strait gateway ...` and `strait tunnel ...`: the long-running commands.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use strait_gateway::GatewayConfig;
use strait_gateway::config::{IdentityPaths, ImportConfig, PeerConfig, TunnelSettings};
use strait_gateway::tls::TlsIdentity;

use crate::args::{GatewayJoin, GatewayRun, LogFormat, RuntimeArgs, TunnelOpen};

pub fn run(args: GatewayRun) -> anyhow::Result<ExitCode> {
    let config = GatewayConfig::load(&args.config)?;
    serve(config, &args.runtime, Some(args.config.clone()))
}

pub fn check(path: &Path, skip_identity: bool) -> anyhow::Result<ExitCode> {
    if skip_identity {
        let config = GatewayConfig::load_without_files(path)?;
        println!("{}: ok (identity files not checked)", path.display());
        let name = if config.name.is_empty() {
            "(named by its certificate)"
        } else {
            &config.name
        };
        println!("  gateway  {name} in {}", config.region);
        print_config(&config);
        return Ok(ExitCode::SUCCESS);
    }
    let mut config = GatewayConfig::load(path)?;
    let tls = TlsIdentity::load(&config.identity)?.with_federation(&config.federation)?;
    config.take_name_from(tls.gateway_name_region().map(|(name, _)| name));
    tls.require_gateway(&config.name, &config.region)?;
    println!("{}: ok", path.display());
    println!(
        "  gateway  {} in {} ({})",
        config.name,
        config.region,
        tls.id()
    );
    println!("  quic     {}/udp, admin {}", config.listen, config.admin);
    let left = tls
        .identity
        .not_after
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    println!(
        "  cert     valid for {}",
        crate::commands::time_left(left.as_secs() as i64)
    );
    print_config(&config);
    if let Some(mode) = TlsIdentity::loose_key_mode(&config.identity) {
        println!(
            "  warning  {} has mode {mode:04o}; others can read the private key (chmod 600 it)",
            config.identity.key.display()
        );
    }
    for e in &config.exports {
        for pattern in strait_gateway::export::foreign_patterns(e, tls.trust_domain().as_str()) {
            println!(
                "  warning  export {}: {pattern} is not of trust domain {}; it never matches",
                e.service,
                tls.trust_domain()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_config(config: &GatewayConfig) {
    if let Some(r) = &config.renewal {
        println!(
            "  renewal  through the CA service at {} (bundle refresh every {})",
            r.ca_service,
            humantime::format_duration(r.refresh)
        );
    }
    for f in &config.federation {
        println!(
            "  federate {} (bundle {})",
            f.trust_domain,
            f.bundle.display()
        );
    }
    for p in &config.peers {
        let region = p.region.as_deref().unwrap_or("any region");
        match &p.trust_domain {
            Some(td) => println!("  peer     {region} of {td} at {}", p.addresses.join(", ")),
            None => println!("  peer     {region} at {}", p.addresses.join(", ")),
        }
    }
    for e in &config.exports {
        let allow = if e.allow.is_empty() {
            "any gateway of the trust domain".to_owned()
        } else {
            e.allow.join(", ")
        };
        println!("  export   {} -> {} (allow: {allow})", e.service, e.target);
    }
    for i in &config.imports {
        println!("  import   {} on {}", i.service, i.listen);
    }
}

pub fn join(args: GatewayJoin) -> anyhow::Result<ExitCode> {
    let text = match (&args.token, &args.token_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the join token from {}", f.display()))?,
        (None, None) => anyhow::bail!("pass --token or --token-file"),
    };
    let token = strait_ca::JoinToken::decode(&text)?;
    let name = match &args.name {
        Some(n) => n.clone(),
        None => host_name().context(
            "no gateway name: pass --name (or set STRAIT_GATEWAY_NAME); this machine's host name could not be read",
        )?,
    };
    let paths = IdentityPaths::in_dir(&args.out);
    if paths.cert.exists() && !args.force {
        if args.if_missing {
            match TlsIdentity::load(&paths) {
                Ok(tls) if tls.identity.not_after > std::time::SystemTime::now() => {
                    println!(
                        "{} already holds {} (valid until {}); not joining again",
                        args.out.display(),
                        tls.id(),
                        strait_ca::time::rfc3339(tls.identity.not_after)
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                Ok(_) => println!(
                    "{} holds an expired certificate; joining again",
                    args.out.display()
                ),
                Err(e) => println!(
                    "{} holds an unusable identity ({e}); joining again",
                    args.out.display()
                ),
            }
        } else {
            anyhow::bail!(
                "{} already exists; refusing to overwrite it (pass --force to replace it, or --if-missing to keep it)",
                paths.cert.display()
            );
        }
    }
    // The CA spends a token use when it issues: make sure the identity
    // can be written before asking.
    strait_ca::files::check_writable_dir(&args.out)
        .with_context(|| format!("cannot write the identity into {}", args.out.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let enrolled = runtime.block_on(strait_enroll::join(&token, &name, args.region.as_deref()))?;
    enrolled.write(&paths, strait_ca::Overwrite::Replace)?;
    let id = &enrolled.identity;
    println!(
        "joined as {} (valid until {})",
        id.id,
        strait_ca::time::rfc3339(id.not_after)
    );
    println!("  {}  certificate chain", paths.cert.display());
    println!("  {}  private key (0600), made here", paths.key.display());
    println!("  {}  trust bundle", paths.bundle.display());
    println!("  {}  deny list", paths.deny.display());
    println!("for the gateway configuration:");
    println!("  [identity]");
    println!("  cert = {:?}", paths.cert.display().to_string());
    println!("  key = {:?}", paths.key.display().to_string());
    println!("  bundle = {:?}", paths.bundle.display().to_string());
    println!("  ca_service = {:?}", token.ca[0]);
    Ok(ExitCode::SUCCESS)
}

pub fn tunnel_open(args: TunnelOpen) -> anyhow::Result<ExitCode> {
    let identity = IdentityPaths {
        cert: args.cert.clone(),
        key: args.key.clone(),
        bundle: args.bundle.clone(),
        deny: args.bundle.with_file_name(strait_ca::DENY_FILE),
    };
    let tls = TlsIdentity::load(&identity)?;
    let (name, region) = tls.gateway_name_region().with_context(|| {
        format!(
            "{} holds {}, not a gateway identity",
            args.cert.display(),
            tls.id()
        )
    })?;
    let config = GatewayConfig {
        name,
        region,
        listen: "0.0.0.0:0".parse().expect("static address"),
        advertise: None,
        relay: true,
        admin: "127.0.0.1:0".parse().expect("static address"),
        identity,
        federation: Vec::new(),
        renewal: None,
        peers: vec![PeerConfig {
            region: args.peer_region.clone(),
            trust_domain: None,
            addresses: vec![args.peer.clone()],
        }],
        exports: Vec::new(),
        imports: vec![ImportConfig {
            service: args.service.clone(),
            listen: args.listen,
            prefer: Vec::new(),
            limits: Default::default(),
            mtls: false,
            idempotent: false,
            local: None,
        }],
        tunnel: TunnelSettings::default(),
        health: Default::default(),
        target_check: std::time::Duration::from_secs(1),
        hold_down: std::time::Duration::from_secs(5),
        drain_grace: std::time::Duration::from_secs(30),
    };
    serve(config, &args.runtime, None)
}

fn serve(
    config: GatewayConfig,
    rt: &RuntimeArgs,
    path: Option<std::path::PathBuf>,
) -> anyhow::Result<ExitCode> {
    init_logging(rt.log_format);
    if let Some(mode) = TlsIdentity::loose_key_mode(&config.identity) {
        tracing::warn!(key = %config.identity.key.display(),
            "the private key has mode {mode:04o}; others can read it (chmod 600 it)");
    }
    if strait_gateway::metrics::install().is_none() {
        tracing::warn!("metrics recorder could not be installed; /metrics is off");
    }
    let runtime = runtime(rt)?;
    runtime.block_on(async {
        let mut gateway = strait_gateway::start(config).await?;
        for (service, addr) in gateway.import_addrs() {
            tracing::info!(%service, listen = %addr, "import listening");
        }
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let mut seen = path.as_deref().and_then(modified);
        let mut poll = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            let reason = tokio::select! {
                r = tokio::signal::ctrl_c() => { r?; break; }
                _ = term.recv() => break,
                _ = hup.recv() => "SIGHUP",
                _ = poll.tick() => {
                    let now = path.as_deref().and_then(modified);
                    if now == seen { continue; }
                    "the file changed"
                }
            };
            let Some(path) = &path else {
                tracing::warn!("{reason}, but this gateway has no configuration file to reload");
                continue;
            };
            seen = modified(path);
            reload(&mut gateway, path, reason).await;
        }
        gateway.drain().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// Loads the configuration again and applies it; a file that does not
/// validate (or asks for a change that needs a restart) is refused, logged
/// and counted, and the running configuration stays.
async fn reload(
    gateway: &mut strait_gateway::RunningGateway,
    path: &std::path::Path,
    reason: &str,
) {
    let events = gateway.events().clone();
    let result = match GatewayConfig::load(path) {
        Ok(config) => gateway.reload(config).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(s) => {
            let detail = format!(
                "{reason}: imports +{} -{}, exports {}, peer addresses +{} -{}{}",
                s.imports_added,
                s.imports_removed,
                if s.exports_changed {
                    "changed"
                } else {
                    "unchanged"
                },
                s.peers_added,
                s.peers_removed,
                if s.federation_changed {
                    ", federated trust domains changed"
                } else {
                    ""
                }
            );
            events.record("config_reloaded", detail.clone());
            tracing::info!("configuration reloaded ({detail})");
        }
        Err(e) => {
            let e = e.with_causes();
            metrics::counter!(strait_gateway::metrics::CONFIG_RELOADS_FAILED).increment(1);
            events.record("config_reload_failed", e.clone());
            tracing::error!("configuration not reloaded ({reason}); the running one stays: {e}");
        }
    }
}

/// This machine's host name, as the kernel has it.
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// The tokio runtime of a long-running command: one worker per core unless
/// told otherwise.
pub(crate) fn runtime(rt: &RuntimeArgs) -> std::io::Result<tokio::runtime::Runtime> {
    let workers = rt
        .worker_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
}

pub(crate) fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
