//! ISO 3166-1 countries, canonical as alpha-2. Parsing accepts alpha-2 or
//! alpha-3 in any letter case and rejects codes the ISO table does not have.
//! Depends only on the `rust_iso3166` table.

use std::fmt;

/// A country that exists in ISO 3166-1, held as its alpha-2 code.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country([u8; 2]);

impl Country {
    /// Parses "KZ", "kz", "KAZ" or "kaz" into Kazakhstan; anything else that is
    /// not an ISO 3166-1 alpha-2 or alpha-3 code is an error saying so.
    pub fn parse(code: &str) -> Result<Self, String> {
        let upper = code.trim().to_ascii_uppercase();
        let found = match upper.len() {
            0 => return Err("a country code is required (ISO 3166-1 alpha-2 or alpha-3)".into()),
            2 => rust_iso3166::from_alpha2(&upper),
            3 => rust_iso3166::from_alpha3(&upper),
            _ => None,
        };
        match found {
            Some(c) => {
                let b = c.alpha2.as_bytes();
                Ok(Country([b[0], b[1]]))
            }
            None => Err(format!(
                "{code:?} is not an ISO 3166-1 alpha-2 or alpha-3 country code"
            )),
        }
    }

    /// The canonical alpha-2 code, e.g. "KZ".
    pub fn alpha2(&self) -> &str {
        // Built only from the ISO table's ASCII codes.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    /// The alpha-3 code, e.g. "KAZ".
    pub fn alpha3(&self) -> &'static str {
        rust_iso3166::from_alpha2(self.alpha2()).map_or("???", |c| c.alpha3)
    }

    /// The English short name, e.g. "Kazakhstan".
    pub fn name(&self) -> &'static str {
        rust_iso3166::from_alpha2(self.alpha2()).map_or("unknown", |c| c.name)
    }
}

impl fmt::Debug for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.alpha2())
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.alpha2())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha3_and_lower_case_normalise_to_alpha2() {
        assert_eq!(
            Country::parse("KAZ").unwrap(),
            Country::parse("kz").unwrap()
        );
        assert_eq!(Country::parse("chn").unwrap().alpha2(), "CN");
        assert_eq!(Country::parse("UZ").unwrap().alpha3(), "UZB");
    }

    #[test]
    fn unknown_codes_are_rejected() {
        for bad in ["", "XX", "C5", "ZZZ", "KAZA", "W00"] {
            assert!(Country::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
