//! The service: the one place the account changes. It owns the current account (an immutable
//! snapshot behind an `Arc`) and the store; each change runs on a copy, is stored in one
//! transaction, and only then becomes the current account with a higher serial. Watchers (the
//! gRPC Sync streams) learn of every new serial through a `watch` channel.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use parking_lot::{FairMutex, FairMutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

mod auth;

pub use auth::{BOOTSTRAP_USER, LAST_USED_EVERY, UserInput, UserUpdate};

use crate::auth::Directory;
use crate::model::{Account, ModelError, PeerMeta};
use crate::netmap::{Netmapper, NetworkMap};
use crate::store::{Store, StoreError};

/// Why a service call failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request was refused; nothing changed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Storing failed; nothing changed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The caller's role does not allow this (HTTP 403); nothing changed.
    #[error("{0}")]
    Forbidden(String),
}

struct State {
    account: Arc<Account>,
    store: Store,
}

/// Activity-log events waiting to be written together ([`Service::record_event`]).
#[derive(Default)]
struct EventQueue {
    /// The next event's number.
    next: u64,
    /// Numbered events not written yet.
    pending: Vec<(u64, crate::events::Event)>,
    /// Recent failed writes: the numbers they carried and the error (the last 64).
    failed: std::collections::VecDeque<(std::ops::RangeInclusive<u64>, String)>,
}

/// The management service.
pub struct Service {
    /// The writer's account and the store. Fair (first come, first served): under many
    /// writers an unfair lock let some wait behind hundreds of others.
    state: FairMutex<State>,
    /// The account as readers see it: replaced (under `state`) once a change is stored, so
    /// that readers never wait for a write's disk sync.
    published: RwLock<Arc<Account>>,
    /// Group members of the account version with this serial, built on first use.
    members: Mutex<Option<(u64, Arc<crate::model::Members>)>>,
    /// Activity-log events waiting for the store ([`Self::record_event`]).
    event_queue: Mutex<EventQueue>,
    /// Users and tokens; taken after `state` when both are needed.
    directory: RwLock<Directory>,
    changes: watch::Sender<u64>,
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Service {
    /// Opens the service over a store: loads the account, or creates and stores a new one (with
    /// the All group and the Default policy) if the store allows it
    /// ([`Store::may_create_account`]; else [`crate::store::StoreError::NoAccount`]).
    pub fn new(mut store: Store) -> Result<Service, ServiceError> {
        let account = match store.load_account()? {
            Some(mut a) => {
                let before = a.clone();
                if a.upgrade_legacy_settings() {
                    store.save(Some(&before), &a)?;
                    tracing::info!(
                        account = %a.id,
                        overlay_range = %a.settings.overlay_range,
                        overlay_range_v6 = ?a.settings.overlay_range_v6,
                        "upgraded stored settings (overlay /16, IPv6 range)"
                    );
                }
                a
            }
            None if !store.may_create_account() => {
                return Err(store.no_account_error().into());
            }
            None => {
                let a = Account::new("default");
                store.save(None, &a)?;
                tracing::info!(account = %a.id, "created a new account");
                a
            }
        };
        let (users, tokens) = store.load_directory()?;
        let (changes, _) = watch::channel(account.serial);
        let account = Arc::new(account);
        Ok(Service {
            published: RwLock::new(account.clone()),
            state: FairMutex::new(State { account, store }),
            directory: RwLock::new(Directory::new(users, tokens)),
            members: Mutex::new(None),
            event_queue: Mutex::new(EventQueue::default()),
            changes,
        })
    }

    /// Opens the database file at `path` (creating it if missing) and the service over it; an
    /// existing file that is empty or holds no account is refused (see [`Store::open_with`]).
    pub fn open(path: &Path) -> Result<Service, ServiceError> {
        Self::open_with(path, false)
    }

    /// Like [`Self::open`]; with `init`, an existing empty database file, or one without an
    /// account, gets a new account (`serve --init`). An existing account is never replaced.
    pub fn open_with(path: &Path, init: bool) -> Result<Service, ServiceError> {
        Self::new(Store::open_with(path, init)?)
    }

    fn lock(&self) -> FairMutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied change (changes are made
        // on a copy), and this lock does not poison.
        self.state.lock()
    }

    /// The current account and its group members: the index, built on first use and then
    /// advanced with every change ([`Self::publish`]); a scan of the account in the moment a
    /// change is being published.
    pub fn account_with_members(&self) -> (Arc<Account>, Arc<crate::model::Members>) {
        // The cache before the account: `publish` replaces the account first, so a cached
        // index never belongs to a newer version than the account read after it.
        let cached = self
            .members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let a = self.account();
        match cached {
            Some((serial, m)) if serial == a.serial => (a, m),
            Some(_) => {
                let m = Arc::new(crate::model::Members::Scan(a.clone()));
                (a, m)
            }
            None => {
                let m = Arc::new(a.members());
                let mut cache = self.members.lock().unwrap_or_else(|e| e.into_inner());
                if cache.is_none() && self.account().serial == a.serial {
                    *cache = Some((a.serial, m.clone()));
                }
                (a, m)
            }
        }
    }

    /// The current account (a snapshot; cheap).
    pub fn account(&self) -> Arc<Account> {
        self.published
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes a stored version the account: for the writer (`st`), for readers, and for the
    /// member index, which is advanced by what changed when the previous version's is at
    /// hand (else it is built again on first use). Called with `state` held.
    fn publish(&self, st: &mut State, next: Account) {
        let prev = std::mem::replace(&mut st.account, Arc::new(next));
        let next = st.account.clone();
        *self.published.write().unwrap_or_else(|e| e.into_inner()) = next.clone();
        let mut cache = self.members.lock().unwrap_or_else(|e| e.into_inner());
        let advanced = match cache.as_ref() {
            Some((serial, m)) if *serial == prev.serial && next.serial != prev.serial => {
                m.advance(&prev, &next).map(Arc::new)
            }
            // Same serial (a peer's status): membership is unchanged.
            Some((serial, m)) if *serial == next.serial => Some(m.clone()),
            _ => None,
        };
        *cache = advanced.map(|m| (next.serial, m));
    }

    /// Runs `op` on a copy of the account. On success, if anything changed, the serial goes up,
    /// the change is stored in one transaction, and the copy becomes the account. On any error
    /// nothing changes.
    pub fn mutate<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Account, u64) -> Result<T, ModelError>,
    ) -> Result<T, ServiceError> {
        let now = now_secs();
        let mut guard = self.lock();
        let st = &mut *guard;
        let mut next = (*st.account).clone();
        let out = match f(&mut next, now) {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(op, error = %e, "request refused");
                return Err(e.into());
            }
        };
        if next == *st.account {
            return Ok(out);
        }
        next.serial = st.account.serial + 1;
        let serial = next.serial;
        if let Err(e) = st.store.save(Some(&st.account), &next) {
            tracing::error!(op, error = %e, "storing a change failed; nothing changed");
            return Err(e.into());
        }
        self.publish(st, next);
        drop(guard);
        tracing::info!(op, serial, "account changed");
        self.changes.send_replace(serial);
        Ok(out)
    }

    /// Records that a peer was seen now, and whether it has a Sync stream open (`None`: leave
    /// that as it is, here and in the store). Bookkeeping no network map depends on: the serial
    /// stays and nobody is notified. Only the peer's `last_seen_at` (and `connected` when
    /// given) are written to the store, so a copy of the peer this server loaded earlier never
    /// overwrites what another server on the same database changed since (a rename, say).
    pub fn peer_seen(
        &self,
        op: &'static str,
        peer_id: &str,
        connected: Option<bool>,
    ) -> Result<(), ServiceError> {
        let now = now_secs();
        let mut guard = self.lock();
        let st = &mut *guard;
        let mut next = (*st.account).clone();
        let p = next
            .peers
            .get_mut(peer_id)
            .ok_or_else(|| ModelError::NotFound {
                kind: "peer",
                key: peer_id.to_string(),
            })?;
        if let Some(c) = connected {
            p.connected = c;
        }
        p.last_seen_at = now;
        let seen = p.last_seen_at;
        match st.store.save_peer_status(peer_id, connected, seen) {
            Ok(true) => {}
            Ok(false) => tracing::debug!(op, peer = %peer_id, "peer row gone; status not stored"),
            Err(e) => {
                tracing::error!(op, peer = %peer_id, error = %e, "storing peer status failed");
                return Err(e.into());
            }
        }
        self.publish(st, next);
        tracing::debug!(op, peer = %peer_id, ?connected, "peer status stored");
        Ok(())
    }

    /// Replaces what a peer reports about itself (the posture inputs). A change raises the
    /// serial and notifies (posture verdicts may change maps); only the peer's `meta` and the
    /// account serial are written to the store, never the rest of a possibly stale peer row.
    /// Unchanged meta changes nothing.
    pub fn peer_meta(
        &self,
        op: &'static str,
        peer_id: &str,
        meta: &PeerMeta,
    ) -> Result<(), ServiceError> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let p = st
            .account
            .peers
            .get(peer_id)
            .ok_or_else(|| ModelError::NotFound {
                kind: "peer",
                key: peer_id.to_string(),
            })?;
        if p.meta == *meta {
            return Ok(());
        }
        let mut next = (*st.account).clone();
        next.serial += 1;
        let serial = next.serial;
        if let Some(p) = next.peers.get_mut(peer_id) {
            p.meta = meta.clone();
        }
        match st.store.save_peer_meta(peer_id, meta, serial) {
            Ok(true) => {}
            Ok(false) => tracing::debug!(op, peer = %peer_id, "peer row gone; meta not stored"),
            Err(e) => {
                tracing::error!(op, peer = %peer_id, error = %e, "storing peer meta failed");
                return Err(e.into());
            }
        }
        self.publish(st, next);
        drop(guard);
        tracing::info!(op, serial, peer = %peer_id, "peer meta changed");
        self.changes.send_replace(serial);
        Ok(())
    }

    /// A receiver that sees the serial of every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The network map of a peer, computed on the current account.
    pub fn network_map(&self, peer_key: &str) -> Result<NetworkMap, ServiceError> {
        let a = self.account();
        let id = a.peer_id(peer_key)?;
        Netmapper::new(&a).map_for(&id).ok_or_else(|| {
            ServiceError::Model(ModelError::NotFound {
                kind: "peer",
                key: peer_key.to_string(),
            })
        })
    }

    /// The stored server private key, generating and storing it with `generate` on first use.
    pub fn server_private_key(
        &self,
        generate: impl FnOnce() -> String,
    ) -> Result<String, ServiceError> {
        let mut st = self.lock();
        if let Some(k) = st.store.server_key()? {
            return Ok(k);
        }
        let k = generate();
        Ok(st.store.init_server_key(&k, now_secs())?)
    }

    /// Removes ephemeral peers offline for longer than the account allows; returns how many.
    pub fn remove_stale_ephemeral(&self) -> Result<usize, ServiceError> {
        let removed = self.mutate("remove_stale_ephemeral", |a, now| {
            Ok(a.remove_stale_ephemeral(now))
        })?;
        for p in &removed {
            tracing::info!(peer = %p.id, name = %p.name, "removed offline ephemeral peer");
        }
        Ok(removed.len())
    }

    /// Runs the periodic clean-up (ephemeral peers) every `every` until the runtime stops.
    pub fn spawn_housekeeping(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let svc = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let s = svc.clone();
                match tokio::task::spawn_blocking(move || s.remove_stale_ephemeral()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "ephemeral clean-up failed"),
                    Err(e) => tracing::warn!(error = %e, "ephemeral clean-up task failed"),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{GroupInput, PeerUpdate, RegisterPeer, SetupKeyInput};

    /// A service on `path` with one registered peer "alice"; returns the peer id.
    fn with_peer(path: &Path) -> (Service, String) {
        let svc = Service::open(path).unwrap();
        let (_, key) = svc
            .mutate("key", |a, now| {
                a.create_setup_key(
                    &SetupKeyInput {
                        name: "k".into(),
                        ..Default::default()
                    },
                    now,
                )
            })
            .unwrap();
        let peer = svc
            .mutate("register", |a, now| {
                a.register_peer(
                    &RegisterPeer {
                        setup_key: key,
                        wg_pubkey: "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=".into(),
                        name: Some("alice".into()),
                        meta: PeerMeta::default(),
                        ssh_pubkey: String::new(),
                    },
                    now,
                )
            })
            .unwrap();
        (svc, peer.id)
    }

    /// Issue 12, defect 8: server A holds a Sync stream of a peer while server B, on the same
    /// database, renames it. A's bookkeeping when the stream opens and closes (and a meta
    /// report) must not write its stale copy of the peer back over B's name, nor lower the
    /// stored serial.
    #[test]
    fn bookkeeping_never_writes_a_stale_peer_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::store::DB_FILE);
        let (a, id) = with_peer(&path);
        a.peer_seen("sync_connect", &id, Some(true)).unwrap();

        let b = Service::open(&path).unwrap();
        let rename = |name: &str| PeerUpdate {
            name: Some(name.into()),
            ..Default::default()
        };
        b.mutate("rename", |acct, _| {
            acct.update_peer(&id, &rename("alice-2"))
        })
        .unwrap();
        b.mutate("rename", |acct, _| {
            acct.update_peer(&id, &rename("alice-3"))
        })
        .unwrap();
        let b_serial = b.account().serial;
        // B saw the peer's stream close; A's login bookkeeping (last seen only) keeps that.
        b.peer_seen("sync_disconnect", &id, Some(false)).unwrap();
        drop(b);
        a.peer_seen("login", &id, None).unwrap();
        let stored = Store::open(&path).unwrap().load_account().unwrap().unwrap();
        assert!(
            !stored.peers[&id].connected,
            "a login does not write `connected`"
        );
        assert_eq!(stored.peers[&id].name, "alice-3");

        // A, still holding its copy named "alice", reports meta and closes the stream.
        let meta = PeerMeta {
            client_version: "0.60.0".into(),
            ..Default::default()
        };
        a.peer_meta("sync_meta", &id, &meta).unwrap();
        a.peer_seen("sync_disconnect", &id, Some(false)).unwrap();
        assert_eq!(a.account().peers[&id].name, "alice", "A's copy is stale");
        drop(a);

        let stored = Store::open(&path).unwrap().load_account().unwrap().unwrap();
        let p = &stored.peers[&id];
        assert_eq!(p.name, "alice-3", "B's rename survives A's bookkeeping");
        assert_eq!(p.meta, meta, "A's meta report is stored");
        assert!(!p.connected, "A's disconnect is stored");
        assert!(p.last_seen_at > 0);
        assert!(
            stored.serial >= b_serial,
            "the stored serial never goes down"
        );
    }

    #[test]
    fn serial_rises_with_every_change_and_refusals_change_nothing() {
        let svc = Service::new(Store::open_in_memory().unwrap()).unwrap();
        let mut rx = svc.subscribe();
        let s0 = svc.account().serial;
        let input = GroupInput {
            name: "Ops".into(),
            ..Default::default()
        };
        svc.mutate("create_group", |a, _| a.create_group(&input))
            .unwrap();
        let s1 = svc.account().serial;
        assert_eq!(s1, s0 + 1);
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), s1);
        let before = svc.account();
        assert!(
            svc.mutate("create_group", |a, _| a.create_group(&input))
                .is_err()
        );
        assert_eq!(svc.account(), before);
        assert!(!rx.has_changed().unwrap());
        // A no-op change (revoking twice) does not bump the serial.
        svc.mutate("k", |a, now| {
            a.create_setup_key(
                &crate::model::SetupKeyInput {
                    name: "k".into(),
                    ..Default::default()
                },
                now,
            )
        })
        .unwrap();
        svc.mutate("revoke", |a, _| a.revoke_setup_key("k"))
            .unwrap();
        let s = svc.account().serial;
        svc.mutate("revoke", |a, _| a.revoke_setup_key("k"))
            .unwrap();
        assert_eq!(svc.account().serial, s);
    }

    /// A database written before accounts had a /16 and an IPv6 range: opening it narrows the
    /// overlay to the /16 of its peers (addresses kept), adds a v6 range, and stores that.
    #[test]
    fn opening_a_legacy_database_upgrades_and_stores_the_settings() {
        let dir = std::env::temp_dir().join(format!(
            "swiftgate-legacy-{}-{}",
            std::process::id(),
            crate::model::ids::new_id("t")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db.sqlite");
        let mut a = Account::new("default");
        a.settings.overlay_range = crate::model::LEGACY_OVERLAY_RANGE.parse().unwrap();
        a.settings.overlay_range_v6 = None;
        a.settings.ipv6_enabled_groups.clear();
        let mut store = Store::open(&path).unwrap();
        store.save(None, &a).unwrap();
        drop(store);

        let svc = Service::open(&path).unwrap();
        let s = svc.account().settings.clone();
        assert_eq!(s.overlay_range.prefix_len(), 16);
        assert!(s.overlay_range_v6.is_some());
        assert!(s.ipv6_enabled_groups.is_empty(), "IPv6 stays off");
        drop(svc);
        let again = Store::open(&path).unwrap().load_account().unwrap().unwrap();
        assert_eq!(again.settings, s, "stored, not recomputed on each start");
        std::fs::remove_dir_all(&dir).ok();
    }
}
