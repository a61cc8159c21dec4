//! Management sync: login, the Sync stream, the peer's key and the last map on disk.
//!
//! [`sync`] follows the stream and hands every map that is not older than the last one to the
//! `up` loop, converted by [`crate::netmap::convert`] (typed, no text in between). Maps with
//! the same serial are taken too: NetBird's server pushes posture, status and metadata changes
//! without raising the serial, and its clients skip only lower serials.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result};
use prost::Message as _;
use swiftgate_proto::{client::ManagementClient, keys::KeyPair, management::SyncResponse};
use tokio::sync::{mpsc, watch};

use crate::{
    connect::{Servers, TurnServer},
    netmap::{self, Converted, MapError},
    sysinfo,
};

/// Settings that come from the command line, not from the management server.
#[derive(Debug, Clone, Default)]
pub struct Local {
    /// Overlay interface name.
    pub overlay: String,
    /// LAN interfaces (for the routes this peer serves).
    pub lan: Vec<String>,
    /// WireGuard listen port.
    pub listen_port: u16,
    /// bpffs pin path.
    pub pin_path: Option<PathBuf>,
    /// Control socket.
    pub control_socket: Option<PathBuf>,
    /// Worker threads.
    pub workers: Option<usize>,
    /// Conntrack sizes, shares and timeouts (defaults unless set).
    pub conntrack: crate::config::ConntrackConfig,
    /// Whom `https://` connections to management and Signal trust besides the system's roots.
    pub trust: swiftgate_proto::client::Trust,
    /// The management server's public key once a login learnt it; Signal proves the peer's
    /// key towards it (a swiftgate server's relay checks the proof, others ignore it).
    pub server_key: std::sync::Arc<std::sync::Mutex<Option<swiftgate_proto::PublicKey>>>,
}

/// Loads the peer's key from `dir/key`, creating it (mode 0600) on first start.
pub fn load_or_create_key(dir: &Path) -> Result<KeyPair> {
    let path = dir.join("key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return KeyPair::from_private_base64(text.trim())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let kp = KeyPair::generate();
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    use std::io::Write as _;
    f.write_all(kp.private().to_base64().as_bytes())?;
    Ok(kp)
}

/// The last map applied, persisted so a restart without the server still forwards.
pub fn load_last(dir: &Path) -> Option<SyncResponse> {
    let b = std::fs::read(dir.join("last-map.pb")).ok()?;
    SyncResponse::decode(b.as_slice()).ok()
}

fn save_last(dir: &Path, r: &SyncResponse) -> Result<()> {
    let tmp = dir.join("last-map.pb.tmp");
    std::fs::write(&tmp, r.encode_to_vec())?;
    std::fs::rename(&tmp, dir.join("last-map.pb"))?;
    Ok(())
}

/// A map ready to apply.
#[derive(Debug)]
pub struct Update {
    /// Serial of the map.
    pub serial: u64,
    /// The configuration it converts to, and what it leaves out.
    pub converted: Converted,
    /// The Signal server to find peers' endpoints through, if the management server names one.
    pub signal: Option<String>,
    /// The STUN and TURN servers it announces (empty if the response names none).
    pub servers: Servers,
}

/// Publishes the servers when they changed.
fn publish(tx: &watch::Sender<Servers>, now: Servers) {
    tx.send_if_modified(|cur| {
        let changed = *cur != now;
        if changed {
            tracing::info!(stuns = ?now.stuns, turns = now.turns.len(), "STUN/TURN servers");
            *cur = now;
        }
        changed
    });
}

/// The STUN and TURN servers of a `NetbirdConfig` (TURN with its credentials).
pub fn servers_of(c: Option<&swiftgate_proto::management::NetbirdConfig>) -> Servers {
    let Some(c) = c else {
        return Servers::default();
    };
    Servers {
        stuns: c.stuns.iter().map(|h| h.uri.clone()).collect(),
        turns: c
            .turns
            .iter()
            .filter_map(|t| {
                Some(TurnServer {
                    uri: t.host_config.as_ref()?.uri.clone(),
                    username: t.user.clone(),
                    password: t.password.clone(),
                })
            })
            .collect(),
    }
}

/// `http(s)://host:port` of a NetBird `HostConfig`.
fn host_url(h: &swiftgate_proto::management::HostConfig) -> Option<String> {
    use swiftgate_proto::management::host_config::Protocol;
    if h.uri.is_empty() {
        return None;
    }
    if h.uri.contains("://") {
        return Some(h.uri.clone());
    }
    let scheme = if Protocol::try_from(h.protocol) == Ok(Protocol::Https) {
        "https"
    } else {
        "http"
    };
    Some(format!("{scheme}://{}", h.uri))
}

/// Converts a sync response (`None` when it carries no network map).
pub fn update_of(
    local: &Local,
    keys: &KeyPair,
    r: &SyncResponse,
) -> Option<Result<Update, MapError>> {
    let map = r.network_map.as_ref()?;
    let Some(peer) = map.peer_config.as_ref().or(r.peer_config.as_ref()) else {
        return Some(Err(MapError::NoPeerConfig));
    };
    let signal = r
        .netbird_config
        .as_ref()
        .and_then(|c| c.signal.as_ref())
        .and_then(host_url);
    Some(
        netmap::convert(local, keys.private(), keys.public(), peer, map).map(|converted| Update {
            serial: map.serial,
            converted,
            signal,
            servers: servers_of(r.netbird_config.as_ref()),
        }),
    )
}

/// What to do with one message of the Sync stream.
#[derive(Debug)]
pub enum Offer {
    /// Apply this map (and persist the message).
    Apply(Box<Update>),
    /// A lower serial than the last map applied: ignored, as NetBird's clients do.
    Older {
        /// Its serial.
        serial: u64,
        /// The last applied serial.
        last: u64,
    },
    /// The message carries no network map.
    NoMap,
    /// The map cannot be used at all (nothing of it is applied).
    Refused(MapError),
}

/// Decides which maps of the Sync stream are applied (sans-IO: the stream and the disk are
/// the caller's). A map is applied unless its serial is lower than the last applied one's:
/// NetBird's server pushes posture, status and metadata changes with the serial unchanged, so
/// skipping equal serials would keep a revoked source allowed.
#[derive(Debug, Clone)]
pub struct Follower {
    last_serial: u64,
}

impl Follower {
    /// Starts after the map with `last_serial` (0: none yet).
    pub fn new(last_serial: u64) -> Self {
        Follower { last_serial }
    }

    /// Converts one Sync message and says what to do with it.
    pub fn offer(&mut self, local: &Local, keys: &KeyPair, resp: &SyncResponse) -> Offer {
        match update_of(local, keys, resp) {
            None => Offer::NoMap,
            Some(Err(e)) => Offer::Refused(e),
            Some(Ok(u)) if u.serial < self.last_serial => Offer::Older {
                serial: u.serial,
                last: self.last_serial,
            },
            Some(Ok(u)) => {
                self.last_serial = u.serial;
                Offer::Apply(Box::new(u))
            }
        }
    }
}

/// Logs in and follows the Sync stream forever, reconnecting with backoff; sends every map
/// whose serial is not lower than the last one's (NetBird's servers push same-serial updates;
/// the `up` loop skips a map that changes nothing).
pub async fn sync(
    url: String,
    setup_key: Option<String>,
    state_dir: PathBuf,
    local: Local,
    keys: KeyPair,
    tx: mpsc::Sender<Update>,
    servers: watch::Sender<Servers>,
) {
    let mut follower = Follower::new(
        load_last(&state_dir)
            .and_then(|r| r.network_map.map(|m| m.serial))
            .unwrap_or(0),
    );
    let mut backoff = Duration::from_millis(500);
    let mut meta = sysinfo::system_meta(&hostname(), &local.overlay);
    loop {
        let attempt = async {
            let client = ManagementClient::connect_with(&url, &local.trust).await?;
            let server_key = client.server_key().await?;
            *local.server_key.lock().unwrap_or_else(|e| e.into_inner()) = Some(server_key);
            // Refreshed at every login: addresses and running processes change.
            let fresh = sysinfo::system_meta(&hostname(), &local.overlay);
            meta = swiftgate_proto::management::PeerSystemMeta {
                files: std::mem::take(&mut meta.files),
                swiftgate_map_refusals: std::mem::take(&mut meta.swiftgate_map_refusals),
                ..fresh
            };
            let login = client
                .login(setup_key.as_deref(), &keys, meta.clone())
                .await?;
            answer_checks(&client, &keys, &mut meta, &login.checks).await?;
            let signal = login
                .netbird_config
                .as_ref()
                .and_then(|c| c.signal.as_ref())
                .and_then(host_url);
            tracing::info!(%url, signal = ?signal, "logged in to management");
            let at_login = servers_of(login.netbird_config.as_ref());
            publish(&servers, at_login.clone());
            let mut stream = client.sync(&keys, meta.clone()).await?;
            while let Some(resp) = stream.message().await? {
                backoff = Duration::from_millis(500);
                if let Some(c) = resp.netbird_config.as_ref() {
                    let mut now = servers_of(Some(c));
                    if resp.network_map.is_none() {
                        // Renewed TURN credentials only: the rest stays as announced.
                        let cur = servers.borrow().clone();
                        now = Servers {
                            stuns: cur.stuns,
                            turns: if now.turns.is_empty() {
                                cur.turns
                            } else {
                                now.turns
                            },
                        };
                    } else if now.stuns.is_empty() && now.turns.is_empty() {
                        now = at_login.clone();
                    }
                    publish(&servers, now);
                }
                answer_checks(&client, &keys, &mut meta, &resp.checks).await?;
                match follower.offer(&local, &keys, &resp) {
                    Offer::Apply(mut u) => {
                        report_refusals(&client, &keys, &mut meta, &u).await?;
                        u.signal = u.signal.or_else(|| signal.clone());
                        if u.servers == Servers::default() {
                            u.servers = at_login.clone();
                        }
                        // Kept with the servers named at login, so a restart without the
                        // management server still finds Signal.
                        let mut keep = resp.clone();
                        if keep.netbird_config.is_none() {
                            keep.netbird_config = login.netbird_config.clone();
                        }
                        if let Err(e) = save_last(&state_dir, &keep) {
                            tracing::warn!(error = %e, "persisting the network map");
                        }
                        if tx.send(*u).await.is_err() {
                            return Ok(());
                        }
                    }
                    Offer::Older { serial, last } => {
                        tracing::debug!(serial, last_serial = last, "older serial, ignored")
                    }
                    Offer::NoMap => {}
                    Offer::Refused(e) => tracing::error!(error = %e, "network map refused"),
                }
            }
            Ok::<(), swiftgate_proto::client::ClientError>(())
        };
        if let Err(e) = attempt.await {
            tracing::warn!(error = %e, retry_in = ?backoff, "management unreachable; forwarding with the last map");
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Tells the server which entries of the map the agent could not apply as sent (swiftgate's
/// extension of `PeerSystemMeta`), when that changed.
async fn report_refusals(
    client: &ManagementClient,
    keys: &KeyPair,
    meta: &mut swiftgate_proto::management::PeerSystemMeta,
    u: &Update,
) -> Result<(), swiftgate_proto::client::ClientError> {
    let now: Vec<_> = u
        .converted
        .refused
        .iter()
        .map(|r| r.to_pb(u.serial))
        .collect();
    let same = now.len() == meta.swiftgate_map_refusals.len()
        && now
            .iter()
            .zip(&meta.swiftgate_map_refusals)
            .all(|(a, b)| (&a.object, &a.reason, &a.effect) == (&b.object, &b.reason, &b.effect));
    if !same {
        meta.swiftgate_map_refusals = now;
        tracing::info!(
            refused = meta.swiftgate_map_refusals.len(),
            "reporting refused map entries to management"
        );
        client.sync_meta(keys, meta.clone()).await?;
    }
    Ok(())
}

/// Answers the server's process checks: when the answers differ from the ones last sent, the
/// new meta goes to the server (`SyncMeta`), which re-evaluates the peer's posture.
async fn answer_checks(
    client: &ManagementClient,
    keys: &KeyPair,
    meta: &mut swiftgate_proto::management::PeerSystemMeta,
    checks: &[swiftgate_proto::management::Checks],
) -> Result<(), swiftgate_proto::client::ClientError> {
    if checks.is_empty() && meta.files.is_empty() {
        return Ok(());
    }
    let files = sysinfo::answer_checks(checks);
    if files != meta.files {
        meta.files = files;
        tracing::info!(files = meta.files.len(), "answering posture checks");
        client.sync_meta(keys, meta.clone()).await?;
    }
    Ok(())
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "swiftgate".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_persist_with_tight_permissions() {
        let dir = std::env::temp_dir().join(format!("sg-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = load_or_create_key(&dir).unwrap();
        let b = load_or_create_key(&dir).unwrap();
        assert_eq!(a.public(), b.public());
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(dir.join("key"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
