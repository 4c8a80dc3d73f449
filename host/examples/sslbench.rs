#![allow(missing_docs, clippy::unwrap_used)]
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use std::time::Instant;
fn t(name: &str, n: usize, mut f: impl FnMut()) {
    let s = Instant::now();
    for _ in 0..n {
        f();
    }
    println!(
        "{name}: {:.1} us",
        s.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}
fn main() {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let der = key.private_key_to_pkcs8().unwrap();
    let spki = key.public_key_to_der().unwrap();
    t("group", 2000, || {
        EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    });
    t("ec keygen", 2000, || {
        PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    });
    t("from_pkcs8", 2000, || {
        PKey::private_key_from_pkcs8(&der).unwrap();
    });
    t("from_der", 2000, || {
        PKey::private_key_from_der(&der).unwrap();
    });
    t("ec from_der", 2000, || {
        let e = EcKey::private_key_from_der(&key.ec_key().unwrap().private_key_to_der().unwrap())
            .unwrap();
        PKey::from_ec_key(e).unwrap();
    });
    t("to_pkcs8", 2000, || {
        key.private_key_to_pkcs8().unwrap();
    });
    t("pub to_der", 2000, || {
        key.public_key_to_der().unwrap();
    });
    t("pub from_der", 2000, || {
        PKey::public_key_from_der(&spki).unwrap();
    });
    t("sign", 2000, || {
        let mut s =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
        s.sign_oneshot_to_vec(b"hello").unwrap();
    });
    t("ec pub from_der", 2000, || {
        openssl::ec::EcKey::public_key_from_der(&spki).unwrap();
    });
    let rsa = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    let rspki = rsa.public_key_to_der().unwrap();
    t("rsa pub from_der", 2000, || {
        PKey::public_key_from_der(&rspki).unwrap();
    });
    t("rsa pub from_der legacy", 2000, || {
        openssl::rsa::Rsa::public_key_from_der(&rspki).unwrap();
    });
    let point = key
        .ec_key()
        .unwrap()
        .public_key()
        .to_bytes(
            &group,
            openssl::ec::PointConversionForm::UNCOMPRESSED,
            &mut openssl::bn::BigNumContext::new().unwrap(),
        )
        .unwrap();
    t("ec point", 2000, || {
        let mut ctx = openssl::bn::BigNumContext::new().unwrap();
        let p = openssl::ec::EcPoint::from_bytes(&group, &point, &mut ctx).unwrap();
        PKey::from_ec_key(openssl::ec::EcKey::from_public_key(&group, &p).unwrap()).unwrap();
    });
    let k2 = key.clone();
    let v = std::thread::spawn(move || {
        t("sign(thread2)", 2000, || {
            let mut s =
                openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &k2).unwrap();
            s.sign_oneshot_to_vec(b"hello").unwrap();
        });
    });
    t("sign(par)", 2000, || {
        let mut s =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
        s.sign_oneshot_to_vec(b"hello").unwrap();
    });
    v.join().unwrap();
}
#[allow(dead_code)]
fn more() {}
