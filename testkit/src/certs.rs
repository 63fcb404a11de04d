//! Test PKI: a throw-away CA and a server leaf certificate signed by it.
//!
//! rustls rejects a bare self-signed server certificate (it is not a CA and
//! cannot be a trust anchor for itself), hence the two-level chain.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::HarnessError;

/// A generated CA plus a leaf for `127.0.0.1` and `localhost`.
#[derive(Clone, Debug)]
pub struct TestPki {
    /// CA certificate, PEM.
    pub ca_pem: String,
    /// CA certificate, DER.
    pub ca_der: Vec<u8>,
    /// Server leaf certificate, PEM.
    pub leaf_pem: String,
    /// Server leaf certificate, DER.
    pub leaf_der: Vec<u8>,
    /// Server private key (PKCS#8), PEM.
    pub leaf_key_pem: String,
}

fn cert_err(what: &str) -> impl FnOnce(rcgen::Error) -> HarnessError + '_ {
    move |e| HarnessError::Certificate(format!("{what}: {e}"))
}

impl TestPki {
    /// Generate a fresh CA and leaf (ECDSA P-256; takes a millisecond).
    pub fn generate() -> Result<TestPki, HarnessError> {
        TestPki::generate_for(&[])
    }

    /// Like [`TestPki::generate`], with a leaf also valid for `extra` (names or IP
    /// addresses).
    pub fn generate_for(extra: &[String]) -> Result<TestPki, HarnessError> {
        let ca_key = KeyPair::generate().map_err(cert_err("CA key"))?;
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).map_err(cert_err("CA params"))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "testkit test CA");
        dn.push(DnType::OrganizationName, "testkit");
        ca_params.distinguished_name = dn;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .map_err(cert_err("CA self-sign"))?;
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf_key = KeyPair::generate().map_err(cert_err("leaf key"))?;
        let mut leaf_params = CertificateParams::new(
            ["127.0.0.1".to_string(), "localhost".to_string()]
                .into_iter()
                .chain(extra.iter().cloned())
                .collect::<Vec<_>>(),
        )
        .map_err(cert_err("leaf params"))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "localhost");
        leaf_params.distinguished_name = dn;
        leaf_params.is_ca = IsCa::ExplicitNoCa;
        leaf_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf_params.use_authority_key_identifier_extension = true;
        let leaf_cert = leaf_params
            .signed_by(&leaf_key, &issuer)
            .map_err(cert_err("leaf sign"))?;

        Ok(TestPki {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().to_vec(),
            leaf_pem: leaf_cert.pem(),
            leaf_der: leaf_cert.der().to_vec(),
            leaf_key_pem: leaf_key.serialize_pem(),
        })
    }
}
