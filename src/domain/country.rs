//! ISO 3166-1 countries, canonical as alpha-2. Parsing accepts alpha-2 or
//! alpha-3 in any letter case and rejects codes the ISO table does not have.
//! Depends only on the `rust_iso3166` table.

use std::fmt;

/// Position of an upper-case alpha-2 code in [`ALPHA2_KNOWN`].
fn alpha2_index(code: [u8; 2]) -> usize {
    usize::from(code[0] - b'A') * 26 + usize::from(code[1] - b'A')
}

/// Which of the 26 × 26 upper-case alpha-2 codes the ISO table has.
static ALPHA2_KNOWN: std::sync::LazyLock<[bool; 26 * 26]> = std::sync::LazyLock::new(|| {
    let mut known = [false; 26 * 26];
    for code in rust_iso3166::ALL_ALPHA2 {
        if let [a @ b'A'..=b'Z', b @ b'A'..=b'Z'] = code.as_bytes() {
            known[alpha2_index([*a, *b])] = true;
        }
    }
    known
});

/// A country that exists in ISO 3166-1, held as its alpha-2 code.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country([u8; 2]);

impl Country {
    /// Parses "KZ", "kz", "KAZ" or "kaz" into Kazakhstan; anything else that is
    /// not an ISO 3166-1 alpha-2 or alpha-3 code is an error saying so.
    pub fn parse(code: &str) -> Result<Self, String> {
        let t = code.trim().as_bytes();
        // Upper-cased on the stack: parsing runs for every figure ingested.
        let mut upper = [0u8; 3];
        let found = match t.len() {
            0 => return Err("a country code is required (ISO 3166-1 alpha-2 or alpha-3)".into()),
            2 | 3 if t.iter().all(u8::is_ascii_alphabetic) => {
                for (u, b) in upper.iter_mut().zip(t) {
                    *u = b.to_ascii_uppercase();
                }
                if t.len() == 2 {
                    let i = alpha2_index([upper[0], upper[1]]);
                    ALPHA2_KNOWN[i].then_some(Country([upper[0], upper[1]]))
                } else {
                    std::str::from_utf8(&upper)
                        .ok()
                        .and_then(rust_iso3166::from_alpha3)
                        .map(|c| {
                            let b = c.alpha2.as_bytes();
                            Country([b[0], b[1]])
                        })
                }
            }
            _ => None,
        };
        found
            .ok_or_else(|| format!("{code:?} is not an ISO 3166-1 alpha-2 or alpha-3 country code"))
    }

    /// The position of its alpha-2 code among the 26 × 26 possible ones.
    pub(crate) fn index(self) -> usize {
        alpha2_index(self.0)
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
        for bad in [
            "", "XX", "C5", "ZZZ", "KAZA", "W00", "é", "Ké", "k z", "@Z", "Z[",
        ] {
            assert!(Country::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn every_iso_alpha2_code_is_known_in_either_case() {
        for code in rust_iso3166::ALL_ALPHA2 {
            assert_eq!(Country::parse(code).unwrap().alpha2(), *code);
            assert_eq!(
                Country::parse(&code.to_ascii_lowercase()).unwrap().alpha2(),
                *code
            );
        }
        assert_eq!(Country::parse(" kz ").unwrap().alpha2(), "KZ");
    }
}
