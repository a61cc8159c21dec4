//! Users, their tokens (hashes only) and the activity log in the store. Each write is one
//! statement or one transaction: a user's deletion takes its tokens in the same transaction.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};
use crate::auth::{AccessToken, User};
use crate::events::{Event, EventQuery};

impl Store {
    /// Every stored user and token.
    pub fn load_directory(&self) -> Result<(Vec<User>, Vec<AccessToken>), StoreError> {
        let users = super::load_table::<User>(&self.conn, "users")?
            .values()
            .cloned()
            .collect();
        let tokens = super::load_table::<AccessToken>(&self.conn, "tokens")?
            .values()
            .cloned()
            .collect();
        Ok((users, tokens))
    }

    /// Inserts or replaces a user.
    pub fn save_user(&mut self, u: &User) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO users (id, email, body) VALUES (?1, ?2, ?3) \
             ON CONFLICT(id) DO UPDATE SET email = excluded.email, body = excluded.body",
            params![u.id, u.email, serde_json::to_string(u)?],
        )?;
        Ok(())
    }

    /// Deletes a user and its tokens, in one transaction.
    pub fn delete_user(&mut self, id: &str) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM tokens WHERE user_id = ?1", [id])?;
        tx.execute("DELETE FROM users WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(())
    }

    /// Inserts or replaces a token.
    pub fn save_token(&mut self, t: &AccessToken) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO tokens (id, user_id, hash, body) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT(id) DO UPDATE SET body = excluded.body",
            params![t.id, t.user_id, t.hash, serde_json::to_string(t)?],
        )?;
        Ok(())
    }

    /// A user and one of its tokens together (a first start's admin), in one transaction.
    pub fn save_user_and_token(&mut self, u: &User, t: &AccessToken) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO users (id, email, body) VALUES (?1, ?2, ?3) \
             ON CONFLICT(id) DO UPDATE SET email = excluded.email, body = excluded.body",
            params![u.id, u.email, serde_json::to_string(u)?],
        )?;
        tx.execute(
            "INSERT INTO tokens (id, user_id, hash, body) VALUES (?1, ?2, ?3, ?4)",
            params![t.id, t.user_id, t.hash, serde_json::to_string(t)?],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Deletes a token.
    pub fn delete_token(&mut self, id: &str) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM tokens WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Appends events in one transaction, in order (their `id`s are ignored); returns the ids
    /// they got.
    pub fn append_events(&mut self, events: &[Event]) -> Result<Vec<u64>, StoreError> {
        let tx = self.conn.transaction()?;
        let mut ids = Vec::with_capacity(events.len());
        for e in events {
            tx.execute(
                "INSERT INTO events (timestamp, activity_code, initiator_id, target_id, body) \
                 VALUES (?1, ?2, ?3, ?4, '{}')",
                params![
                    e.timestamp as i64,
                    e.activity_code,
                    e.initiator_id,
                    e.target_id
                ],
            )?;
            let id = tx.last_insert_rowid() as u64;
            let stored = Event { id, ..e.clone() };
            tx.execute(
                "UPDATE events SET body = ?2 WHERE id = ?1",
                params![id as i64, serde_json::to_string(&stored)?],
            )?;
            ids.push(id);
        }
        tx.commit()?;
        Ok(ids)
    }

    /// Events matching `q`, newest first.
    pub fn events(&self, q: &EventQuery) -> Result<Vec<Event>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT body FROM events WHERE \
             (?1 IS NULL OR timestamp >= ?1) AND (?2 IS NULL OR timestamp <= ?2) AND \
             (?3 IS NULL OR activity_code = ?3) AND (?4 IS NULL OR initiator_id = ?4) AND \
             (?5 IS NULL OR target_id = ?5) ORDER BY id DESC LIMIT ?6",
        )?;
        let rows = st.query_map(
            params![
                q.since.map(|s| s as i64),
                q.until.map(|s| s as i64),
                q.activity_code,
                q.initiator_id,
                q.target_id,
                q.limit() as i64
            ],
            |r| r.get::<_, String>(0),
        )?;
        let mut out = Vec::new();
        for body in rows {
            out.push(serde_json::from_str(&body?)?);
        }
        Ok(out)
    }

    /// The newest event's id, if any.
    pub fn last_event_id(&self) -> Result<Option<u64>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT max(id) FROM events", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .optional()?
            .flatten()
            .map(|i| i as u64))
    }
}
