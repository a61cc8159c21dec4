//! Versioned schema migrations: ordered SQL steps; `schema_version` records how many ran.
//! Append new steps at the end; never edit a released one.

use rusqlite::{Connection, OptionalExtension};

use super::StoreError;

/// The migration steps, in order. Step `i` brings the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: the account and its entities. Each entity row keeps its full JSON in `body`; the
    // other columns exist for uniqueness and lookups.
    r#"
    CREATE TABLE account (
        id       TEXT PRIMARY KEY,
        serial   INTEGER NOT NULL,
        settings TEXT NOT NULL
    );
    CREATE TABLE peers (
        id        TEXT PRIMARY KEY,
        name      TEXT NOT NULL UNIQUE,
        wg_pubkey TEXT NOT NULL UNIQUE,
        ip        TEXT NOT NULL UNIQUE,
        body      TEXT NOT NULL
    );
    CREATE TABLE groups (
        id   TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        body TEXT NOT NULL
    );
    CREATE TABLE networks (
        id   TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        body TEXT NOT NULL
    );
    CREATE TABLE resources (
        id         TEXT PRIMARY KEY,
        name       TEXT NOT NULL UNIQUE,
        network_id TEXT NOT NULL,
        body       TEXT NOT NULL
    );
    CREATE INDEX resources_network ON resources (network_id);
    CREATE TABLE routers (
        id         TEXT PRIMARY KEY,
        network_id TEXT NOT NULL,
        body       TEXT NOT NULL
    );
    CREATE INDEX routers_network ON routers (network_id);
    CREATE TABLE policies (
        id   TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        body TEXT NOT NULL
    );
    CREATE TABLE setup_keys (
        id       TEXT PRIMARY KEY,
        name     TEXT NOT NULL UNIQUE,
        key_hash TEXT NOT NULL UNIQUE,
        body     TEXT NOT NULL
    );
    CREATE TABLE posture_checks (
        id   TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        body TEXT NOT NULL
    );
    "#,
    // 2: the server's WireGuard-format key pair (one row), generated once.
    r#"
    CREATE TABLE server_key (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        private_key TEXT NOT NULL,
        created_at  INTEGER NOT NULL
    );
    "#,
    // 3: users and their personal access tokens (only the tokens' hashes), and the activity
    // log, which only grows.
    r#"
    CREATE TABLE users (
        id    TEXT PRIMARY KEY,
        email TEXT NOT NULL,
        body  TEXT NOT NULL
    );
    CREATE TABLE tokens (
        id      TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        hash    TEXT NOT NULL UNIQUE,
        body    TEXT NOT NULL
    );
    CREATE INDEX tokens_user ON tokens (user_id);
    CREATE TABLE events (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        timestamp     INTEGER NOT NULL,
        activity_code TEXT NOT NULL,
        initiator_id  TEXT NOT NULL,
        target_id     TEXT NOT NULL,
        body          TEXT NOT NULL
    );
    CREATE INDEX events_timestamp ON events (timestamp);
    "#,
    // 4: network routes (NetBird's /api/routes) and name server groups.
    r#"
    CREATE TABLE routes (
        id   TEXT PRIMARY KEY,
        body TEXT NOT NULL
    );
    CREATE TABLE nameserver_groups (
        id   TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        body TEXT NOT NULL
    );
    "#,
];

/// The schema version a fresh database ends at.
pub fn latest() -> u32 {
    MIGRATIONS.len() as u32
}

/// The database's schema version (0 for a new file).
pub fn current(conn: &Connection) -> Result<u32, StoreError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);")?;
    let v: Option<u32> = conn
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .optional()?;
    Ok(v.unwrap_or(0))
}

/// Runs the steps the database has not had yet, each in its own transaction with its version
/// bump. Refuses a database written by a newer server.
pub fn migrate(conn: &mut Connection) -> Result<u32, StoreError> {
    let mut version = current(conn)?;
    if version > latest() {
        return Err(StoreError::Schema(format!(
            "database schema version {version} is newer than this server's {}; upgrade the \
             server",
            latest()
        )));
    }
    while (version as usize) < MIGRATIONS.len() {
        let tx = conn.transaction()?;
        tx.execute_batch(MIGRATIONS[version as usize])?;
        tx.execute("DELETE FROM schema_version", [])?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [version + 1],
        )?;
        tx.commit()?;
        version += 1;
        tracing::info!(version, "applied schema migration");
    }
    Ok(version)
}
