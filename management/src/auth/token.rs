//! Personal access tokens in NetBird's format: `nbp_`, 30 random base62 characters (178 bits),
//! and 6 base62 characters of the CRC32 of those 30. The checksum lets a mistyped or foreign
//! string be refused before any lookup; the token itself is stored only as its SHA-256
//! (base64), so the database never holds a usable credential.

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::model::ids::random_bytes;

/// What every token starts with.
pub const PREFIX: &str = "nbp_";
/// Random characters after the prefix.
pub const SECRET_LEN: usize = 30;
/// Checksum characters at the end.
pub const CHECKSUM_LEN: usize = 6;
/// Length of a whole token.
pub const TOKEN_LEN: usize = PREFIX.len() + SECRET_LEN + CHECKSUM_LEN;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a string is not a token (said only in logs, never to the caller, who gets one 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Wrong length or prefix.
    #[error("not a personal access token (want `nbp_` and {} more characters)", TOKEN_LEN - PREFIX.len())]
    Shape,
    /// A character outside base62.
    #[error("a personal access token holds only letters and digits after `nbp_`")]
    Alphabet,
    /// The last 6 characters are not the checksum of the 30 before.
    #[error("the token's checksum does not match (mistyped or truncated)")]
    Checksum,
}

/// A new token, in clear text (shown once, then only its hash is kept).
pub fn generate() -> String {
    let mut secret = String::with_capacity(SECRET_LEN);
    while secret.len() < SECRET_LEN {
        for b in random_bytes::<32>() {
            // 248 = 4 × 62: taking bytes below it keeps every character equally likely.
            if b < 248 && secret.len() < SECRET_LEN {
                secret.push(BASE62[(b % 62) as usize] as char);
            }
        }
    }
    let mut t = String::with_capacity(TOKEN_LEN);
    t.push_str(PREFIX);
    t.push_str(&secret);
    t.push_str(&checksum(&secret));
    t
}

fn checksum(secret: &str) -> String {
    let mut n = crc32fast::hash(secret.as_bytes());
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    // 62^6 > 2^32, so nothing is left over.
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks the token's shape and checksum (no lookup).
pub fn check_format(token: &str) -> Result<(), FormatError> {
    let rest = token.strip_prefix(PREFIX).ok_or(FormatError::Shape)?;
    if rest.len() != SECRET_LEN + CHECKSUM_LEN {
        return Err(FormatError::Shape);
    }
    if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(FormatError::Alphabet);
    }
    let (secret, sum) = rest.split_at(SECRET_LEN);
    if checksum(secret) != sum {
        return Err(FormatError::Checksum);
    }
    Ok(())
}

/// What the store keeps of a token: base64 of its SHA-256.
pub fn hash(token: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_pass_their_own_check_and_differ() {
        let a = generate();
        assert_eq!(a.len(), TOKEN_LEN);
        assert!(a.starts_with("nbp_"));
        check_format(&a).unwrap();
        assert_ne!(a, generate());
        assert_ne!(hash(&a), hash(&generate()));
    }

    #[test]
    fn malformed_tokens_are_refused_for_the_right_reason() {
        let t = generate();
        assert_eq!(check_format(&t[..TOKEN_LEN - 1]), Err(FormatError::Shape));
        assert_eq!(
            check_format(&t.replacen("nbp_", "nbx_", 1)),
            Err(FormatError::Shape)
        );
        let mut bad = t.clone().into_bytes();
        bad[10] = b'-';
        assert_eq!(
            check_format(std::str::from_utf8(&bad).unwrap()),
            Err(FormatError::Alphabet)
        );
        // One character of the secret changed: the checksum no longer matches.
        let mut typo = t.into_bytes();
        typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
        assert_eq!(
            check_format(std::str::from_utf8(&typo).unwrap()),
            Err(FormatError::Checksum)
        );
    }

    #[test]
    fn the_checksum_is_crc32_in_base62() {
        // CRC32("123456789") = 0xCBF43926 = 3421780262, which is "3jZRME" in this base62.
        assert_eq!(checksum("123456789"), "3jZRME");
    }
}
