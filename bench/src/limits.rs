//! In-process limits measured in the same run: what the crypto library and PostgreSQL can
//! do with no server in between. Each runs on one thread; rates are per core.

use std::time::{Duration, Instant};

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509, X509NameBuilder};

fn rate(budget: Duration, mut step: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut count = 0u64;
    while started.elapsed() < budget || count < 3 {
        step()?;
        count += 1;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

fn ec_key() -> anyhow::Result<PKey<Private>> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    Ok(PKey::from_ec_key(EcKey::generate(&group)?)?)
}

fn leaf(ca: &PKey<Private>, key: &PKey<Private>) -> anyhow::Result<Vec<u8>> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", "leaf.bench.local")?;
    let name = name.build();
    let mut builder = X509::builder()?;
    builder.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(159, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    builder.set_serial_number(&serial)?;
    builder.set_subject_name(&name)?;
    builder.set_issuer_name(&name)?;
    builder.set_pubkey(key)?;
    let (start, end) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(1)?);
    builder.set_not_before(&start)?;
    builder.set_not_after(&end)?;
    let san = SubjectAlternativeName::new()
        .dns("leaf.bench.local")
        .build(&builder.x509v3_context(None, None))?;
    builder.append_extension(san)?;
    builder.sign(ca, MessageDigest::sha256())?;
    Ok(builder.build().to_der()?)
}

/// EC P-256 leaf: key generation + certificate build + ECDSA signature + DER, per second.
pub fn ec_issue(budget: Duration) -> anyhow::Result<f64> {
    let ca = ec_key()?;
    rate(budget, || {
        let key = ec_key()?;
        leaf(&ca, &key)?;
        Ok(())
    })
}

/// RSA-2048 key generations per second, with the function Coffer's key capability uses.
pub fn rsa_keygen(budget: Duration) -> anyhow::Result<f64> {
    rate(budget, || {
        coffer_host::caps::keys::generate_rsa(2048)
            .map_err(|e| anyhow::anyhow!("RSA key generation: {e:?}"))?;
        Ok(())
    })
}

/// ECDSA P-256 signatures per second over a certificate-sized message.
pub fn ecdsa_sign(budget: Duration) -> anyhow::Result<f64> {
    let key = ec_key()?;
    let message = vec![7u8; 600];
    rate(budget, || {
        let mut signer = Signer::new(MessageDigest::sha256(), &key)?;
        signer.sign_oneshot_to_vec(&message)?;
        Ok(())
    })
}

/// The database engine's statements over one persistent connection, no server: returns
/// (creations per second, revocations per second) for `count` users. `password` is what
/// the statements carry: a password, or a SCRAM verifier as the servers send with
/// `password_authentication=scram-sha-256` (computed once, outside the timing).
pub async fn sql(dsn: &str, count: usize, password: &str) -> anyhow::Result<(f64, f64)> {
    let (mut client, connection) = tokio_postgres::connect(dsn, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let started = Instant::now();
    for i in 0..count {
        let name = format!("raw-{i}-{}", std::process::id());
        let tx = client.transaction().await?;
        tx.batch_execute(&format!(
            "CREATE ROLE \"{name}\" WITH LOGIN PASSWORD '{password}' VALID UNTIL '2099-01-01 00:00:00+0000'; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO \"{name}\";"
        ))
        .await?;
        tx.commit().await?;
    }
    let create_rate = count as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for i in 0..count {
        let name = format!("raw-{i}-{}", std::process::id());
        let tx = client.transaction().await?;
        tx.batch_execute(&format!(
            "REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA public FROM \"{name}\"; REVOKE USAGE ON SCHEMA public FROM \"{name}\"; DROP ROLE IF EXISTS \"{name}\";"
        ))
        .await?;
        tx.commit().await?;
    }
    Ok((create_rate, count as f64 / started.elapsed().as_secs_f64()))
}

/// A fresh EC P-256 CSR in PEM.
pub fn ec_csr() -> anyhow::Result<String> {
    let key = ec_key()?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", "sign.bench.local")?;
    let mut builder = openssl::x509::X509ReqBuilder::new()?;
    builder.set_subject_name(&name.build())?;
    builder.set_pubkey(&key)?;
    builder.sign(&key, MessageDigest::sha256())?;
    Ok(String::from_utf8(builder.build().to_pem()?)?)
}
