//! TLS for the gRPC service (management and Signal): certificate files the operator gives, or
//! a self-signed certificate the server makes once and keeps in its data directory, named by
//! its SHA-256 fingerprint in the log so agents can be told to trust it
//! (`swiftgate up --management-ca <data-dir>/grpc-cert.pem`). Plaintext only when asked.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sha2::{Digest, Sha256};

/// How the gRPC service speaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrpcTls {
    /// No TLS (`--grpc-plaintext`): agents' requests are sealed, but Signal and the metadata
    /// travel in clear.
    Plaintext,
    /// The operator's certificate chain and key (PEM files).
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
    /// A self-signed certificate for these names (DNS names or IP addresses), made once in
    /// the data directory and made anew when the names change.
    SelfSigned {
        /// Subject alternative names.
        names: Vec<String>,
    },
}

/// Name of the self-signed certificate in the data directory.
pub const CERT_FILE: &str = "grpc-cert.pem";
/// Name of its key (mode 0600).
pub const KEY_FILE: &str = "grpc-key.pem";
/// The names it was made for, one per line.
const NAMES_FILE: &str = "grpc-cert.names";

/// A certificate and key ready for the server.
#[derive(Clone)]
pub struct Identity {
    /// Certificate chain, PEM.
    pub cert_pem: Vec<u8>,
    /// Private key, PEM.
    pub key_pem: Vec<u8>,
    /// SHA-256 of the first certificate's DER, lower-case hex.
    pub fingerprint: String,
    /// Where the certificate is (for agents to trust).
    pub cert_path: PathBuf,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint)
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

/// SHA-256 of the first certificate in `pem`, lower-case hex.
pub fn fingerprint(pem: &[u8]) -> anyhow::Result<String> {
    let text = std::str::from_utf8(pem).context("certificate is not PEM text")?;
    let begin = "-----BEGIN CERTIFICATE-----";
    let end = "-----END CERTIFICATE-----";
    let start = text.find(begin).context("no certificate in the PEM")? + begin.len();
    let stop = text[start..]
        .find(end)
        .context("unterminated certificate")?
        + start;
    let b64: String = text[start..stop].split_whitespace().collect();
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .context("certificate base64")?;
    Ok(Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The identity `cfg` asks for; `None` for plaintext.
pub fn identity(cfg: &GrpcTls, data_dir: &Path) -> anyhow::Result<Option<Identity>> {
    match cfg {
        GrpcTls::Plaintext => Ok(None),
        GrpcTls::Files { cert, key } => {
            let cert_pem =
                std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
            let key_pem =
                std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
            Ok(Some(Identity {
                fingerprint: fingerprint(&cert_pem)
                    .with_context(|| format!("certificate {}", cert.display()))?,
                cert_pem,
                key_pem,
                cert_path: cert.clone(),
            }))
        }
        GrpcTls::SelfSigned { names } => self_signed(names, data_dir).map(Some),
    }
}

fn self_signed(names: &[String], dir: &Path) -> anyhow::Result<Identity> {
    let (cert_path, key_path, names_path) = (
        dir.join(CERT_FILE),
        dir.join(KEY_FILE),
        dir.join(NAMES_FILE),
    );
    let wanted = names.join("\n");
    if let (Ok(cert_pem), Ok(key_pem), Ok(had)) = (
        std::fs::read(&cert_path),
        std::fs::read(&key_path),
        std::fs::read_to_string(&names_path),
    ) && had == wanted
    {
        return Ok(Identity {
            fingerprint: fingerprint(&cert_pem)?,
            cert_pem,
            key_pem,
            cert_path,
        });
    }
    let key = rcgen::KeyPair::generate().context("generating the TLS key")?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).context("certificate names")?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "swiftgate-management");
    // Ten years: agents pin it; a new one is made only when the names change.
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let cert = params
        .self_signed(&key)
        .context("signing the certificate")?;
    let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
    let write = |path: &Path, data: &[u8], mode: u32| -> anyhow::Result<()> {
        let _ = std::fs::remove_file(path);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        f.write_all(data)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", path.display()))
    };
    write(&key_path, key_pem.as_bytes(), 0o600)?;
    write(&cert_path, cert_pem.as_bytes(), 0o644)?;
    write(&names_path, wanted.as_bytes(), 0o644)?;
    let fp = fingerprint(cert_pem.as_bytes())?;
    tracing::warn!(
        cert = %cert_path.display(),
        sha256 = %fp,
        names = %names.join(","),
        "made a self-signed TLS certificate for the gRPC service; agents trust it with \
         `swiftgate up --management-ca <this file>` (or give --grpc-tls-cert/--grpc-tls-key)"
    );
    Ok(Identity {
        cert_pem: cert_pem.into_bytes(),
        key_pem: key_pem.into_bytes(),
        fingerprint: fp,
        cert_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_kept_until_the_names_change() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string(), "192.0.2.1".to_string()];
        let a = identity(
            &GrpcTls::SelfSigned {
                names: names.clone(),
            },
            dir.path(),
        )
        .unwrap()
        .unwrap();
        let b = identity(&GrpcTls::SelfSigned { names }, dir.path())
            .unwrap()
            .unwrap();
        assert_eq!(a.fingerprint, b.fingerprint, "kept");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let c = identity(
            &GrpcTls::SelfSigned {
                names: vec!["mgmt.example.com".into()],
            },
            dir.path(),
        )
        .unwrap()
        .unwrap();
        assert_ne!(a.fingerprint, c.fingerprint, "new names, new certificate");
        assert_eq!(c.fingerprint.len(), 64);
        assert!(identity(&GrpcTls::Plaintext, dir.path()).unwrap().is_none());
    }
}
