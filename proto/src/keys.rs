//! WireGuard keys: Curve25519 key pairs, and their base64 text form.
//!
//! WireGuard, NetBird and this protocol write a key as standard base64 with
//! padding: 44 characters for 32 bytes (what `wg genkey` / `wg pubkey` print).
//! The same keys seal the management and signal envelopes (see
//! [`crate::envelope`]).
//!
//! Private keys never appear in `Debug` output, are wiped from memory when
//! dropped, and have no `Display`; [`PrivateKey::to_base64`] is the one
//! deliberate way out (for storing the key). Pre-shared keys
//! ([`PresharedKey`]) are secrets too and are treated the same way, without a
//! way out.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use crypto_box::aead::OsRng;
use crypto_box::aead::rand_core::RngCore;
use zeroize::{Zeroize, Zeroizing};

/// Length of a key in bytes.
pub const KEY_LEN: usize = 32;

/// Length of a key's base64 text.
pub const KEY_BASE64_LEN: usize = 44;

/// A key that could not be read.
///
/// The messages never quote the offending text: it may be a private key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The text is not standard base64 with padding.
    #[error(
        "key is not valid base64 (expected {KEY_BASE64_LEN} characters of standard base64 \
         with padding, as `wg genkey` prints; got {len} characters)"
    )]
    InvalidBase64 {
        /// Length of the text that was given.
        len: usize,
    },
    /// The text decodes, but not to 32 bytes.
    #[error("key decodes to {0} bytes; a WireGuard key has {KEY_LEN}")]
    WrongLength(usize),
}

fn decode_key(text: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let text = text.trim();
    let bytes = Zeroizing::new(
        STANDARD
            .decode(text)
            .map_err(|_| KeyError::InvalidBase64 { len: text.len() })?,
    );
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| KeyError::WrongLength(bytes.len()))
}

/// A WireGuard (Curve25519) public key.
///
/// `Display` and `FromStr` use the base64 text form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// Wraps raw key bytes.
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw key bytes.
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Parses the base64 text form (surrounding whitespace is ignored).
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode_key(text).map(Self)
    }

    /// The base64 text form (44 characters).
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }
}

impl From<[u8; KEY_LEN]> for PublicKey {
    fn from(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, KeyError> {
        Self::from_base64(text)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

/// A WireGuard (Curve25519) private key.
///
/// Wiped from memory on drop; `Debug` prints `PrivateKey(<redacted>)`.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey([u8; KEY_LEN]);

impl PrivateKey {
    /// A new random key from the operating system's CSPRNG, clamped the way
    /// `wg genkey` stores keys (X25519 clamps again on use, so unclamped keys
    /// from elsewhere work too).
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_LEN];
        OsRng.fill_bytes(&mut bytes);
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        Self(bytes)
    }

    /// Wraps raw key bytes (used as given; not clamped).
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw secret bytes.
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Parses the base64 text form (surrounding whitespace is ignored). Errors
    /// do not quote the text.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode_key(text).map(Self)
    }

    /// The base64 text form, for storing the key. The returned string is wiped
    /// when dropped.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0))
    }

    /// The matching public key (X25519 with the base point).
    pub fn public_key(&self) -> PublicKey {
        let secret = crypto_box::SecretKey::from_bytes(self.0);
        PublicKey(*secret.public_key().as_bytes())
    }
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// A WireGuard pre-shared key: 32 secret bytes mixed into the handshake
/// (what `wg genpsk` prints), same base64 text form as the other keys.
///
/// A secret like [`PrivateKey`]: wiped from memory on drop; `Debug` prints
/// `PresharedKey(<redacted>)`; no `Display` and no base64 encoder.
#[derive(Clone, PartialEq, Eq)]
pub struct PresharedKey([u8; KEY_LEN]);

impl PresharedKey {
    /// Wraps raw key bytes.
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw secret bytes.
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Parses the base64 text form (surrounding whitespace is ignored). Errors
    /// do not quote the text.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode_key(text).map(Self)
    }
}

impl Drop for PresharedKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

/// A private key and its public key.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    private: PrivateKey,
    public: PublicKey,
}

impl KeyPair {
    /// A new random key pair (see [`PrivateKey::generate`]).
    pub fn generate() -> Self {
        Self::from_private(PrivateKey::generate())
    }

    /// The key pair of an existing private key.
    pub fn from_private(private: PrivateKey) -> Self {
        let public = private.public_key();
        Self { private, public }
    }

    /// Parses a private key's base64 text and derives its public key.
    pub fn from_private_base64(text: &str) -> Result<Self, KeyError> {
        PrivateKey::from_base64(text).map(Self::from_private)
    }

    /// The private key.
    pub fn private(&self) -> &PrivateKey {
        &self.private
    }

    /// The public key.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .field("private", &self.private)
            .finish()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// RFC 7748 section 6.1: Alice's private key and the public key it gives.
    #[test]
    fn public_key_matches_rfc7748() {
        let private = PrivateKey::from_bytes(hex(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ));
        assert_eq!(
            private.public_key().as_bytes(),
            &hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
    }

    #[test]
    fn base64_round_trip() {
        let pair = KeyPair::generate();
        let text = pair.public().to_base64();
        assert_eq!(text.len(), KEY_BASE64_LEN);
        assert_eq!(PublicKey::from_base64(&text).unwrap(), *pair.public());
        assert_eq!(text.parse::<PublicKey>().unwrap(), *pair.public());
        assert_eq!(pair.public().to_string(), text);

        let private_text = pair.private().to_base64();
        let again = KeyPair::from_private_base64(&format!("{}\n", *private_text)).unwrap();
        assert_eq!(again, pair);
    }

    #[test]
    fn generated_keys_are_clamped_and_distinct() {
        let a = PrivateKey::generate();
        let b = PrivateKey::generate();
        assert_ne!(a, b);
        let k = a.as_bytes();
        assert_eq!(k[0] & 7, 0);
        assert_eq!(k[31] & 0xc0, 0x40);
    }

    #[test]
    fn bad_text_is_refused_clearly() {
        let err = PublicKey::from_base64("not base64!").unwrap_err();
        assert_eq!(err, KeyError::InvalidBase64 { len: 11 });
        assert!(err.to_string().contains("not valid base64"), "{err}");

        // 16 bytes of valid base64.
        let err = PublicKey::from_base64("AAAAAAAAAAAAAAAAAAAAAA==").unwrap_err();
        assert_eq!(err, KeyError::WrongLength(16));
        assert_eq!(
            err.to_string(),
            "key decodes to 16 bytes; a WireGuard key has 32"
        );
    }

    #[test]
    fn private_keys_stay_out_of_debug() {
        let pair = KeyPair::generate();
        let secret = pair.private().to_base64();
        let debug = format!("{pair:?} {:?}", pair.private());
        assert!(!debug.contains(secret.as_str()), "{debug}");
        assert!(debug.contains("<redacted>"));
        assert!(debug.contains(&pair.public().to_base64()));

        let psk_text = PrivateKey::generate().to_base64();
        let psk = PresharedKey::from_base64(&psk_text).unwrap();
        let debug = format!("{psk:?}");
        assert!(!debug.contains(psk_text.as_str()), "{debug}");
        assert_eq!(debug, "PresharedKey(<redacted>)");
    }

    pub(crate) fn hex<const N: usize>(text: &str) -> [u8; N] {
        let bytes: Vec<u8> = (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect();
        bytes.try_into().unwrap()
    }
}
