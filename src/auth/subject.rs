//! The subject of a client certificate, as an identity of the auth file
//! names it (`cert_subject = "CN=comtrade-loader,O=Ministry"`) and as a
//! verified certificate carries it. Both become a [`Subject`]: its
//! attributes by their short names (CN, O, OU, C, L, ST, DC, Email, or the
//! dotted OID of any other), sorted, so that two subjects match when they
//! hold the same attributes in any order.
//!
//! Depends on x509-parser (reading a certificate's subject).

use x509_parser::prelude::{FromDer, X509Certificate};

/// A distinguished name, as sorted (attribute, value) pairs.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Subject(Vec<(String, String)>);

/// The short names the config may use, and the canonical form of each.
const SHORT_NAMES: [(&str, &str); 10] = [
    ("CN", "CN"),
    ("O", "O"),
    ("OU", "OU"),
    ("C", "C"),
    ("L", "L"),
    ("ST", "ST"),
    ("DC", "DC"),
    ("EMAIL", "Email"),
    ("EMAILADDRESS", "Email"),
    ("E", "Email"),
];

fn canonical_attribute(name: &str) -> Result<String, String> {
    let upper = name.trim().to_ascii_uppercase();
    if let Some((_, canonical)) = SHORT_NAMES.iter().find(|(n, _)| *n == upper) {
        return Ok((*canonical).to_owned());
    }
    // A dotted OID: digits and dots.
    let trimmed = name.trim();
    if !trimmed.is_empty()
        && trimmed.split('.').count() >= 2
        && trimmed
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Ok(trimmed.to_owned());
    }
    Err(format!(
        "{name:?} is not an attribute this server knows: use CN, O, OU, C, L, ST, DC, Email or a dotted OID"
    ))
}

impl Subject {
    fn new(mut attributes: Vec<(String, String)>) -> Self {
        attributes.sort();
        Subject(attributes)
    }

    /// Parses "CN=name,O=org" (RFC 4514 style: commas separate
    /// attributes, `\,` and `\=` escape them in a value, white space around
    /// names and values is ignored).
    pub fn parse(text: &str) -> Result<Subject, String> {
        let mut attributes = Vec::new();
        let mut part = String::new();
        let mut parts = Vec::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(escaped) => {
                        part.push('\\');
                        part.push(escaped);
                    }
                    None => return Err("a subject cannot end with a backslash".into()),
                },
                ',' | '+' => parts.push(std::mem::take(&mut part)),
                c => part.push(c),
            }
        }
        parts.push(part);
        for p in parts {
            if p.trim().is_empty() {
                return Err(format!("{text:?} has an empty attribute"));
            }
            let mut name = String::new();
            let mut value = String::new();
            let mut in_value = false;
            let mut chars = p.chars();
            while let Some(c) = chars.next() {
                match (c, in_value) {
                    ('\\', _) => {
                        let escaped = chars.next().unwrap_or('\\');
                        if in_value {
                            value.push(escaped);
                        } else {
                            name.push(escaped);
                        }
                    }
                    ('=', false) => in_value = true,
                    (c, true) => value.push(c),
                    (c, false) => name.push(c),
                }
            }
            if !in_value {
                return Err(format!("{p:?} is not an attribute=value pair"));
            }
            let value = value.trim().to_owned();
            if value.is_empty() {
                return Err(format!("{p:?} has an empty value"));
            }
            attributes.push((canonical_attribute(&name)?, value));
        }
        Ok(Subject::new(attributes))
    }

    /// The subject of a DER certificate (one the TLS handshake verified).
    pub fn of_certificate(der: &[u8]) -> Result<Subject, String> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| format!("the certificate does not parse: {e}"))?;
        let mut attributes = Vec::new();
        for attr in cert.subject().iter_attributes() {
            let oid = attr.attr_type();
            let name = x509_parser::objects::oid2abbrev(oid, x509_parser::objects::oid_registry())
                .ok()
                .and_then(|n| canonical_attribute(n).ok())
                .unwrap_or_else(|| oid.to_id_string());
            let value = attr
                .as_str()
                .map_err(|_| format!("the subject's {name} is not text"))?;
            attributes.push((name, value.trim().to_owned()));
        }
        Ok(Subject::new(attributes))
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, value)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let escaped = value.replace('\\', "\\\\").replace(',', "\\,");
            write!(f, "{name}={escaped}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_match_in_any_order_and_case_of_names() {
        let a = Subject::parse("CN=loader, O=Ministry of Trade").unwrap();
        let b = Subject::parse("o=Ministry of Trade,cn=loader").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "CN=loader,O=Ministry of Trade");
        let escaped = Subject::parse(r"CN=a\,b, emailAddress=x@y.org").unwrap();
        assert_eq!(escaped.to_string(), r"CN=a\,b,Email=x@y.org");
        assert_eq!(
            Subject::parse("2.5.4.3=loader").unwrap().to_string(),
            "2.5.4.3=loader"
        );
        assert_ne!(a, Subject::parse("CN=loader").unwrap());
    }

    #[test]
    fn malformed_subjects_are_refused() {
        for bad in ["", "CN", "CN=", "XX=1", "CN=a,,O=b", r"CN=a\", "1.=x"] {
            assert!(Subject::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_certificates_subject_reads_as_the_config_writes_it() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "loader");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Ministry");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            Subject::of_certificate(cert.der()).unwrap(),
            Subject::parse("O=Ministry,CN=loader").unwrap()
        );
        assert!(Subject::of_certificate(b"not a certificate").is_err());
    }
}
