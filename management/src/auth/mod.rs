//! Who may call the admin API: users with roles, and the personal access tokens they call it
//! with. The [`Directory`] is the in-memory copy the API checks every request against (a
//! hash lookup, no database read); the service keeps it and the store in step.
//!
//! Roles are NetBird's. What each may do ([`Role::may`]):
//! - `owner`, `admin`: everything;
//! - `network_admin`: everything but other users, their tokens and the account settings;
//! - `auditor`, `billing_admin`: read everything, write nothing but their own tokens;
//! - `user`: read themselves, manage their own tokens.

pub mod token;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::model::{ModelError, ModelResult, invalid};

/// A user's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Owns the account; everything.
    Owner,
    /// Everything.
    Admin,
    /// Peers, groups, Networks, policies, routes, DNS, setup keys, posture checks.
    NetworkAdmin,
    /// Reads everything, changes nothing.
    Auditor,
    /// Reads everything, changes nothing (NetBird's billing role; there is no billing here).
    BillingAdmin,
    /// Itself and its own tokens only.
    User,
}

impl Role {
    /// Every role, in the order help texts list them.
    pub const ALL: [Role; 6] = [
        Role::Owner,
        Role::Admin,
        Role::NetworkAdmin,
        Role::Auditor,
        Role::BillingAdmin,
        Role::User,
    ];

    /// The name NetBird's API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::NetworkAdmin => "network_admin",
            Role::Auditor => "auditor",
            Role::BillingAdmin => "billing_admin",
            Role::User => "user",
        }
    }

    /// Parses a role name, naming the valid ones when it is not one.
    pub fn parse(s: &str) -> ModelResult<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                invalid(format!(
                    "unknown role {s:?}: use one of {}",
                    Role::ALL.map(Role::as_str).join(", ")
                ))
            })
    }

    /// How much the role may do, for comparing two: owner 3, admin 2, network admin 1, the
    /// read-only roles and user 0.
    pub fn rank(self) -> u8 {
        match self {
            Role::Owner => 3,
            Role::Admin => 2,
            Role::NetworkAdmin => 1,
            Role::Auditor | Role::BillingAdmin | Role::User => 0,
        }
    }

    /// Manages users, their tokens and the account settings.
    pub fn manages_users(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }

    /// Changes the network: peers, groups, Networks, policies, keys, routes, DNS.
    pub fn writes_network(self) -> bool {
        matches!(self, Role::Owner | Role::Admin | Role::NetworkAdmin)
    }

    /// Reads everything in the account.
    pub fn reads_all(self) -> bool {
        !matches!(self, Role::User)
    }

    /// Whether this role may make a request of `kind`.
    pub fn may(self, kind: Access) -> bool {
        match kind {
            Access::Read => self.reads_all(),
            Access::WriteNetwork => self.writes_network(),
            Access::Users => self.manages_users(),
            Access::Own => true,
        }
    }
}

/// What a request needs, as the API classifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Reading the account (any GET but the caller's own user and tokens).
    Read,
    /// Changing the network.
    WriteNetwork,
    /// Changing users, other users' tokens or account settings.
    Users,
    /// The caller's own user or tokens.
    Own,
}

/// Whether a user may log in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    /// May call the API.
    Active,
    /// Refused everywhere, its tokens included.
    Blocked,
}

/// A user of the admin API. Without an identity provider every user is a service user in
/// NetBird's sense (authenticates with tokens only); `is_service_user` is kept as given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Id.
    pub id: String,
    /// E-mail (may be empty for service users).
    pub email: String,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Active or blocked.
    pub status: UserStatus,
    /// A machine user (NetBird's service user).
    pub is_service_user: bool,
    /// Groups given to peers this user adds.
    pub auto_groups: Vec<String>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds of the last authenticated request, if any.
    pub last_login: Option<u64>,
    /// How the user came to be: `api` or `bootstrap` (the first start's admin).
    pub issued: String,
}

/// A personal access token as stored: never the token itself, only its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessToken {
    /// Id.
    pub id: String,
    /// Whose token it is.
    pub user_id: String,
    /// Name given at creation.
    pub name: String,
    /// [`token::hash`] of the token.
    pub hash: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds after which it is refused.
    pub expires_at: u64,
    /// Id of the user who created it.
    pub created_by: String,
    /// Unix seconds of the last request made with it, if any.
    pub last_used: Option<u64>,
}

/// Who is calling: the user behind a valid token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// User id.
    pub user_id: String,
    /// User name.
    pub name: String,
    /// User e-mail.
    pub email: String,
    /// Role.
    pub role: Role,
    /// Token the request came with (`None`: the insecure development mode).
    pub token_id: Option<String>,
}

/// Why a request is not authenticated. The caller learns only "401"; the log gets the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// No `Authorization` header, or one that is neither `Token` nor `Bearer`.
    #[error("no `Authorization: Token <personal access token>` header")]
    Missing,
    /// Not a token.
    #[error("{0}")]
    Format(#[from] token::FormatError),
    /// Well-formed but unknown (never issued, or deleted).
    #[error("unknown token")]
    Unknown,
    /// Past its expiry.
    #[error("token expired")]
    Expired,
    /// Its user is blocked.
    #[error("the token's user is blocked")]
    Blocked,
}

/// Every user and token, indexed by token hash.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    users: BTreeMap<String, User>,
    tokens: BTreeMap<String, AccessToken>,
    by_hash: HashMap<String, String>,
}

/// Bounds of a token's lifetime, in days (NetBird's).
pub const TOKEN_DAYS: std::ops::RangeInclusive<u64> = 1..=365;

/// Seconds in a day.
pub const DAY: u64 = 86_400;

impl Directory {
    /// A directory over what the store holds.
    pub fn new(users: Vec<User>, tokens: Vec<AccessToken>) -> Directory {
        let mut d = Directory::default();
        for u in users {
            d.users.insert(u.id.clone(), u);
        }
        for t in tokens {
            d.put_token(t);
        }
        d
    }

    /// Checks a presented token: its format, that it was issued, has not expired, and that its
    /// user may log in.
    pub fn authenticate(&self, presented: &str, now: u64) -> Result<Principal, AuthFailure> {
        token::check_format(presented)?;
        let id = self
            .by_hash
            .get(&token::hash(presented))
            .ok_or(AuthFailure::Unknown)?;
        let t = self.tokens.get(id).ok_or(AuthFailure::Unknown)?;
        if now >= t.expires_at {
            return Err(AuthFailure::Expired);
        }
        let u = self.users.get(&t.user_id).ok_or(AuthFailure::Unknown)?;
        if u.status == UserStatus::Blocked {
            return Err(AuthFailure::Blocked);
        }
        Ok(Principal {
            user_id: u.id.clone(),
            name: u.name.clone(),
            email: u.email.clone(),
            role: u.role,
            token_id: Some(t.id.clone()),
        })
    }

    /// Whether any user exists (a fresh server has none).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// All users.
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    /// One user.
    pub fn user(&self, id: &str) -> ModelResult<&User> {
        self.users.get(id).ok_or_else(|| ModelError::NotFound {
            kind: "user",
            key: id.to_string(),
        })
    }

    /// A user's tokens.
    pub fn tokens_of<'a>(&'a self, user_id: &'a str) -> impl Iterator<Item = &'a AccessToken> {
        self.tokens.values().filter(move |t| t.user_id == user_id)
    }

    /// One token of a user.
    pub fn token(&self, user_id: &str, token_id: &str) -> ModelResult<&AccessToken> {
        self.tokens
            .get(token_id)
            .filter(|t| t.user_id == user_id)
            .ok_or_else(|| ModelError::NotFound {
                kind: "token",
                key: token_id.to_string(),
            })
    }

    /// Active owners.
    pub fn owners(&self) -> usize {
        self.users
            .values()
            .filter(|u| u.role == Role::Owner && u.status == UserStatus::Active)
            .count()
    }

    /// Inserts or replaces a user.
    pub fn put_user(&mut self, u: User) {
        self.users.insert(u.id.clone(), u);
    }

    /// Removes a user and its tokens; returns the removed tokens' ids.
    pub fn remove_user(&mut self, id: &str) -> Vec<String> {
        self.users.remove(id);
        let gone: Vec<String> = self.tokens_of(id).map(|t| t.id.clone()).collect();
        for t in &gone {
            self.remove_token(t);
        }
        gone
    }

    /// Inserts or replaces a token.
    pub fn put_token(&mut self, t: AccessToken) {
        if let Some(old) = self.tokens.get(&t.id) {
            self.by_hash.remove(&old.hash);
        }
        self.by_hash.insert(t.hash.clone(), t.id.clone());
        self.tokens.insert(t.id.clone(), t);
    }

    /// Removes a token (its hash stops authenticating at once).
    pub fn remove_token(&mut self, id: &str) -> Option<AccessToken> {
        let t = self.tokens.remove(id)?;
        self.by_hash.remove(&t.hash);
        Some(t)
    }

    /// Records a use of a token (and a login of its user); returns whether the stored copy is
    /// due for an update (the first use, or the last stored one is `every` seconds old).
    pub fn touch(&mut self, token_id: &str, now: u64, every: u64) -> bool {
        let Some(t) = self.tokens.get_mut(token_id) else {
            return false;
        };
        let due = t.last_used.is_none_or(|l| now >= l + every);
        if due {
            t.last_used = Some(now);
            if let Some(u) = self.users.get_mut(&t.user_id) {
                u.last_login = Some(now);
            }
        }
        due
    }

    /// A token by id (any user).
    pub fn token_by_id(&self, id: &str) -> Option<&AccessToken> {
        self.tokens.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, role: Role) -> User {
        User {
            id: id.into(),
            email: format!("{id}@example.com"),
            name: id.into(),
            role,
            status: UserStatus::Active,
            is_service_user: false,
            auto_groups: vec![],
            created_at: 0,
            last_login: None,
            issued: "api".into(),
        }
    }

    fn tok(id: &str, user: &str, secret: &str, expires_at: u64) -> AccessToken {
        AccessToken {
            id: id.into(),
            user_id: user.into(),
            name: id.into(),
            hash: token::hash(secret),
            created_at: 0,
            expires_at,
            created_by: user.into(),
            last_used: None,
        }
    }

    #[test]
    fn authenticate_checks_format_issue_expiry_and_user() {
        let (a, b) = (token::generate(), token::generate());
        let mut d = Directory::new(
            vec![user("u1", Role::Admin), user("u2", Role::Auditor)],
            vec![tok("t1", "u1", &a, 100), tok("t2", "u2", &b, 100)],
        );
        let p = d.authenticate(&a, 50).unwrap();
        assert_eq!((p.user_id.as_str(), p.role), ("u1", Role::Admin));
        assert_eq!(d.authenticate(&a, 100), Err(AuthFailure::Expired));
        assert_eq!(
            d.authenticate(&token::generate(), 50),
            Err(AuthFailure::Unknown)
        );
        assert!(matches!(
            d.authenticate("nbp_short", 50),
            Err(AuthFailure::Format(_))
        ));
        let mut u2 = d.user("u2").unwrap().clone();
        u2.status = UserStatus::Blocked;
        d.put_user(u2);
        assert_eq!(d.authenticate(&b, 50), Err(AuthFailure::Blocked));
        // Deleting the user takes its tokens with it.
        assert_eq!(d.remove_user("u1"), vec!["t1".to_string()]);
        assert_eq!(d.authenticate(&a, 50), Err(AuthFailure::Unknown));
    }

    #[test]
    fn roles_parse_and_permissions_nest() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()).unwrap(), r);
            assert!(r.may(Access::Own));
        }
        assert!(
            Role::parse("root")
                .unwrap_err()
                .to_string()
                .contains("owner")
        );
        assert!(!Role::Auditor.may(Access::WriteNetwork) && Role::Auditor.may(Access::Read));
        assert!(!Role::User.may(Access::Read));
        assert!(
            Role::NetworkAdmin.may(Access::WriteNetwork) && !Role::NetworkAdmin.may(Access::Users)
        );
        assert!(Role::Admin.may(Access::Users));
    }

    #[test]
    fn touch_is_due_once_per_period() {
        let a = token::generate();
        let mut d = Directory::new(
            vec![user("u1", Role::Admin)],
            vec![tok("t1", "u1", &a, 1000)],
        );
        assert!(d.touch("t1", 10, 60));
        assert!(!d.touch("t1", 69, 60));
        assert!(d.touch("t1", 70, 60));
        assert_eq!(d.user("u1").unwrap().last_login, Some(70));
        assert!(!d.touch("nope", 70, 60));
    }
}
