//! The local certificate chain Content Credentials are signed with: a CA certificate and a
//! claim-signing certificate under it, both with P-256 keys derived from the creator's Ethereum
//! key. Nothing new is stored: the same key always gives the same chain, and the chain names the
//! creator's address.

use alloy_signer_local::PrivateKeySigner;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::elliptic_curve::zeroize::Zeroizing;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SerialNumber,
};
use sha2::{Digest, Sha256};

/// The `id-kp-documentSigning` extended key usage (RFC 9336), one C2PA readers accept for claim
/// signing (with e-mail protection, the one their sample certificates carry).
const DOCUMENT_SIGNING: [u64; 9] = [1, 3, 6, 1, 5, 5, 7, 3, 36];

/// A certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// No usable P-256 key came out of the derivation (never expected in practice).
    #[error("no P-256 key could be derived for the {0} certificate")]
    Key(&'static str),
    /// The certificate or key could not be encoded.
    #[error("cannot encode the {what}: {message}")]
    Encode {
        /// Which certificate or key.
        what: &'static str,
        /// Why.
        message: String,
    },
}

/// The creator's certificate chain and signing key, PEM-encoded.
pub struct LocalChain {
    /// The claim-signing certificate, then the CA certificate.
    pub chain_pem: String,
    /// The CA certificate alone: add it to a C2PA reader's trust anchors to trust the chain.
    pub ca_pem: String,
    /// The claim-signing key (PKCS#8); wiped from memory when dropped.
    pub key_pem: Zeroizing<String>,
}

impl LocalChain {
    /// The chain of `signer`'s address: the same key gives the same certificates, byte for byte.
    pub fn for_creator(signer: &PrivateKeySigner) -> Result<Self, CertificateError> {
        let secret = Zeroizing::new(signer.credential().to_bytes().to_vec());
        let address = signer.address().to_checksum(None);
        let ca_key = DerivedKey::new(&secret, "ca")?;
        let leaf_key = DerivedKey::new(&secret, "claim-signing")?;

        let mut ca = params(
            format!("Autonomy local CA {address}"),
            serial(&address, "ca"),
        );
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca, ca_key).map_err(encode("CA certificate"))?;

        let mut leaf = params(
            format!("Autonomy creator {address}"),
            serial(&address, "claim-signing"),
        );
        leaf.is_ca = IsCa::ExplicitNoCa;
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::EmailProtection,
            ExtendedKeyUsagePurpose::Other(DOCUMENT_SIGNING.into()),
        ];
        leaf.use_authority_key_identifier_extension = true;
        let leaf_cert = leaf
            .signed_by(&leaf_key, &ca)
            .map_err(encode("claim-signing certificate"))?;

        let key_pem = leaf_key
            .key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(encode("claim-signing key"))?;
        Ok(Self {
            chain_pem: format!("{}{}", leaf_cert.pem(), ca.pem()),
            ca_pem: ca.pem(),
            key_pem,
        })
    }
}

/// Subject, serial and a fixed validity (2025–2125), so the certificate is a function of the key.
fn params(common_name: String, serial: SerialNumber) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, "Autonomy");
    params.distinguished_name = name;
    params.serial_number = Some(serial);
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2125, 1, 1);
    params
}

/// A positive 16-byte serial number from the address and the certificate's role.
fn serial(address: &str, role: &str) -> SerialNumber {
    let digest = Sha256::new()
        .chain_update(address.as_bytes())
        .chain_update(role.as_bytes())
        .finalize();
    let mut bytes = digest[..16].to_vec();
    bytes[0] &= 0x7F;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

fn encode<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> CertificateError {
    move |e| CertificateError::Encode {
        what,
        message: e.to_string(),
    }
}

/// A P-256 key derived from the Ethereum key for one role, usable by rcgen.
struct DerivedKey {
    key: SigningKey,
    /// The uncompressed SEC1 public point, as X.509 carries it.
    public: Vec<u8>,
}

impl DerivedKey {
    fn new(secret: &[u8], role: &'static str) -> Result<Self, CertificateError> {
        (0u8..=255)
            .find_map(|counter| {
                let digest = Zeroizing::new(
                    Sha256::new()
                        .chain_update(b"autonomy/c2pa/")
                        .chain_update(role.as_bytes())
                        .chain_update([counter])
                        .chain_update(secret)
                        .finalize(),
                );
                SigningKey::from_slice(digest.as_slice()).ok()
            })
            .map(|key| {
                let public = key
                    .verifying_key()
                    .to_encoded_point(false)
                    .as_bytes()
                    .to_vec();
                Self { key, public }
            })
            .ok_or(CertificateError::Key(role))
    }
}

impl rcgen::PublicKeyData for DerivedKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for DerivedKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let signature: Signature = self.key.sign(msg);
        Ok(signature.to_der().as_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_key_gives_the_same_chain_and_another_key_another() {
        let signer = PrivateKeySigner::from_slice(&[7u8; 32]).unwrap();
        let a = LocalChain::for_creator(&signer).unwrap();
        let b = LocalChain::for_creator(&signer).unwrap();
        assert_eq!(a.chain_pem, b.chain_pem);
        assert_eq!(*a.key_pem, *b.key_pem);
        assert_eq!(a.chain_pem.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(a.chain_pem.ends_with(&a.ca_pem));
        assert!(a.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let other = PrivateKeySigner::from_slice(&[8u8; 32]).unwrap();
        assert_ne!(
            LocalChain::for_creator(&other).unwrap().chain_pem,
            a.chain_pem
        );
    }
}
