//! The service's users, tokens and activity log. These live beside the account, not in it:
//! a token's use or a new user changes no network map, so none of it raises the serial or
//! wakes the Sync streams. Every change is stored first and then applied to the in-memory
//! [`Directory`], so a failed write changes nothing.

use serde::Deserialize;

use super::{Service, ServiceError, now_secs};
use crate::auth::{
    AccessToken, AuthFailure, DAY, Directory, Principal, Role, TOKEN_DAYS, User, UserStatus, token,
};
use crate::events::{Event, EventQuery};
use crate::model::ids::new_id;
use crate::model::{conflict, invalid};

/// How often a token's `last_used` is written back (it is exact in memory).
pub const LAST_USED_EVERY: u64 = 60;

/// Name of the first start's admin user.
pub const BOOTSTRAP_USER: &str = "admin";

/// A new user (NetBird's `UserCreateRequest`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserInput {
    /// E-mail (required unless a service user).
    #[serde(default)]
    pub email: Option<String>,
    /// Display name (default: the e-mail).
    #[serde(default)]
    pub name: Option<String>,
    /// Role name.
    pub role: String,
    /// Group ids given to peers the user adds.
    #[serde(default)]
    pub auto_groups: Vec<String>,
    /// A machine user.
    #[serde(default)]
    pub is_service_user: bool,
    /// Created blocked.
    #[serde(default)]
    pub is_blocked: bool,
}

/// A change to a user (NetBird's `UserRequest`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    /// Role name.
    pub role: String,
    /// Group ids given to peers the user adds.
    #[serde(default)]
    pub auto_groups: Vec<String>,
    /// Blocked users are refused everywhere, at once.
    #[serde(default)]
    pub is_blocked: bool,
}

fn forbidden(msg: impl Into<String>) -> ServiceError {
    ServiceError::Forbidden(msg.into())
}

impl Service {
    fn directory(&self) -> std::sync::RwLockReadGuard<'_, Directory> {
        // Changes are applied after they are stored and cannot panic half-way.
        self.directory.read().unwrap_or_else(|e| e.into_inner())
    }

    fn directory_mut(&self) -> std::sync::RwLockWriteGuard<'_, Directory> {
        self.directory.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks a presented token and returns who it belongs to. A valid use updates the
    /// token's `last_used` (stored at most every [`LAST_USED_EVERY`] seconds).
    pub fn authenticate(&self, presented: &str) -> Result<Principal, AuthFailure> {
        let now = now_secs();
        let p = self.directory().authenticate(presented, now)?;
        if let Some(id) = &p.token_id {
            let stale = self
                .directory()
                .token_by_id(id)
                .is_some_and(|t| t.last_used.is_none_or(|l| now >= l + LAST_USED_EVERY));
            if stale {
                let mut st = self.lock();
                let mut d = self.directory_mut();
                if d.touch(id, now, LAST_USED_EVERY) {
                    let t = d.token_by_id(id).cloned();
                    let u = d.user(&p.user_id).ok().cloned();
                    drop(d);
                    // Bookkeeping: a failed write is logged, the request goes on.
                    if let Some(t) = t
                        && let Err(e) = st.store.save_token(&t)
                    {
                        tracing::warn!(error = %e, token = %t.id, "storing a token's last use failed");
                    }
                    if let Some(u) = u
                        && let Err(e) = st.store.save_user(&u)
                    {
                        tracing::warn!(error = %e, user = %u.id, "storing a user's last login failed");
                    }
                }
            }
        }
        Ok(p)
    }

    /// The first start's admin: creates the owner user [`BOOTSTRAP_USER`] if the server has no
    /// user yet, and returns its id (or the id of the bootstrap owner made earlier, or of any
    /// active owner).
    pub fn bootstrap_owner(&self) -> Result<String, ServiceError> {
        let mut st = self.lock();
        let d = self.directory();
        if let Some(u) = d
            .users()
            .find(|u| {
                u.issued == "bootstrap" && u.status == UserStatus::Active && u.role == Role::Owner
            })
            .or_else(|| {
                d.users()
                    .find(|u| u.role == Role::Owner && u.status == UserStatus::Active)
            })
        {
            return Ok(u.id.clone());
        }
        if !d.is_empty() {
            return Err(conflict(
                "no active owner to issue an admin token for; unblock an owner first",
            )
            .into());
        }
        drop(d);
        let u = User {
            id: new_id("usr"),
            email: String::new(),
            name: BOOTSTRAP_USER.into(),
            role: Role::Owner,
            status: UserStatus::Active,
            is_service_user: true,
            auto_groups: vec![],
            created_at: now_secs(),
            last_login: None,
            issued: "bootstrap".into(),
        };
        st.store.save_user(&u)?;
        let id = u.id.clone();
        self.directory_mut().put_user(u);
        tracing::info!(user = %id, "created the owner user {BOOTSTRAP_USER:?}");
        Ok(id)
    }

    /// All users.
    pub fn users(&self) -> Vec<User> {
        self.directory().users().cloned().collect()
    }

    /// One user.
    pub fn user(&self, id: &str) -> Result<User, ServiceError> {
        Ok(self.directory().user(id)?.clone())
    }

    fn check_groups(&self, groups: &[String]) -> Result<(), ServiceError> {
        let a = self.account();
        for g in groups {
            if !a.groups.contains_key(g) {
                return Err(invalid(format!("auto_groups: no group with id {g:?}")).into());
            }
        }
        Ok(())
    }

    /// Creates a user.
    pub fn create_user(&self, by: &Principal, input: &UserInput) -> Result<User, ServiceError> {
        let role = Role::parse(&input.role)?;
        if role == Role::Owner && by.role != Role::Owner {
            return Err(forbidden("only an owner may make another owner"));
        }
        let email = input.email.clone().unwrap_or_default().trim().to_string();
        if !input.is_service_user && (email.is_empty() || !email.contains('@')) {
            return Err(
                invalid("email: a user who is not a service user needs an e-mail address").into(),
            );
        }
        let name = input
            .name
            .clone()
            .unwrap_or_else(|| email.clone())
            .trim()
            .to_string();
        if name.is_empty() {
            return Err(invalid("name: a service user needs a name").into());
        }
        self.check_groups(&input.auto_groups)?;
        let mut st = self.lock();
        let d = self.directory();
        if !email.is_empty() && d.users().any(|u| u.email.eq_ignore_ascii_case(&email)) {
            return Err(conflict(format!("a user with e-mail {email:?} exists")).into());
        }
        drop(d);
        let u = User {
            id: new_id("usr"),
            email,
            name,
            role,
            status: if input.is_blocked {
                UserStatus::Blocked
            } else {
                UserStatus::Active
            },
            is_service_user: input.is_service_user,
            auto_groups: input.auto_groups.clone(),
            created_at: now_secs(),
            last_login: None,
            issued: "api".into(),
        };
        st.store.save_user(&u)?;
        self.directory_mut().put_user(u.clone());
        Ok(u)
    }

    /// Changes a user's role, auto groups or blocked state.
    pub fn update_user(
        &self,
        by: &Principal,
        id: &str,
        up: &UserUpdate,
    ) -> Result<User, ServiceError> {
        let role = Role::parse(&up.role)?;
        self.check_groups(&up.auto_groups)?;
        let mut st = self.lock();
        let d = self.directory();
        let mut u = d.user(id)?.clone();
        if (role == Role::Owner || u.role == Role::Owner) && by.role != Role::Owner {
            return Err(forbidden(
                "only an owner may change an owner or give the owner role",
            ));
        }
        let status = if up.is_blocked {
            UserStatus::Blocked
        } else {
            UserStatus::Active
        };
        if id == by.user_id && (status == UserStatus::Blocked || role != u.role) {
            return Err(conflict("you cannot block yourself or change your own role").into());
        }
        if u.role == Role::Owner
            && u.status == UserStatus::Active
            && (role != Role::Owner || status == UserStatus::Blocked)
            && d.owners() <= 1
        {
            return Err(conflict("the account needs at least one active owner").into());
        }
        // Raised: tokens others made for the user would carry the new power to their makers.
        let revoke: Vec<String> = if role.rank() > u.role.rank() {
            d.tokens_of(id)
                .filter(|t| t.created_by != id)
                .map(|t| t.id.clone())
                .collect()
        } else {
            Vec::new()
        };
        drop(d);
        u.role = role;
        u.status = status;
        u.auto_groups = up.auto_groups.clone();
        st.store.save_user(&u)?;
        for t in &revoke {
            st.store.delete_token(t)?;
        }
        let mut d = self.directory_mut();
        d.put_user(u.clone());
        for t in &revoke {
            d.remove_token(t);
        }
        if !revoke.is_empty() {
            tracing::info!(user = %id, tokens = revoke.len(), "role raised: revoked the tokens others made for the user");
        }
        Ok(u)
    }

    /// Deletes a user and its tokens (they stop working at once).
    pub fn delete_user(&self, by: &Principal, id: &str) -> Result<(), ServiceError> {
        let mut st = self.lock();
        let d = self.directory();
        let u = d.user(id)?.clone();
        if id == by.user_id {
            return Err(conflict("you cannot delete yourself").into());
        }
        if u.role == Role::Owner && by.role != Role::Owner {
            return Err(forbidden("only an owner may delete an owner"));
        }
        if u.role == Role::Owner && u.status == UserStatus::Active && d.owners() <= 1 {
            return Err(conflict("the account needs at least one active owner").into());
        }
        drop(d);
        st.store.delete_user(id)?;
        self.directory_mut().remove_user(id);
        Ok(())
    }

    /// Whether `by` may create or delete tokens of `user_id`: its own always; another user's
    /// only a service user's (as NetBird), with the users permission and a role above that
    /// user's (an owner: any service user), so nobody can act as someone as powerful as
    /// themselves or more. A user whose role is raised loses the tokens others made for it
    /// ([`Service::update_user`]).
    pub fn check_token_access(&self, by: &Principal, user_id: &str) -> Result<(), ServiceError> {
        if by.user_id == user_id {
            return Ok(());
        }
        let d = self.directory();
        let target = d.user(user_id)?;
        if target.is_service_user
            && by.role.manages_users()
            && (by.role == Role::Owner || by.role.rank() > target.role.rank())
        {
            return Ok(());
        }
        Err(forbidden(format!(
            "the role {} may not manage tokens of {} (another user's tokens: only a service \
             user's, with a role below yours)",
            by.role.as_str(),
            target.name
        )))
    }

    /// A user's tokens.
    pub fn tokens(&self, user_id: &str) -> Result<Vec<AccessToken>, ServiceError> {
        let d = self.directory();
        d.user(user_id)?;
        Ok(d.tokens_of(user_id).cloned().collect())
    }

    /// One token of a user.
    pub fn token(&self, user_id: &str, token_id: &str) -> Result<AccessToken, ServiceError> {
        Ok(self.directory().token(user_id, token_id)?.clone())
    }

    /// Issues a token for `user_id`, valid `days` days ([`TOKEN_DAYS`]); returns it and its
    /// clear text, which is never stored nor shown again.
    pub fn create_token(
        &self,
        created_by: &str,
        user_id: &str,
        name: &str,
        days: u64,
    ) -> Result<(AccessToken, String), ServiceError> {
        self.create_token_as(None, created_by, user_id, name, days)
    }

    /// [`Service::create_token`] on behalf of `by` (checked with
    /// [`Service::check_token_access`] under the same lock as the creation).
    pub fn create_token_as(
        &self,
        by: Option<&Principal>,
        created_by: &str,
        user_id: &str,
        name: &str,
        days: u64,
    ) -> Result<(AccessToken, String), ServiceError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(invalid("name: a token needs a name").into());
        }
        if !TOKEN_DAYS.contains(&days) {
            return Err(invalid(format!(
                "expires_in: {days} days is outside {}..={} days",
                TOKEN_DAYS.start(),
                TOKEN_DAYS.end()
            ))
            .into());
        }
        let mut st = self.lock();
        if let Some(by) = by {
            self.check_token_access(by, user_id)?;
        }
        self.directory().user(user_id)?;
        let clear = token::generate();
        let now = now_secs();
        let t = AccessToken {
            id: new_id("tok"),
            user_id: user_id.to_string(),
            name: name.to_string(),
            hash: token::hash(&clear),
            created_at: now,
            expires_at: now + days * DAY,
            created_by: created_by.to_string(),
            last_used: None,
        };
        st.store.save_token(&t)?;
        self.directory_mut().put_token(t.clone());
        Ok((t, clear))
    }

    /// Deletes a token on behalf of `by` (checked under the same lock): it is refused from the
    /// next request on.
    pub fn delete_token(
        &self,
        by: &Principal,
        user_id: &str,
        token_id: &str,
    ) -> Result<(), ServiceError> {
        let mut st = self.lock();
        self.check_token_access(by, user_id)?;
        self.directory().token(user_id, token_id)?;
        st.store.delete_token(token_id)?;
        self.directory_mut().remove_token(token_id);
        Ok(())
    }

    /// Appends to the activity log. Events recorded while the store is busy are written
    /// together (group commit): each caller queues its numbered event and, once it holds the
    /// store, writes everything queued, its own and those of the callers waiting behind it,
    /// in one transaction. A caller whose event another caller wrote learns that write's
    /// outcome: a failed shared write is an error for every caller whose event it carried.
    pub fn record_event(&self, e: Event) -> Result<(), ServiceError> {
        let queue = || self.event_queue.lock().unwrap_or_else(|e| e.into_inner());
        let seq = {
            let mut q = queue();
            let seq = q.next;
            q.next += 1;
            q.pending.push((seq, e));
            seq
        };
        let mut st = self.lock();
        let batch = std::mem::take(&mut queue().pending);
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            // Written by the caller before us (it held the store until it knew the outcome).
            return match queue().failed.iter().find(|(r, _)| r.contains(&seq)) {
                Some((_, msg)) => Err(crate::store::StoreError::SharedWrite(msg.clone()).into()),
                None => Ok(()),
            };
        };
        let range = first.0..=last.0;
        let events: Vec<Event> = batch.into_iter().map(|(_, e)| e).collect();
        if let Err(e) = st.store.append_events(&events) {
            tracing::error!(events = events.len(), error = %e, "activity log write failed");
            let mut q = queue();
            if q.failed.len() == 64 {
                q.failed.pop_front();
            }
            q.failed.push_back((range, e.to_string()));
            return Err(e.into());
        }
        Ok(())
    }

    /// The activity log, filtered, newest first.
    pub fn events(&self, q: &EventQuery) -> Result<Vec<Event>, ServiceError> {
        q.check().map_err(invalid)?;
        Ok(self.lock().store.events(q)?)
    }
}
