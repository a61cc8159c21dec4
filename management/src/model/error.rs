//! The error every model operation returns; each variant maps to one HTTP / gRPC status.

/// Why a request was refused. The account is unchanged whenever one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// The request is malformed or refers to something unknown (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// The object addressed by the request does not exist (HTTP 404).
    #[error("{kind} {key:?} not found")]
    NotFound {
        /// What was looked for ("group", "policy", ...).
        kind: &'static str,
        /// The id or name given.
        key: String,
    },
    /// The request clashes with the current state: duplicate name, object still in use (409).
    #[error("{0}")]
    Conflict(String),
    /// A setup key that cannot register peers: unknown, revoked, expired, used up (403).
    #[error("{0}")]
    SetupKeyRejected(String),
    /// The peer is unknown or not approved (403).
    #[error("{0}")]
    PeerNotAllowed(String),
}

/// Short form of `Result<T, ModelError>`.
pub type ModelResult<T> = Result<T, ModelError>;

/// `ModelError::Invalid` from anything printable.
pub fn invalid(msg: impl Into<String>) -> ModelError {
    ModelError::Invalid(msg.into())
}

/// `ModelError::Conflict` from anything printable.
pub fn conflict(msg: impl Into<String>) -> ModelError {
    ModelError::Conflict(msg.into())
}
