//! What every request passes before a handler sees it, outermost first:
//!
//! 1. [`check_request`]: the `Host` header names this server (no DNS rebinding), a browser's
//!    cross-site request is refused (`Sec-Fetch-Site`, `Origin`), and a request that changes
//!    state carries JSON or nothing (no form posts);
//! 2. [`authenticate`]: `Authorization: Token <personal access token>` (or `Bearer`), checked
//!    against the service's users and tokens; 401 otherwise;
//! 3. [`authorize`] (on matched routes): the caller's role allows this route ([`access`]);
//!    403 otherwise.
//!
//! The only way past 2 without a token is [`AuthMode::InsecureNoAuth`], a development mode
//! the server allows on loopback only and logs loudly.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::auth::{Access, Principal, Role};

/// How callers authenticate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// Personal access tokens (the default).
    Tokens,
    /// No authentication: every request acts as an owner. Development only.
    InsecureNoAuth,
}

/// The names a request's `Host` (and a browser's `Origin`) may carry: IP literals and
/// `localhost` always, and the names the server was configured with (`--api-host`).
#[derive(Clone, Debug, Default)]
pub struct AllowedHosts {
    names: Vec<String>,
}

impl AllowedHosts {
    /// IP literals, `localhost` and `names` (compared without case and port).
    pub fn new(names: impl IntoIterator<Item = String>) -> Self {
        AllowedHosts {
            names: names.into_iter().map(|n| n.to_ascii_lowercase()).collect(),
        }
    }

    /// Whether `host` (a `Host` header value or an origin's authority, port optional) is
    /// one of this server's names. An IP literal cannot be rebound to another address, so
    /// it is always one.
    pub fn allows(&self, host: &str) -> bool {
        let name = host_name(host).to_ascii_lowercase();
        if name.is_empty() {
            return false;
        }
        name == "localhost"
            || name
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok()
            || self.names.contains(&name)
    }
}

/// `host` without its port: `[::1]:8080` → `[::1]`, `example.com:443` → `example.com`.
fn host_name(host: &str) -> &str {
    let host = host.trim();
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Whether an `Origin` (`scheme://authority`) names the same site as a `Host` header: the
/// same host and port, the scheme's default port written or not. A `Host` without a port (a
/// proxy in front may drop it) is compared by host name only.
fn same_authority(origin: &str, host: &str) -> bool {
    let (scheme, auth) = origin.trim().split_once("://").unwrap_or(("", origin));
    let auth = auth.split('/').next().unwrap_or(auth);
    let default = match scheme.to_ascii_lowercase().as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => "",
    };
    let norm = |a: &str| -> String {
        let a = a.trim().to_ascii_lowercase();
        match a.strip_suffix(default) {
            Some(rest) if !default.is_empty() && !rest.ends_with(':') => rest.to_string(),
            _ => a,
        }
    };
    let (o, h) = (norm(auth), norm(host));
    if host_name(&h) == h {
        // No port in Host.
        return host_name(&o) == h;
    }
    o == h
}

/// The authority of an `Origin` value (`https://example.com:8443` → `example.com:8443`);
/// `None` for `null` and anything that is not an origin.
fn origin_authority(origin: &str) -> Option<&str> {
    let rest = origin.split_once("://")?.1;
    let auth = rest.split('/').next()?;
    (!auth.is_empty()).then_some(auth)
}

/// What the guards need.
#[derive(Clone)]
pub struct GuardState {
    /// The service (users and tokens).
    pub svc: AppState,
    /// Authentication mode.
    pub mode: AuthMode,
    /// Names of this server.
    pub hosts: Arc<AllowedHosts>,
}

fn refuse(status: StatusCode, msg: impl Into<String>) -> Response {
    ApiError::new(status, msg).into_response()
}

/// Step 1: Host, cross-site and content-type checks.
pub async fn check_request(State(g): State<GuardState>, req: Request, next: Next) -> Response {
    if let Err(e) = check_headers(&g.hosts, req.method(), req.headers()) {
        return e.into_response();
    }
    next.run(req).await
}

fn check_headers(hosts: &AllowedHosts, method: &Method, h: &HeaderMap) -> Result<(), ApiError> {
    let text = |name: header::HeaderName| h.get(&name).and_then(|v| v.to_str().ok());
    let host = text(header::HOST).unwrap_or_default();
    if !hosts.allows(host) {
        return Err(ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "Host {host:?} is not a name of this server; start it with --api-host {} to \
                 accept it",
                host_name(host)
            ),
        ));
    }
    // Browsers say where a request comes from; a page of another site never gets an answer.
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site"))
        && matches!(site, "cross-site" | "same-site")
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross-site requests are refused (Sec-Fetch-Site)",
        ));
    }
    if let Some(origin) = text(header::ORIGIN) {
        // The whole authority (port included): another port of the same host is another site.
        let same =
            origin_authority(origin).is_some_and(|a| same_authority(a, host) && hosts.allows(a));
        if !same {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("requests from origin {origin:?} are refused"),
            ));
        }
    }
    if !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        let ctype = text(header::CONTENT_TYPE);
        let has_body = h
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
            || h.contains_key(header::TRANSFER_ENCODING);
        let json = ctype.is_some_and(is_json);
        if (ctype.is_some() || has_body) && !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "a request that changes something carries `Content-Type: application/json` or \
                 no body",
            ));
        }
    }
    Ok(())
}

/// Whether a `Content-Type` value is `application/json` (parameters such as `charset`
/// allowed): the one type this API takes.
pub fn is_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// Bounds a whole request, reading its body included ([`super::serve::HttpLimits`]).
pub async fn request_timeout(
    State(limit): State<std::time::Duration>,
    req: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => refuse(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request was not answered within {} s (a change it asked for may still \
                 complete; check before retrying)",
                limit.as_secs()
            ),
        ),
    }
}

/// The principal of [`AuthMode::InsecureNoAuth`].
pub fn insecure_principal() -> Principal {
    Principal {
        user_id: "insecure-no-auth".into(),
        name: "unauthenticated (development mode)".into(),
        email: String::new(),
        role: Role::Owner,
        token_id: None,
    }
}

/// The token of an `Authorization` header: `Token <t>` (NetBird's) or `Bearer <t>`.
pub fn presented_token(h: &HeaderMap) -> Option<&str> {
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, t) = v.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer"))
        .then(|| t.trim())
}

/// Step 2: who is calling.
pub async fn authenticate(State(g): State<GuardState>, mut req: Request, next: Next) -> Response {
    let principal = match g.mode {
        AuthMode::InsecureNoAuth => insecure_principal(),
        AuthMode::Tokens => {
            let Some(t) = presented_token(req.headers()) else {
                return unauthorized("no `Authorization: Token <personal access token>` header");
            };
            let t = t.to_string();
            let svc = g.svc.clone();
            match tokio::task::spawn_blocking(move || svc.authenticate(&t)).await {
                Ok(Ok(p)) => p,
                Ok(Err(why)) => {
                    tracing::info!(reason = %why, path = %req.uri().path(), "request refused: not authenticated");
                    return unauthorized("invalid, expired or revoked token");
                }
                Err(e) => {
                    tracing::error!(error = %e, "authentication task failed");
                    return ApiError::internal().into_response();
                }
            }
        }
    };
    req.extensions_mut().insert(principal);
    next.run(req).await
}

fn unauthorized(msg: &str) -> Response {
    let mut r = refuse(StatusCode::UNAUTHORIZED, msg);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Token"),
    );
    r
}

/// What a request on a route needs of its caller.
pub fn access(method: &Method, route: &str, user_param: Option<&str>, p: &Principal) -> Access {
    let own = user_param.is_some_and(|u| u == p.user_id || u == "current");
    let read = matches!(*method, Method::GET | Method::HEAD);
    match route {
        "/api/users/current" => Access::Own,
        "/api/users/{id}/tokens" | "/api/users/{id}/tokens/{tid}" if own => Access::Own,
        "/api/users/{id}" if own && read => Access::Own,
        _ if read => Access::Read,
        r if r.starts_with("/api/users")
            || r == "/api/settings"
            || r.starts_with("/api/accounts") =>
        {
            Access::Users
        }
        _ => Access::WriteNetwork,
    }
}

/// Step 3: may this caller use this route.
pub async fn authorize(
    matched: Option<MatchedPath>,
    params: RawPathParams,
    req: Request,
    next: Next,
) -> Response {
    let Some(p) = req.extensions().get::<Principal>().cloned() else {
        return unauthorized("not authenticated");
    };
    let route = matched.as_ref().map_or("", |m| m.as_str());
    let params: HashMap<&str, &str> = params.iter().collect();
    let need = access(
        req.method(),
        route,
        params
            .get("id")
            .copied()
            .filter(|_| route.starts_with("/api/users/")),
        &p,
    );
    if !p.role.may(need) {
        tracing::info!(user = %p.user_id, role = p.role.as_str(), route, method = %req.method(), "request refused: role");
        return refuse(
            StatusCode::FORBIDDEN,
            format!(
                "the role {} may not {} {route}",
                p.role.as_str(),
                req.method()
            ),
        );
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_and_literals() {
        let h = AllowedHosts::new(["mgmt.example.com".to_string()]);
        for ok in [
            "127.0.0.1:8080",
            "[::1]:8080",
            "localhost",
            "LOCALHOST:1",
            "192.0.2.1",
            "Mgmt.Example.com:443",
        ] {
            assert!(h.allows(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "mgmt.example.com.evil:80",
            "localhost.evil",
        ] {
            assert!(!h.allows(bad), "{bad}");
        }
    }

    #[test]
    fn form_posts_foreign_origins_and_cross_site_fetches_are_refused() {
        let hosts = AllowedHosts::default();
        let mk = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(
                    header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            h
        };
        let base = [("host", "127.0.0.1:8080")];
        let ok = |m: Method, extra: &[(&str, &str)]| {
            let mut all = base.to_vec();
            all.extend_from_slice(extra);
            check_headers(&hosts, &m, &mk(&all)).map_err(|e| e.status)
        };
        assert_eq!(
            ok(
                Method::POST,
                &[
                    ("content-type", "application/json"),
                    ("content-length", "2")
                ]
            ),
            Ok(())
        );
        assert_eq!(ok(Method::POST, &[]), Ok(()), "no body, no type");
        assert_eq!(
            ok(
                Method::POST,
                &[("content-type", "application/x-www-form-urlencoded")]
            ),
            Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(
            ok(Method::PUT, &[("content-length", "5")]),
            Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(
            ok(Method::GET, &[("sec-fetch-site", "cross-site")]),
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            ok(Method::GET, &[("origin", "https://evil.example")]),
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            ok(Method::GET, &[("origin", "http://127.0.0.1:8080")]),
            Ok(())
        );
        assert_eq!(
            ok(Method::GET, &[("origin", "null")]),
            Err(StatusCode::FORBIDDEN)
        );
        let mut rebound = mk(&[("host", "attacker.example")]);
        assert_eq!(
            check_headers(&hosts, &Method::GET, &rebound).map_err(|e| e.status),
            Err(StatusCode::MISDIRECTED_REQUEST)
        );
        rebound.remove(header::HOST);
        assert!(
            check_headers(&hosts, &Method::GET, &rebound).is_err(),
            "no Host"
        );
    }

    #[test]
    fn token_header_forms() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Token nbp_x".parse().unwrap());
        assert_eq!(presented_token(&h), Some("nbp_x"));
        h.insert(header::AUTHORIZATION, "bearer nbp_y".parse().unwrap());
        assert_eq!(presented_token(&h), Some("nbp_y"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(presented_token(&h), None);
    }

    #[test]
    fn routes_need_what_they_change() {
        let p = Principal {
            user_id: "u1".into(),
            name: "u".into(),
            email: String::new(),
            role: Role::User,
            token_id: None,
        };
        assert_eq!(access(&Method::GET, "/api/groups", None, &p), Access::Read);
        assert_eq!(
            access(&Method::POST, "/api/groups", None, &p),
            Access::WriteNetwork
        );
        assert_eq!(
            access(&Method::POST, "/api/users/{id}/tokens", Some("u1"), &p),
            Access::Own
        );
        assert_eq!(
            access(&Method::POST, "/api/users/{id}/tokens", Some("u2"), &p),
            Access::Users
        );
        assert_eq!(
            access(&Method::PUT, "/api/users/{id}", Some("u1"), &p),
            Access::Users
        );
        assert_eq!(
            access(&Method::GET, "/api/users/{id}", Some("u1"), &p),
            Access::Own
        );
        assert_eq!(
            access(&Method::PUT, "/api/settings", None, &p),
            Access::Users
        );
        assert_eq!(
            access(&Method::GET, "/api/users/current", None, &p),
            Access::Own
        );
    }
}
