//! `strait ca` and `strait cert` as a user runs them: real binary, real files.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use support::{ca_and_gateway, strait, strait_argv};

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn issue_inspect_and_verify_a_gateway_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ca_and_gateway(dir, false, "eu-west", "gw-1");
    assert_eq!(mode(&dir.join("ca/ca-key.pem")), 0o600);
    assert_eq!(mode(&dir.join("gw-1/key.pem")), 0o600);

    let out = strait(dir, "cert verify --bundle gw-1/bundle.pem gw-1/cert.pem").ok();
    assert_eq!(
        out.stdout.trim(),
        "spiffe://example.org/region/eu-west/gateway/gw-1"
    );
    strait(
        dir,
        "cert verify --bundle gw-1/bundle.pem --region eu-west --role server gw-1/cert.pem",
    )
    .ok();
    let err = strait(
        dir,
        "cert verify --bundle gw-1/bundle.pem --region us-east gw-1/cert.pem",
    )
    .failed();
    assert!(err.contains("not a gateway of region us-east"), "{err}");

    let text = strait(dir, "cert inspect gw-1/cert.pem").ok().stdout;
    for needle in [
        "spiffe://example.org/region/eu-west/gateway/gw-1",
        "ECDSA P-256",
        "serverAuth, clientAuth",
        "left)",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    let json = strait(dir, "cert inspect --json gw-1/cert.pem").ok().stdout;
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    let leaf = &parsed[0];
    assert_eq!(
        leaf["spiffe_id"],
        "spiffe://example.org/region/eu-west/gateway/gw-1"
    );
    assert_eq!(leaf["is_ca"], false);
    assert_eq!(leaf["key_usage"], serde_json::json!(["digitalSignature"]));
    assert_eq!(
        leaf["sha256_fingerprint"].as_str().unwrap().len(),
        32 * 3 - 1
    );
}

#[test]
fn workload_certificate_with_other_key_types() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    strait(
        dir,
        "ca init --trust-domain example.org --dir ca --key-type ed25519",
    )
    .ok();
    strait(dir, "cert issue --ca ca --spiffe-id spiffe://example.org/ns/shop/sa/web --out web --key-type p384 --ttl 1h")
    .ok();
    let info = strait(dir, "cert inspect --json web/cert.pem").ok().stdout;
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info[0]["key_type"], "ECDSA P-384");
    assert!(info[0]["seconds_left"].as_i64().unwrap() <= 3600);
    let root: serde_json::Value =
        serde_json::from_str(&strait(dir, "cert inspect --json ca/ca.pem").ok().stdout).unwrap();
    assert_eq!(root[0]["key_type"], "Ed25519");
    assert_eq!(root[0]["is_ca"], true);
}

#[test]
fn csr_flow_keeps_the_key_local_and_the_ca_decides_the_id() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    strait(
        dir,
        "ca init --trust-domain example.org --dir ca --intermediate",
    )
    .ok();
    strait(
        dir,
        "cert csr --spiffe-id spiffe://example.org/ns/shop/sa/admin --out req",
    )
    .ok();
    assert_eq!(mode(&dir.join("req/key.pem")), 0o600);
    strait(dir, "cert sign --ca ca --csr req/csr.pem --spiffe-id spiffe://example.org/ns/shop/sa/web --out req")
    .ok();
    let out = strait(dir, "cert verify --bundle req/bundle.pem req/cert.pem").ok();
    assert_eq!(out.stdout.trim(), "spiffe://example.org/ns/shop/sa/web");
}

#[test]
fn reinit_over_an_existing_ca_is_refused_and_keys_are_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    strait(dir, "ca init --trust-domain example.org --dir ca").ok();
    let key = fs::read(dir.join("ca/ca-key.pem")).unwrap();
    let cert = fs::read(dir.join("ca/ca.pem")).unwrap();
    let err = strait(
        dir,
        "ca init --trust-domain other.org --dir ca --intermediate",
    )
    .failed();
    assert!(err.contains("a CA already exists in ca"), "{err}");
    assert_eq!(fs::read(dir.join("ca/ca-key.pem")).unwrap(), key);
    assert_eq!(fs::read(dir.join("ca/ca.pem")).unwrap(), cert);
    assert!(!dir.join("ca/intermediate.pem").exists());
}

#[test]
fn garbage_and_truncated_pem_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ca_and_gateway(dir, false, "eu-west", "gw-1");
    fs::write(dir.join("garbage.pem"), b"\x00\x01 not pem at all").unwrap();
    let pem = fs::read_to_string(dir.join("gw-1/cert.pem")).unwrap();
    fs::write(dir.join("truncated.pem"), &pem[..pem.len() - 40]).unwrap();

    let err = strait(dir, "cert inspect garbage.pem").failed();
    assert!(
        err.contains("garbage.pem") && err.contains("no \"BEGIN CERTIFICATE\""),
        "{err}"
    );
    let err = strait(dir, "cert verify --bundle gw-1/bundle.pem truncated.pem").failed();
    assert!(
        err.contains("truncated.pem") && err.contains("truncated PEM"),
        "{err}"
    );
    let err = strait(dir, "cert verify --bundle truncated.pem gw-1/cert.pem").failed();
    assert!(err.contains("truncated.pem"), "{err}");
    fs::write(
        dir.join("ca/ca-key.pem"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n",
    )
    .unwrap();
    let err = strait(
        dir,
        "cert issue --ca ca --spiffe-id spiffe://example.org/x --out x",
    )
    .failed();
    assert!(err.contains("ca/ca-key.pem"), "{err}");
}

#[test]
fn invalid_spiffe_id_names_the_rule() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    strait(dir, "ca init --trust-domain example.org --dir ca").ok();
    for (id, rule) in [
        ("spiffe://example.org/a//b", "a path segment is empty"),
        ("spiffe://Example.org/a", "the trust domain may hold only"),
        ("spiffe://example.org:443/a", "must not carry a port"),
        ("https://example.org/a", "the scheme must be"),
        ("spiffe://example.org/a?b=c", "must not carry a query"),
    ] {
        let err = strait(dir, &format!("cert issue --ca ca --spiffe-id {id} --out x")).failed();
        assert!(err.contains(rule), "{id}: {err}");
    }
    let err = strait_argv(
        dir,
        &[
            "cert",
            "issue",
            "--ca",
            "ca",
            "--gateway",
            "--region",
            "eu west",
            "--name",
            "a",
            "--out",
            "x",
        ],
    )
    .failed();
    assert!(err.contains("may hold only"), "{err}");
    let err = strait(
        dir,
        "cert issue --ca ca --spiffe-id spiffe://other.org/x --out x",
    )
    .failed();
    assert!(
        err.contains("not in this CA's trust domain example.org"),
        "{err}"
    );
}

#[test]
fn ttl_beyond_the_cas_validity_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    strait(
        dir,
        "ca init --trust-domain example.org --dir ca --validity 2h",
    )
    .ok();
    let err = strait(
        dir,
        "cert issue --ca ca --spiffe-id spiffe://example.org/x --out x --ttl 3h",
    )
    .failed();
    assert!(
        err.contains("after the issuing CA's certificate expires"),
        "{err}"
    );
    assert!(!dir.join("x/cert.pem").exists());
    let err = strait(
        dir,
        "cert issue --ca ca --spiffe-id spiffe://example.org/x --out x --ttl soon",
    )
    .failed();
    assert!(err.contains("--ttl"), "{err}");
}

#[test]
fn csr_whose_signature_does_not_verify_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    strait(dir, "ca init --trust-domain example.org --dir ca").ok();
    strait(
        dir,
        "cert csr --spiffe-id spiffe://example.org/ns/a/sa/b --out req",
    )
    .ok();
    let csr = fs::read_to_string(dir.join("req/csr.pem")).unwrap();
    let mut der = pem::parse(&csr).unwrap().into_contents();
    *der.last_mut().unwrap() ^= 0x55;
    fs::write(
        dir.join("req/csr.pem"),
        pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der)),
    )
    .unwrap();
    let err = strait(
        dir,
        "cert sign --ca ca --csr req/csr.pem --spiffe-id spiffe://example.org/ns/a/sa/b --out req",
    )
    .failed();
    assert!(
        err.contains("req/csr.pem: the CSR's signature does not verify"),
        "{err}"
    );
    assert!(!dir.join("req/cert.pem").exists());
}

#[test]
fn ca_key_that_does_not_match_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ca_and_gateway(dir, false, "eu-west", "gw-1");
    fs::copy(dir.join("gw-1/key.pem"), dir.join("ca/ca-key.pem")).unwrap();
    let err = strait(
        dir,
        "cert issue --ca ca --spiffe-id spiffe://example.org/x --out x",
    )
    .failed();
    assert!(
        err.contains("private key ca/ca-key.pem does not match the certificate ca/ca.pem"),
        "{err}"
    );
}

#[test]
fn certificate_from_another_ca_fails_verification() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ca_and_gateway(dir, false, "eu-west", "gw-1");
    strait(dir, "ca init --trust-domain example.org --dir other-ca").ok();
    let run = strait(
        dir,
        "cert verify --bundle other-ca/bundle.pem gw-1/cert.pem",
    );
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .contains("gw-1/cert.pem: rejected: unknown issuer"),
        "{}",
        run.stderr
    );
    let run = strait(
        dir,
        "cert verify --bundle gw-1/bundle.pem --trust-domain other.org gw-1/cert.pem",
    );
    assert!(
        run.stderr.contains("is not in trust domain other.org"),
        "{}",
        run.stderr
    );
}

#[test]
fn help_explains_each_command() {
    let tmp = tempfile::tempdir().unwrap();
    let help = strait(tmp.path(), "cert issue --help").ok().stdout;
    for needle in ["--gateway", "--spiffe-id", "--ttl", "--dns", "0600"] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
    let tunnel = strait(tmp.path(), "tunnel open --help").ok().stdout;
    for needle in ["certificate chain", "private key of --cert", "trust bundle"] {
        assert!(tunnel.contains(needle), "{needle} missing from:\n{tunnel}");
    }
    let run = strait(tmp.path(), "gateway run --help").ok().stdout;
    for needle in ["SIGHUP", "relative to this file", "RUST_LOG"] {
        assert!(run.contains(needle), "{needle} missing from:\n{run}");
    }
}

#[test]
fn revoking_an_id_of_another_trust_domain_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    strait(dir, "ca init --trust-domain example.org --dir ca").ok();
    let err = strait(
        dir,
        "ca revoke --ca ca --id spiffe://exmaple.org/region/eu-west/gateway/gw-1",
    )
    .failed();
    assert!(
        err.contains("is not of this CA's trust domain example.org"),
        "{err}"
    );
    assert!(
        !dir.join("ca/deny.txt").exists() || {
            let deny = std::fs::read_to_string(dir.join("ca/deny.txt")).unwrap();
            !deny.contains("exmaple.org")
        }
    );
    strait(
        dir,
        "ca revoke --ca ca --id spiffe://example.org/region/eu-west/gateway/gw-1",
    )
    .ok();
}

#[test]
fn gateway_check_warns_about_a_readable_key_and_foreign_allow_patterns() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ca_and_gateway(dir, false, "eu-west", "gw-1");
    fs::write(
        dir.join("gw.toml"),
        "[gateway]\nname = \"gw-1\"\nregion = \"eu-west\"\n\n\
         [identity]\ncert = \"gw-1/cert.pem\"\nkey = \"gw-1/key.pem\"\nbundle = \"gw-1/bundle.pem\"\n\n\
         [[export]]\nservice = \"web\"\ntarget = \"127.0.0.1:8080\"\n\
         allow = [\"spiffe://exmaple.org/region/*\"]\n",
    )
    .unwrap();
    let quiet = strait(dir, "gateway check --config gw.toml").ok().stdout;
    assert!(!quiet.contains("mode 0"), "{quiet}");
    fs::set_permissions(dir.join("gw-1/key.pem"), fs::Permissions::from_mode(0o644)).unwrap();
    let out = strait(dir, "gateway check --config gw.toml").ok().stdout;
    assert!(
        out.contains("gw-1/key.pem has mode 0644; others can read the private key"),
        "{out}"
    );
    assert!(
        out.contains(
            "export web: spiffe://exmaple.org/region/* is not of trust domain example.org"
        ),
        "{out}"
    );
}

/// One serial format everywhere: `cert inspect` prints what the deny list
/// (and so `/status` and `ca revoke`) write.
#[test]
fn cert_inspect_prints_the_serial_as_the_deny_list_does() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ca_and_gateway(dir, false, "eu-west", "gw-1");
    let json = strait(dir, "cert inspect gw-1/cert.pem --json").ok().stdout;
    let info: serde_json::Value = serde_json::from_str(&json).unwrap();
    let serial = info[0]["serial"]
        .as_str()
        .or_else(|| info["serial"].as_str())
        .unwrap_or_else(|| panic!("no serial in {json}"))
        .to_owned();
    let revoked = strait(dir, "ca revoke --ca ca --cert gw-1/cert.pem")
        .ok()
        .stdout;
    assert!(
        revoked.contains(&format!("revoked: serial {serial}\n")),
        "{serial} vs {revoked}"
    );
}

#[test]
fn status_names_the_scheme_it_cannot_speak() {
    let tmp = tempfile::tempdir().unwrap();
    let err = strait(tmp.path(), "status --admin https://127.0.0.1:15000").failed();
    assert!(
        err.contains("the admin endpoint speaks plain HTTP") && err.contains("not https://"),
        "{err}"
    );
}
