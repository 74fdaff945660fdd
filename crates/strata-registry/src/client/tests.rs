use super::*;

#[test]
fn loopback_hosts() {
    assert!(is_loopback("127.0.0.1:5000"));
    assert!(is_loopback("localhost"));
    assert!(is_loopback("[::1]:5000"));
    assert!(!is_loopback("10.0.0.1:5000"));
    assert!(!is_loopback("example.com"));
}

#[test]
fn error_bodies_are_summarised() {
    assert_eq!(
        error_detail(r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#),
        " (MANIFEST_UNKNOWN: manifest unknown)"
    );
    assert_eq!(error_detail(""), "");
}

/// With no system certificates (a `FROM scratch` or slim container),
/// the trusted set is the built-in Mozilla roots, not empty, and a
/// client builds with them alone.
#[test]
fn no_system_certificates_means_the_built_in_roots() {
    let (source, roots) = roots_from(&[]);
    assert_eq!(source, RootSource::BuiltIn);
    assert_eq!(roots.len(), webpki_root_certs::TLS_SERVER_ROOT_CERTS.len());
    assert!(roots.len() > 100, "only {} built-in roots", roots.len());
    install_crypto_provider();
    Http::builder()
        .tls_certs_only(roots)
        .build()
        .expect("a client with the built-in roots only");
}

/// A system bundle whose only entry does not parse counts as none: the
/// built-in roots serve. One that parses is used instead of them.
#[test]
fn unusable_system_certificates_are_skipped() {
    let garbage = CertificateDer::from(b"not a certificate".to_vec());
    assert_eq!(roots_from(&[garbage]).0, RootSource::BuiltIn);
    let one = webpki_root_certs::TLS_SERVER_ROOT_CERTS[0].clone();
    let (source, roots) = roots_from(&[one]);
    assert_eq!(source, RootSource::System);
    assert_eq!(roots.len(), 1);
}
