//! What strait issues must satisfy OpenSSL, an implementation we did not
//! write: chain verification with and without an intermediate, exactly one
//! URI SAN, and CSRs that OpenSSL made.

mod support;

use support::{ca_and_gateway, run, strait};

#[test]
fn openssl_verifies_strait_chains() {
    for intermediate in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        ca_and_gateway(dir, intermediate, "eu-west", "gw-1");
        let out = run(
            dir,
            "openssl verify -CAfile gw-1/bundle.pem -untrusted gw-1/cert.pem gw-1/cert.pem",
        )
        .ok();
        assert_eq!(
            out.stdout.trim(),
            "gw-1/cert.pem: OK",
            "intermediate={intermediate}"
        );

        let san = run(
            dir,
            "openssl x509 -in gw-1/cert.pem -noout -ext subjectAltName",
        )
        .ok();
        assert_eq!(san.stdout.matches("URI:").count(), 1, "{}", san.stdout);
        assert!(
            san.stdout
                .contains("URI:spiffe://example.org/region/eu-west/gateway/gw-1")
        );

        // A certificate of another CA fails in OpenSSL too.
        strait(dir, "ca init --trust-domain example.org --dir other").ok();
        let refused = run(
            dir,
            "openssl verify -CAfile other/bundle.pem -untrusted gw-1/cert.pem gw-1/cert.pem",
        );
        assert!(!refused.success, "{refused:?}");
    }
}

#[test]
fn openssl_verifies_every_key_type() {
    for key_type in ["p256", "p384", "ed25519"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        strait(
            dir,
            &format!(
                "ca init --trust-domain example.org --dir ca --intermediate --key-type {key_type}"
            ),
        )
        .ok();
        strait(
            dir,
            &format!("cert issue --ca ca --spiffe-id spiffe://example.org/ns/a/sa/b --out w --key-type {key_type}"),
        )
        .ok();
        let out = run(
            dir,
            "openssl verify -CAfile w/bundle.pem -untrusted w/cert.pem w/cert.pem",
        );
        assert!(out.stdout.contains("w/cert.pem: OK"), "{key_type}: {out:?}");
    }
}

#[test]
fn strait_signs_a_csr_that_openssl_made() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    strait(dir, "ca init --trust-domain example.org --dir ca").ok();
    run(dir, "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem -out csr.pem -subj /CN=asks-for-anything")
    .ok();
    strait(
        dir,
        "cert sign --ca ca --csr csr.pem --spiffe-id spiffe://example.org/ns/x/sa/y --out .",
    )
    .ok();
    run(dir, "openssl verify -CAfile bundle.pem cert.pem").ok();
    // The certificate carries the key openssl made.
    let cert_key = run(dir, "openssl x509 -in cert.pem -noout -pubkey")
        .ok()
        .stdout;
    let own_key = run(dir, "openssl pkey -in key.pem -pubout").ok().stdout;
    assert_eq!(cert_key, own_key);
}
