//! Who a TLS client is: its certificate's URI SAN (a SPIFFE id, say), else
//! its subject CN. The chain was verified against the client CA by rustls
//! before this runs.

use x509_parser::{extensions::GeneralName, prelude::FromDer as _};

/// None: the certificate names no one (no URI SAN and no CN).
pub fn of_certificate(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        let uri = san.value.general_names.iter().find_map(|n| match n {
            GeneralName::URI(u) if !u.trim().is_empty() => Some((*u).to_owned()),
            _ => None,
        });
        if uri.is_some() {
            return uri;
        }
    }
    cert.subject()
        .iter_common_name()
        .find_map(|cn| cn.as_str().ok().map(str::to_owned))
        .filter(|cn| !cn.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    use super::*;

    fn cert(cn: Option<&str>, sans: Vec<SanType>) -> Vec<u8> {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            p.distinguished_name.push(DnType::CommonName, cn);
        }
        p.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn uri_san_first_then_cn() {
        let spiffe = SanType::URI("spiffe://example.org/ci".try_into().unwrap());
        let dns = SanType::DnsName("host.example".try_into().unwrap());
        assert_eq!(
            of_certificate(&cert(Some("alice"), vec![dns.clone(), spiffe])).as_deref(),
            Some("spiffe://example.org/ci")
        );
        assert_eq!(
            of_certificate(&cert(Some("alice"), vec![dns.clone()])).as_deref(),
            Some("alice")
        );
        assert_eq!(of_certificate(&cert(None, vec![dns])), None);
        assert_eq!(of_certificate(b"not a certificate"), None);
    }
}
