//! swiftgate's control-plane protocol: wire-compatible with NetBird's
//! Management and Signal gRPC services.
//!
//! - [`management`] and [`signalexchange`]: the messages, clients and servers
//!   generated from `proto/management.proto` and `proto/signalexchange.proto`.
//! - [`envelope`]: NaCl box sealing of the inner messages between WireGuard
//!   keys (`nonce || tag || ciphertext`).
//! - [`keys`]: WireGuard key pairs and their base64 form.
//! - [`client`]: the Management client the agent uses.
//!
//! See `proto/README.md` for the compatibility notes.

#![warn(missing_docs)]

pub mod client;
pub mod envelope;
pub mod keys;
pub mod signal_server;

/// The Management service (`package management`): generated messages, the
/// client (`management_service_client`) and the server trait
/// (`management_service_server`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod management {
    tonic::include_proto!("management");
}

/// The Signal service (`package signalexchange`): generated messages, client
/// and server.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod signalexchange {
    tonic::include_proto!("signalexchange");

    /// Request metadata key naming the peer that opens `ConnectStream` (its
    /// WireGuard public key, base64).
    pub const PEER_ID_HEADER: &str = "x-wiretrustee-peer-id";

    /// Response header by which the server confirms the peer is registered on
    /// `ConnectStream`; clients wait for it before relying on the stream.
    pub const PEER_REGISTERED_HEADER: &str = "x-wiretrustee-peer-registered";
}

pub use client::{ClientError, ManagementClient, SyncStream};
pub use envelope::{EnvelopeError, SharedKey};
pub use keys::{KeyError, KeyPair, PrivateKey, PublicKey};

mod redacted {
    //! `Debug` for the generated messages that carry credentials: the
    //! secrets are shown as `<redacted>` (or `""` when empty).

    use std::fmt;

    use crate::management::{LoginRequest, ProtectedHostConfig, RelayConfig};

    fn secret(value: &str) -> &'static str {
        if value.is_empty() { "" } else { "<redacted>" }
    }

    impl fmt::Debug for LoginRequest {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("LoginRequest")
                .field("setup_key", &secret(&self.setup_key))
                .field("meta", &self.meta)
                .field("jwt_token", &secret(&self.jwt_token))
                .field("peer_keys", &self.peer_keys)
                .field("dns_labels", &self.dns_labels)
                .finish()
        }
    }

    impl fmt::Debug for ProtectedHostConfig {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("ProtectedHostConfig")
                .field("host_config", &self.host_config)
                .field("user", &self.user)
                .field("password", &secret(&self.password))
                .finish()
        }
    }

    impl fmt::Debug for RelayConfig {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("RelayConfig")
                .field("urls", &self.urls)
                .field("token_payload", &self.token_payload)
                .field("token_signature", &secret(&self.token_signature))
                .finish()
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn credentials_are_redacted() {
            let turn = ProtectedHostConfig {
                host_config: None,
                user: "1700000000:peer".into(),
                password: "hunter2".into(),
            };
            let relay = RelayConfig {
                urls: vec!["rels://relay.example:443".into()],
                token_payload: "payload".into(),
                token_signature: "sig-secret".into(),
            };
            let login = LoginRequest {
                jwt_token: "eyJ-secret".into(),
                ..Default::default()
            };
            let text = format!("{turn:?} {relay:?} {login:?}");
            for leaked in ["hunter2", "sig-secret", "eyJ-secret"] {
                assert!(!text.contains(leaked), "{text}");
            }
            assert!(text.contains("rels://relay.example:443"), "{text}");
        }
    }
}
