//! The SQLite store: the account and its entities, and the server key. [`Store::save`] writes
//! the difference between two versions of the account in one transaction, so a change is
//! stored completely or not at all.

mod auth;
pub mod migrations;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params_from_iter};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::{Account, Map, PeerMeta};

/// Default database file name (in the data directory).
pub const DB_FILE: &str = "swiftgate-management.db";

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored row does not decode.
    #[error("stored data: {0}")]
    Json(#[from] serde_json::Error),
    /// The schema is not one this server knows.
    #[error("{0}")]
    Schema(String),
    /// A shared write that carried this caller's data failed (the error it got).
    #[error("a shared write failed: {0}")]
    SharedWrite(String),
    /// An existing database file is empty (zero bytes, or no tables at all).
    #[error(
        "database file {} is empty: refusing to create a new account and server key in it \
         (agents would no longer trust this server); restore it from a backup, or start with \
         `serve --init` to initialise a new account in it",
        path.display()
    )]
    EmptyFile {
        /// The file.
        path: PathBuf,
    },
    /// An existing database file holds the schema but no account.
    #[error(
        "database file {} holds no account: refusing to create a new account and server key \
         in it; restore it from a backup, or start with `serve --init` to initialise a new \
         account in it",
        path.display()
    )]
    NoAccount {
        /// The file.
        path: PathBuf,
    },
    /// An existing file is not a SQLite database.
    #[error(
        "{} is not a SQLite database ({source}); refusing to start: move it away or restore \
         the database from a backup",
        path.display()
    )]
    NotADatabase {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The file system said no.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// An open database.
pub struct Store {
    conn: Connection,
    /// The database file (`None`: in memory).
    path: Option<PathBuf>,
    /// A missing account may be created: the file was created now, is in memory, or the
    /// caller asked to initialise it.
    may_create_account: bool,
}

/// One entity table: its extra indexed columns, filled from the entity.
struct Table<T> {
    name: &'static str,
    columns: &'static [&'static str],
    values: fn(&T) -> Vec<String>,
}

fn sync_table<T: Serialize + PartialEq + Clone>(
    tx: &Transaction<'_>,
    table: &Table<T>,
    old: Option<&Map<String, T>>,
    new: &Map<String, T>,
) -> Result<(), StoreError> {
    let cols = table.columns.join(", ");
    let marks: Vec<String> = (1..=table.columns.len() + 2)
        .map(|i| format!("?{i}"))
        .collect();
    let updates: Vec<String> = table
        .columns
        .iter()
        .chain(std::iter::once(&"body"))
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    let sql = format!(
        "INSERT INTO {t} (id, {cols}{sep}body) VALUES ({marks}) \
         ON CONFLICT(id) DO UPDATE SET {updates}",
        t = table.name,
        sep = if cols.is_empty() { "" } else { ", " },
        cols = cols,
        marks = marks.join(", "),
        updates = updates.join(", "),
    );
    let upsert = |id: &String, e: &T| -> Result<(), StoreError> {
        let mut up = tx.prepare_cached(&sql)?;
        let mut vals = vec![id.clone()];
        vals.extend((table.values)(e));
        vals.push(serde_json::to_string(e)?);
        up.execute(params_from_iter(vals.iter()))?;
        Ok(())
    };
    let Some(old) = old else {
        for (id, e) in new {
            upsert(id, e)?;
        }
        return Ok(());
    };
    // The maps share every node the change did not touch; the diff visits only the rest.
    // Deletions first, so a name freed and taken in one change does not collide.
    let mut del = tx.prepare_cached(&format!("DELETE FROM {} WHERE id = ?1", table.name))?;
    let mut changed = Vec::new();
    for d in old.diff(new) {
        match d {
            imbl::ordmap::DiffItem::Remove(id, _) => {
                del.execute([id])?;
            }
            imbl::ordmap::DiffItem::Add(id, e) => changed.push((id, e)),
            imbl::ordmap::DiffItem::Update { new: (id, e), .. } => changed.push((id, e)),
        }
    }
    for (id, e) in changed {
        upsert(id, e)?;
    }
    Ok(())
}

fn load_table<T: DeserializeOwned + Clone>(
    conn: &Connection,
    table: &str,
) -> Result<Map<String, T>, StoreError> {
    let mut st = conn.prepare(&format!("SELECT id, body FROM {table}"))?;
    let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Map::new();
    for row in rows {
        let (id, body) = row?;
        out.insert(id, serde_json::from_str(&body)?);
    }
    Ok(out)
}

macro_rules! table {
    ($name:literal, [$($col:literal),*], |$e:ident: $t:ty| [$($val:expr),*]) => {
        Table::<$t> {
            name: $name,
            columns: &[$($col),*],
            values: |$e: &$t| vec![$($val),*],
        }
    };
}

/// Creates an empty file only its owner may read and write (SQLite then opens it as a new
/// database, and gives its WAL and shared-memory files the same mode).
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(drop)
        .map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Takes group and other access away from an existing database file (it holds the server's
/// private key), saying so when it had any.
fn keep_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let mut shm = path.as_os_str().to_owned();
    shm.push("-shm");
    for (f, must_exist) in [
        (path.to_path_buf(), true),
        (wal.into(), false),
        (shm.into(), false),
    ] {
        let f: PathBuf = f;
        let io = |source| StoreError::Io {
            path: f.clone(),
            source,
        };
        let mode = match std::fs::metadata(&f) {
            Ok(m) => m.permissions().mode(),
            Err(e) if !must_exist && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(e)),
        };
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
            tracing::warn!(
                file = %f.display(),
                was = format!("{:o}", mode & 0o777),
                "a database file was readable by others; made it 0600"
            );
        }
    }
    Ok(())
}

impl Store {
    /// Opens the database at `path` and brings its schema up to date, without permission to
    /// initialise an existing file: `Store::open_with(path, false)`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_with(path, false)
    }

    /// Opens the database at `path` and brings its schema up to date.
    ///
    /// - A missing file is created (first start); the account may then be created in it.
    /// - An existing file that is not a SQLite database is refused
    ///   ([`StoreError::NotADatabase`]), `init` or not: it is nobody's to overwrite.
    /// - An existing empty file (zero bytes, or no tables) is refused
    ///   ([`StoreError::EmptyFile`]) unless `init`, and nothing is written to it.
    /// - An existing database without an account may get a new one only with `init` (see
    ///   [`Store::may_create_account`]; the service refuses otherwise).
    pub fn open_with(path: &Path, init: bool) -> Result<Store, StoreError> {
        let exists = path.try_exists().map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let conn = if exists {
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI;
            let conn = Connection::open_with_flags(path, flags)?;
            // Reads the header (and a WAL, if any); writes nothing.
            let tables: i64 = conn
                .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
                .map_err(|e| match e.sqlite_error_code() {
                    Some(rusqlite::ErrorCode::NotADatabase) => StoreError::NotADatabase {
                        path: path.to_path_buf(),
                        source: e,
                    },
                    _ => StoreError::Sqlite(e),
                })?;
            if tables == 0 && !init {
                return Err(StoreError::EmptyFile {
                    path: path.to_path_buf(),
                });
            }
            conn
        } else {
            create_private(path)?;
            Connection::open(path)?
        };
        keep_private(path)?;
        let mut store = Self::init(conn)?;
        store.path = Some(path.to_path_buf());
        store.may_create_account = !exists || init;
        Ok(store)
    }

    /// A private in-memory database (tests).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Store, StoreError> {
        // WAL with full sync: a committed change survives a crash of the process or machine.
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;")?;
        migrations::migrate(&mut conn)?;
        Ok(Store {
            conn,
            path: None,
            may_create_account: true,
        })
    }

    /// Whether a new account may be stored when none is: the file was created by this open,
    /// is in memory, or was opened with `init`. An existing file without an account is
    /// otherwise a lost or damaged database, and a new account would come with a new server
    /// key that no agent trusts.
    pub fn may_create_account(&self) -> bool {
        self.may_create_account
    }

    /// [`StoreError::NoAccount`] for this database.
    pub fn no_account_error(&self) -> StoreError {
        StoreError::NoAccount {
            path: self.path.clone().unwrap_or_else(|| ":memory:".into()),
        }
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        migrations::current(&self.conn)
    }

    /// The stored account, if any.
    pub fn load_account(&self) -> Result<Option<Account>, StoreError> {
        let head: Option<(String, i64, String)> = self
            .conn
            .query_row(
                "SELECT id, serial, settings FROM account LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((id, serial, settings)) = head else {
            return Ok(None);
        };
        Ok(Some(Account {
            id,
            serial: serial as u64,
            settings: serde_json::from_str(&settings)?,
            peers: load_table(&self.conn, "peers")?,
            groups: load_table(&self.conn, "groups")?,
            networks: load_table(&self.conn, "networks")?,
            resources: load_table(&self.conn, "resources")?,
            routers: load_table(&self.conn, "routers")?,
            policies: load_table(&self.conn, "policies")?,
            setup_keys: load_table(&self.conn, "setup_keys")?,
            posture_checks: load_table(&self.conn, "posture_checks")?,
            routes: load_table(&self.conn, "routes")?,
            nameserver_groups: load_table(&self.conn, "nameserver_groups")?,
        }))
    }

    /// Writes what changed from `old` (`None`: nothing stored yet) to `new`, in one
    /// transaction: on error nothing is written.
    pub fn save(&mut self, old: Option<&Account>, new: &Account) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        if old.is_none_or(|o| o.serial != new.serial || o.settings != new.settings) {
            tx.execute(
                "INSERT INTO account (id, serial, settings) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(id) DO UPDATE SET serial = MAX(serial, excluded.serial), \
                 settings = excluded.settings",
                rusqlite::params![
                    new.id,
                    new.serial as i64,
                    serde_json::to_string(&new.settings)?
                ],
            )?;
        }
        // Children are deleted before parents and inserted after them (no FK constraints are
        // declared, but the order keeps every intermediate state meaningful).
        sync_table(
            &tx,
            &table!("routers", ["network_id"], |e: crate::model::Router| [e
                .network_id
                .clone()]),
            old.map(|o| &o.routers),
            &new.routers,
        )?;
        sync_table(
            &tx,
            &table!(
                "resources",
                ["name", "network_id"],
                |e: crate::model::Resource| [e.name.clone(), e.network_id.clone()]
            ),
            old.map(|o| &o.resources),
            &new.resources,
        )?;
        sync_table(
            &tx,
            &table!("networks", ["name"], |e: crate::model::Network| [e
                .name
                .clone()]),
            old.map(|o| &o.networks),
            &new.networks,
        )?;
        sync_table(
            &tx,
            &table!("policies", ["name"], |e: crate::model::Policy| [e
                .name
                .clone()]),
            old.map(|o| &o.policies),
            &new.policies,
        )?;
        sync_table(
            &tx,
            &table!(
                "posture_checks",
                ["name"],
                |e: crate::model::PostureCheck| [e.name.clone()]
            ),
            old.map(|o| &o.posture_checks),
            &new.posture_checks,
        )?;
        sync_table(
            &tx,
            &table!(
                "peers",
                ["name", "wg_pubkey", "ip"],
                |e: crate::model::Peer| [e.name.clone(), e.wg_pubkey.clone(), e.ip.to_string()]
            ),
            old.map(|o| &o.peers),
            &new.peers,
        )?;
        sync_table(
            &tx,
            &table!(
                "setup_keys",
                ["name", "key_hash"],
                |e: crate::model::SetupKey| [e.name.clone(), e.key_hash.clone()]
            ),
            old.map(|o| &o.setup_keys),
            &new.setup_keys,
        )?;
        sync_table(
            &tx,
            &table!("routes", [], |_e: crate::model::NetworkRoute| []),
            old.map(|o| &o.routes),
            &new.routes,
        )?;
        sync_table(
            &tx,
            &table!(
                "nameserver_groups",
                ["name"],
                |e: crate::model::NameserverGroup| [e.name.clone()]
            ),
            old.map(|o| &o.nameserver_groups),
            &new.nameserver_groups,
        )?;
        sync_table(
            &tx,
            &table!("groups", ["name"], |e: crate::model::Group| [e
                .name
                .clone()]),
            old.map(|o| &o.groups),
            &new.groups,
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Writes a peer's connection bookkeeping into its stored row and nothing else:
    /// `last_seen_at`, and `connected` when given. The other fields stay as stored, even if
    /// another server on the same database changed them since this one loaded the account.
    /// Returns whether the row exists (a peer deleted meanwhile is not brought back).
    pub fn save_peer_status(
        &mut self,
        peer_id: &str,
        connected: Option<bool>,
        last_seen_at: u64,
    ) -> Result<bool, StoreError> {
        let n = match connected {
            Some(c) => self.conn.execute(
                "UPDATE peers SET body = json_set(body, '$.connected', json(?2), \
                 '$.last_seen_at', ?3) WHERE id = ?1",
                rusqlite::params![
                    peer_id,
                    if c { "true" } else { "false" },
                    last_seen_at as i64
                ],
            )?,
            None => self.conn.execute(
                "UPDATE peers SET body = json_set(body, '$.last_seen_at', ?2) WHERE id = ?1",
                rusqlite::params![peer_id, last_seen_at as i64],
            )?,
        };
        Ok(n > 0)
    }

    /// Writes what a peer reported about itself (`meta`, the posture inputs) into its stored
    /// row and nothing else, and raises the stored account serial to at least `serial` (never
    /// lowers it), in one transaction. Returns whether the row exists.
    pub fn save_peer_meta(
        &mut self,
        peer_id: &str,
        meta: &PeerMeta,
        serial: u64,
    ) -> Result<bool, StoreError> {
        let tx = self.conn.transaction()?;
        let n = tx.execute(
            "UPDATE peers SET body = json_set(body, '$.meta', json(?2)) WHERE id = ?1",
            rusqlite::params![peer_id, serde_json::to_string(meta)?],
        )?;
        if n > 0 {
            tx.execute(
                "UPDATE account SET serial = MAX(serial, ?1)",
                [serial as i64],
            )?;
        }
        tx.commit()?;
        Ok(n > 0)
    }

    /// The stored server private key (base64), if one was generated.
    pub fn server_key(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT private_key FROM server_key WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Stores the server private key (base64) unless one is stored already; returns the one in
    /// force.
    pub fn init_server_key(&mut self, private_key: &str, now: u64) -> Result<String, StoreError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO server_key (id, private_key, created_at) VALUES (1, ?1, ?2)",
            rusqlite::params![private_key, now as i64],
        )?;
        self.server_key()?
            .ok_or_else(|| StoreError::Schema("server key vanished after insert".into()))
    }
}

#[cfg(test)]
mod tests;
