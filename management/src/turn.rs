//! Time-limited TURN credentials from a shared secret, the "TURN REST API" scheme
//! (draft-uberti-behave-turn-rest) that coturn checks with `use-auth-secret` and
//! `static-auth-secret`, and that NetBird's management server hands its peers:
//!
//! - username: `<expiry in Unix seconds>:<peer id>` (coturn reads the number before the
//!   colon and refuses the credentials after it; the rest names the peer in coturn's log);
//! - password: base64 (standard, padded) of HMAC-SHA1(secret, username).
//!
//! NetBird's username is the expiry alone; the peer id after it changes nothing for coturn and
//! NetBird agents and names the peer in coturn's log.
//!
//! Also the token for NetBird's own relay servers ([`RelayConfig`]): the payload is the expiry
//! in Unix seconds as decimal text, the signature base64 (standard, padded) of
//! HMAC-SHA256(SHA-256(secret), payload); a NetBird relay checks both.
//!
//! Sans-IO: the caller passes the time. Credentials are renewed well before they expire
//! ([`TurnConfig::refresh_in`]); the Sync stream sends the new ones without a map.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// How long credentials last unless configured: NetBird's default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(12 * 3600);

/// The shortest lifetime accepted (renewal happens at three quarters of it).
pub const MIN_TTL: Duration = Duration::from_secs(60);

/// The longest lifetime accepted: a week (credentials are renewed long before; a longer
/// life only lengthens what a leaked credential is good for).
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// A secret shared with the TURN servers. Its `Debug` never shows it.
#[derive(Clone)]
pub struct TurnSecret(Vec<u8>);

impl std::fmt::Debug for TurnSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TurnSecret(..)")
    }
}

/// Why a secret file (TURN's or the relays') is refused.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// It cannot be read.
    #[error("secret file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Others than its owner may read it.
    #[error("secret file {path} is readable by others (mode {mode:o}); `chmod 600` it first")]
    Exposed {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// It holds nothing.
    #[error("secret file {path} is empty")]
    Empty {
        /// The file.
        path: String,
    },
}

impl TurnSecret {
    /// The secret as given (tests and callers that hold it already).
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        TurnSecret(secret.into())
    }

    /// Reads the secret from a file that only its owner may read (mode `0600` or tighter);
    /// surrounding whitespace is not part of it.
    pub fn from_file(path: &Path) -> Result<Self, SecretError> {
        use std::os::unix::fs::PermissionsExt as _;
        let shown = path.display().to_string();
        let read = |source| SecretError::Read {
            path: shown.clone(),
            source,
        };
        // One open file for the check and the read: the file cannot be swapped in between.
        let mut file = std::fs::File::open(path).map_err(read)?;
        let mode = file.metadata().map_err(read)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretError::Exposed { path: shown, mode });
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text).map_err(read)?;
        let secret = text.trim();
        if secret.is_empty() {
            return Err(SecretError::Empty { path: shown });
        }
        Ok(TurnSecret(secret.as_bytes().to_vec()))
    }
}

/// One peer's credentials for the TURN servers.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnCredentials {
    /// `<expiry>:<peer id>`.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)).
    pub password: String,
    /// When the TURN servers stop accepting them (Unix seconds).
    pub expires_at: u64,
}

impl std::fmt::Debug for TurnCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnCredentials")
            .field("username", &self.username)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The credentials of `subject` (a peer id) expiring at `expires_at`.
pub fn credentials(secret: &TurnSecret, subject: &str, expires_at: u64) -> TurnCredentials {
    let username = format!("{expires_at}:{subject}");
    let mut mac = Hmac::<Sha1>::new_from_slice(&secret.0).expect("HMAC takes a key of any length");
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    TurnCredentials {
        username,
        password,
        expires_at,
    }
}

/// The TURN servers announced to peers and how their credentials are made.
#[derive(Clone, Debug)]
pub struct TurnConfig {
    /// TURN URIs (`turn:host:3478?transport=udp`, `turns:host:5349`).
    pub uris: Vec<String>,
    /// The secret shared with those servers.
    pub secret: TurnSecret,
    /// How long each peer's credentials last.
    pub ttl: Duration,
}

impl TurnConfig {
    /// A peer's credentials issued at `now` (Unix seconds).
    pub fn issue(&self, peer_id: &str, now: u64) -> TurnCredentials {
        credentials(
            &self.secret,
            peer_id,
            now.saturating_add(self.ttl.as_secs()),
        )
    }

    /// How long after issuing credentials new ones are sent: three quarters of their life,
    /// so a peer never holds expired ones while its Sync stream is up.
    pub fn refresh_in(&self) -> Duration {
        self.ttl * 3 / 4
    }
}

/// A NetBird relay token (`RelayConfig.tokenPayload` / `tokenSignature`).
#[derive(Clone, PartialEq, Eq)]
pub struct RelayToken {
    /// The expiry, Unix seconds, as decimal text.
    pub payload: String,
    /// base64(HMAC-SHA256(SHA-256(secret), payload)).
    pub signature: String,
}

impl std::fmt::Debug for RelayToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayToken")
            .field("payload", &self.payload)
            .finish_non_exhaustive()
    }
}

/// NetBird relay servers announced to peers and the secret their tokens are signed with.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Relay URLs (`rels://relay.example.org:443`).
    pub urls: Vec<String>,
    /// The secret shared with those relays.
    pub secret: TurnSecret,
    /// How long a token lasts.
    pub ttl: Duration,
}

impl RelayConfig {
    /// A token issued at `now` (Unix seconds).
    pub fn issue(&self, now: u64) -> RelayToken {
        use sha2::Digest as _;
        let payload = now.saturating_add(self.ttl.as_secs()).to_string();
        let key = sha2::Sha256::digest(&self.secret.0);
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("a 32-byte key");
        mac.update(payload.as_bytes());
        RelayToken {
            payload,
            signature: base64::engine::general_purpose::STANDARD
                .encode(mac.finalize().into_bytes()),
        }
    }

    /// When new tokens are sent: at three quarters of their life.
    pub fn refresh_in(&self) -> Duration {
        self.ttl * 3 / 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2202's HMAC-SHA1 test case 2 ("Jefe"), through the TURN scheme's encoding.
    #[test]
    fn password_is_base64_of_hmac_sha1_of_the_username() {
        let mut mac = Hmac::<Sha1>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");

        let c = credentials(&TurnSecret::new("Jefe"), "peer-1", 1_796_644_800);
        assert_eq!(c.username, "1796644800:peer-1");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&c.password)
            .unwrap();
        let mut mac = Hmac::<Sha1>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"1796644800:peer-1");
        assert_eq!(raw, mac.finalize().into_bytes().to_vec());
        assert_eq!(c.password.len(), 28, "20 bytes, padded base64");
    }

    #[test]
    fn issued_credentials_expire_after_the_ttl_and_are_renewed_before() {
        let cfg = TurnConfig {
            uris: vec!["turn:192.0.2.1:3478".into()],
            secret: TurnSecret::new("s"),
            ttl: Duration::from_secs(3600),
        };
        let c = cfg.issue("p", 1000);
        assert_eq!(c.expires_at, 4600);
        assert!(c.username.starts_with("4600:"));
        assert_eq!(cfg.refresh_in(), Duration::from_secs(2700));
        assert!(
            !format!("{c:?}").contains(&c.password),
            "Debug hides the password"
        );
        assert_eq!(format!("{:?}", cfg.secret), "TurnSecret(..)");
    }

    #[test]
    fn relay_tokens_sign_the_expiry_with_the_hashed_secret() {
        use sha2::Digest as _;
        let cfg = RelayConfig {
            urls: vec!["rels://relay.swiftgate.test:443".into()],
            secret: TurnSecret::new("relay-secret"),
            ttl: Duration::from_secs(86_400),
        };
        let t = cfg.issue(1_000);
        assert_eq!(t.payload, "87400");
        let key = sha2::Sha256::digest(b"relay-secret");
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(b"87400");
        let sig = base64::engine::general_purpose::STANDARD
            .decode(&t.signature)
            .unwrap();
        mac.verify_slice(&sig).expect("the relay's check passes");
        assert_eq!(sig.len(), 32);
        assert!(!format!("{t:?}").contains(&t.signature));
    }

    #[test]
    fn secret_files_others_can_read_are_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("turn-secret");
        std::fs::write(&p, "  s3cret\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            TurnSecret::from_file(&p),
            Err(SecretError::Exposed { mode: 0o644, .. })
        ));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = TurnSecret::from_file(&p).unwrap();
        assert_eq!(s.0, b"s3cret");
        std::fs::write(&p, "\n").unwrap();
        assert!(matches!(
            TurnSecret::from_file(&p),
            Err(SecretError::Empty { .. })
        ));
    }
}
