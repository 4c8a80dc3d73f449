use super::*;
use crate::core::public_match;

#[test]
fn percent_decoding_and_globs() {
    assert_eq!(percent_decode("a%2Fb%20c"), "a/b c");
    assert_eq!(percent_decode("bad%zz"), "bad%zz");
}

#[test]
fn public_patterns_match_as_vaults_do() {
    let cases = [
        ("ca", "ca", true),
        ("ca", "ca/pem", false),
        ("ca", "cab", false),
        ("issuers", "issuers/", true),
        ("cert/+", "cert/ab:cd", true),
        ("cert/+", "cert/", false),
        ("cert/+", "cert/a/b", false),
        ("issuer/+/pem", "issuer/root/pem", true),
        ("issuer/+/pem", "issuer/root/sign-intermediate", false),
        ("issuer/+/pem", "issuer//pem", false),
        ("issuer/+/crl*", "issuer/root/crl", true),
        ("issuer/+/crl*", "issuer/root/crl/delta/pem", true),
        ("issuer/+/crl*", "issuer/root/json", false),
        ("issuer/*", "issuer/r2/sign-intermediate", true),
        ("+", "anything", true),
        ("+", "", false),
    ];
    for (pattern, path, expected) in cases {
        assert_eq!(public_match(pattern, path), expected, "{pattern} vs {path}");
    }
}
