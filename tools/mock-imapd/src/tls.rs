//! Certificates and the rustls server configuration.
//!
//! Generated chains are for loopback benchmarks only. ring (our rustls and
//! rcgen backend) can sign with RSA but cannot generate RSA keys, so the RSA
//! chains use fixed, public keys shipped in `keys/` (made once with
//! `openssl genpkey`); the certificates themselves are issued fresh at every
//! start. ECDSA P-256 keys are generated at start. Never trust these CAs
//! outside a benchmark.

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_RSA_SHA256,
};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::Error;

const SMALL_CA_RSA: &str = include_str!("../keys/small-ca-rsa2048.pem");
const LEAF_RSA: &str = include_str!("../keys/leaf-rsa2048.pem");
const INTERMEDIATE_RSA: &str = include_str!("../keys/intermediate-rsa2048.pem");
const ROOT_RSA: &str = include_str!("../keys/root-rsa4096.pem");

/// Which chain a generated PKI sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainKind {
    /// Leaf signed by a CA; sends leaf + CA (like the project's test chain).
    Small,
    /// Leaf signed by an intermediate signed by a root; sends leaf +
    /// intermediate, with the extensions public CAs add (SCT list, AIA, CRL
    /// distribution point), 3 to 5 KB like a public web PKI chain.
    Realistic,
}

/// The key algorithm of a generated PKI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlg {
    /// RSA-2048 leaf, intermediate and small CA, RSA-4096 realistic root
    /// (fixed keys from `keys/`).
    Rsa,
    /// ECDSA P-256 everywhere, keys generated at start.
    Ecdsa,
}

/// Where the server certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsSource {
    /// PEM files: a chain (leaf first) and a PKCS#8, PKCS#1 or SEC1 key.
    Files {
        /// Certificate chain, PEM.
        cert: std::path::PathBuf,
        /// Private key, PEM.
        key: std::path::PathBuf,
    },
    /// A CA and a leaf for `127.0.0.1` and `localhost`, made at start.
    Generated {
        /// Which chain to send.
        chain: ChainKind,
        /// Which keys to use.
        alg: KeyAlg,
    },
}

/// A server identity ready for rustls.
pub(crate) struct Identity {
    pub config: Arc<ServerConfig>,
    /// The root to trust (generated PKI only), PEM.
    pub ca_pem: Option<String>,
    /// Total DER size of the chain the server sends.
    pub chain_bytes: usize,
    /// Number of certificates the server sends.
    pub chain_len: usize,
}

/// Builds the server identity. With `resumption`, clients may resume with
/// stateless tickets (TLS 1.3 and 1.2, like OpenSSL's default in Dovecot),
/// which costs the server no memory; without it every handshake is full.
pub(crate) fn identity(source: &TlsSource, resumption: bool) -> Result<Identity, Error> {
    let (chain, key, ca_pem) = match source {
        TlsSource::Files { cert, key } => {
            let (chain, key) = load(cert, key)?;
            (chain, key, None)
        }
        TlsSource::Generated { chain, alg } => {
            let g = generate(*chain, *alg)?;
            (g.chain, g.key, Some(g.ca_pem))
        }
    };
    let chain_bytes = chain.iter().map(|c| c.len()).sum();
    let chain_len = chain.len();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(format!("protocol versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| Error::Tls(format!("certificate/key: {e}")))?;
    if resumption {
        config.ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| Error::Tls(format!("ticketer: {e}")))?;
        // Tickets carry the state; no per-session cache.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    } else {
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(Identity {
        config: Arc::new(config),
        ca_pem,
        chain_bytes,
        chain_len,
    })
}

fn load(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
    let file_err = |p: &Path| {
        let p = p.display().to_string();
        move |e| Error::Tls(format!("{p}: {e}"))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(file_err(cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(file_err(cert))?;
    if chain.is_empty() {
        return Err(Error::Tls(format!("{}: no certificate", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(file_err(key))?;
    Ok((chain, key))
}

struct Generated {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    ca_pem: String,
}

fn cert_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> Error {
    move |e| Error::Tls(format!("{what}: {e}"))
}

fn key(alg: KeyAlg, rsa_pem: &str) -> Result<KeyPair, Error> {
    match alg {
        KeyAlg::Rsa => KeyPair::from_pkcs8_pem_and_sign_algo(rsa_pem, &PKCS_RSA_SHA256)
            .map_err(cert_err("RSA key")),
        KeyAlg::Ecdsa => KeyPair::generate().map_err(cert_err("ECDSA key")),
    }
}

fn ca_params(name: &str) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err("CA params"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "ZZ");
    dn.push(DnType::OrganizationName, "mock-imapd benchmark PKI");
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn generate(kind: ChainKind, alg: KeyAlg) -> Result<Generated, Error> {
    let root_pem = match kind {
        ChainKind::Small => SMALL_CA_RSA,
        ChainKind::Realistic => ROOT_RSA,
    };
    let root_key = key(alg, root_pem)?;
    let root_params = ca_params("mock-imapd root CA")?;
    let root_cert = root_params
        .self_signed(&root_key)
        .map_err(cert_err("root self-sign"))?;
    let root = Issuer::new(root_params, root_key);

    let leaf_key = key(alg, LEAF_RSA)?;
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .map_err(cert_err("leaf params"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "localhost");
    leaf.distinguished_name = dn;
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;

    let chain = match kind {
        ChainKind::Small => {
            let leaf_cert = leaf
                .signed_by(&leaf_key, &root)
                .map_err(cert_err("leaf sign"))?;
            vec![leaf_cert.der().clone(), root_cert.der().clone()]
        }
        ChainKind::Realistic => {
            let inter_key = key(alg, INTERMEDIATE_RSA)?;
            let mut inter_params = ca_params("mock-imapd intermediate R1")?;
            // Organisation-validated chains (the larger public ones) carry
            // full subject names, and each name appears twice in a chain.
            inter_params
                .distinguished_name
                .push(DnType::StateOrProvinceName, "Benchmark State");
            inter_params
                .distinguished_name
                .push(DnType::LocalityName, "Loopback City");
            inter_params
                .distinguished_name
                .push(DnType::OrganizationalUnitName, "Server CA Operations");
            inter_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            inter_params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            add_public_ca_extensions(&mut inter_params, 0);
            let inter_cert = inter_params
                .signed_by(&inter_key, &root)
                .map_err(cert_err("intermediate sign"))?;
            let inter = Issuer::new(inter_params, inter_key);
            // Public leaves carry two or three SCTs and several names.
            add_public_ca_extensions(&mut leaf, 3);
            leaf.distinguished_name.push(DnType::CountryName, "ZZ");
            leaf.distinguished_name
                .push(DnType::StateOrProvinceName, "Benchmark State");
            leaf.distinguished_name
                .push(DnType::LocalityName, "Loopback City");
            leaf.distinguished_name
                .push(DnType::OrganizationName, "mock-imapd mail service");
            for name in ["imap.localhost", "mail.localhost", "push.localhost"] {
                leaf.subject_alt_names.push(rcgen::SanType::DnsName(
                    name.try_into().map_err(cert_err("SAN"))?,
                ));
            }
            let leaf_cert = leaf
                .signed_by(&leaf_key, &inter)
                .map_err(cert_err("leaf sign"))?;
            vec![leaf_cert.der().clone(), inter_cert.der().clone()]
        }
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    Ok(Generated {
        chain,
        key,
        ca_pem: root_cert.pem(),
    })
}

/// Adds what a public CA puts in its certificates, so that the chain has a
/// realistic size: authority information access, a CRL distribution point,
/// a certificate policy and (leaf only, `scts > 0`) an SCT list like the one
/// Certificate Transparency logs add (RFC 6962, about 120 bytes per SCT).
fn add_public_ca_extensions(params: &mut CertificateParams, scts: usize) {
    params.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
        uris: vec!["http://crl.mock-imapd.invalid/r1.crl".to_string()],
    }];
    // authorityInfoAccess (1.3.6.1.5.5.7.1.1): SEQUENCE of AccessDescription
    // { id-ad-ocsp / id-ad-caIssuers, [6] uri }.
    let aia = der_seq(&[
        der_seq(&[
            der_oid(&[0x2b, 6, 1, 5, 5, 7, 48, 1]),
            der_uri(b"http://ocsp.mock-imapd.invalid"),
        ]),
        der_seq(&[
            der_oid(&[0x2b, 6, 1, 5, 5, 7, 48, 2]),
            der_uri(b"http://ca.mock-imapd.invalid/r1.der"),
        ]),
    ]);
    params
        .custom_extensions
        .push(CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 5, 5, 7, 1, 1],
            aia,
        ));
    // certificatePolicies (2.5.29.32): organization-validated
    // (2.23.140.1.2.2), plus a CPS pointer qualifier (1.3.6.1.5.5.7.2.1).
    let cps = der_seq(&[
        der_oid(&[0x2b, 6, 1, 5, 5, 7, 2, 1]),
        der_tlv(0x16, b"https://www.mock-imapd.invalid/repository/cps"),
    ]);
    let policies = der_seq(&[
        der_seq(&[der_oid(&[0x67, 0x81, 0x0c, 1, 2, 2])]),
        der_seq(&[
            der_oid(&[0x2b, 6, 1, 4, 1, 0x82, 0x37, 1, 1]),
            der_seq(&[cps]),
        ]),
    ]);
    params
        .custom_extensions
        .push(CustomExtension::from_oid_content(&[2, 5, 29, 32], policies));
    if scts > 0 {
        // An OCTET STRING holding a TLS-encoded SCT list of `scts` entries of
        // 119 bytes each: opaque filler of the right size, never verified.
        let mut list = Vec::new();
        let body_len = scts * (2 + 119);
        list.extend_from_slice(&(body_len as u16).to_be_bytes());
        for i in 0..scts {
            list.extend_from_slice(&119u16.to_be_bytes());
            list.extend((0..119u8).map(|b| b.wrapping_mul(31).wrapping_add(i as u8)));
        }
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 4, 1, 11129, 2, 4, 2],
                der_tlv(0x04, &list),
            ));
    }
}

fn der_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    }
}

fn der_tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    der_len(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

fn der_seq(items: &[Vec<u8>]) -> Vec<u8> {
    der_tlv(0x30, &items.concat())
}

fn der_oid(encoded: &[u8]) -> Vec<u8> {
    der_tlv(0x06, encoded)
}

fn der_uri(uri: &[u8]) -> Vec<u8> {
    der_tlv(0x86, uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_pem_files() {
        let dir = std::env::temp_dir().join(format!("mock-imapd-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        let files = TlsSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        };
        let id = identity(&files, true);
        let missing = identity(
            &TlsSource::Files {
                cert: dir.join("none.pem"),
                key,
            },
            false,
        );
        let _ = std::fs::remove_dir_all(&dir);
        let id = id.unwrap();
        assert_eq!((id.chain_len, id.ca_pem), (1, None));
        assert!(matches!(missing, Err(Error::Tls(m)) if m.contains("none.pem")));
    }

    #[test]
    fn chain_sizes() {
        for (kind, alg, min, max) in [
            (ChainKind::Small, KeyAlg::Rsa, 1500, 2200),
            (ChainKind::Realistic, KeyAlg::Rsa, 3000, 5000),
            (ChainKind::Small, KeyAlg::Ecdsa, 500, 1200),
            (ChainKind::Realistic, KeyAlg::Ecdsa, 1000, 3000),
        ] {
            let id = identity(&TlsSource::Generated { chain: kind, alg }, true).unwrap();
            assert_eq!(id.chain_len, 2);
            eprintln!("{kind:?} {alg:?}: {} bytes", id.chain_bytes);
            assert!(
                (min..=max).contains(&id.chain_bytes),
                "{kind:?} {alg:?}: {} bytes",
                id.chain_bytes
            );
        }
    }
}
