//! Bearer tokens: made strong and random by `caravan auth token`, stored in
//! the auth file only as their SHA-256 (`caravan auth hash`), and compared in
//! constant time.
//!
//! A token is random, not a password: 32 bytes from the OS's generator have
//! no dictionary to search, so one SHA-256 (not a slow password hash) is
//! the right check, and cheap enough for every call.
//!
//! Depends on sha2, subtle and getrandom.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Fewest characters `caravan auth hash` takes as a token.
pub const MIN_TOKEN_CHARS: usize = 32;
/// Most characters of a token (it travels in an HTTP/2 header).
pub const MAX_TOKEN_CHARS: usize = 512;

/// The SHA-256 of a token.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not secret, but nothing gains from printing it.
        f.write_str("TokenHash(…)")
    }
}

impl TokenHash {
    /// The hash of a token as presented.
    pub fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    /// Parses the 64 hexadecimal digits of the auth file.
    pub fn parse_hex(hex: &str) -> Result<TokenHash, String> {
        let hex = hex.trim();
        if hex.len() != 64 {
            return Err(format!(
                "a token hash is 64 hexadecimal digits (caravan auth hash prints it); got {} characters",
                hex.len()
            ));
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            let pair = hex.get(2 * i..2 * i + 2).ok_or("not hexadecimal")?;
            *byte =
                u8::from_str_radix(pair, 16).map_err(|_| format!("{pair:?} is not hexadecimal"))?;
        }
        Ok(TokenHash(out))
    }

    /// Lower-case hexadecimal, as the auth file takes it.
    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Equality that takes the same time whichever bytes differ.
    pub fn matches(&self, other: &TokenHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// Checks that `token` is fit to be one: long enough to be guessed by no
/// one, and only characters an HTTP header carries (visible ASCII).
pub fn check_token(token: &str) -> Result<(), String> {
    let n = token.chars().count();
    if n < MIN_TOKEN_CHARS {
        return Err(format!(
            "a token needs at least {MIN_TOKEN_CHARS} characters (got {n}); \
             `caravan auth token` makes a strong one"
        ));
    }
    if n > MAX_TOKEN_CHARS {
        return Err(format!(
            "a token has at most {MAX_TOKEN_CHARS} characters (got {n})"
        ));
    }
    if let Some(c) = token.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "{c:?} cannot be sent in an authorization header: use visible ASCII characters only"
        ));
    }
    Ok(())
}

/// A new token: 32 bytes from the operating system's generator, as 64
/// hexadecimal digits.
pub fn generate() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("the OS random generator failed: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_round_trips_through_hex_and_matches_only_its_token() {
        let token = generate().unwrap();
        assert_eq!(token.len(), 64);
        check_token(&token).unwrap();
        let hash = TokenHash::of(&token);
        let parsed = TokenHash::parse_hex(&hash.to_hex()).unwrap();
        assert!(parsed.matches(&hash));
        assert!(!parsed.matches(&TokenHash::of(&generate().unwrap())));
        // The known SHA-256 of "abc".
        assert_eq!(
            TokenHash::of("abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(generate().unwrap(), token, "random");
    }

    #[test]
    fn weak_or_unsendable_tokens_and_bad_hashes_are_refused() {
        assert!(check_token("short").unwrap_err().contains("at least 32"));
        assert!(check_token(&"a b".repeat(20)).unwrap_err().contains("' '"));
        assert!(check_token(&"é".repeat(40)).is_err());
        assert!(check_token(&"x".repeat(600)).is_err());
        assert!(TokenHash::parse_hex("abc").is_err());
        assert!(TokenHash::parse_hex(&"zz".repeat(32)).is_err());
        assert!(TokenHash::parse_hex(&"é".repeat(32)).is_err());
    }
}
