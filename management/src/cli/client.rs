//! A small blocking client for the admin REST API.

use serde::Serialize;
use serde_json::Value;

/// An API call that failed: the server's `{ "error" }` message and status, or a transport error.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status.
    #[error("{message} (HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The server could not be reached or answered garbage.
    #[error("cannot talk to the management API at {url}: {message}")]
    Transport {
        /// The base URL.
        url: String,
        /// What happened.
        message: String,
    },
}

/// The admin API at a base URL.
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// Percent-encodes one path segment (names may contain spaces and slashes).
pub fn segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:8080`) that sends `token` (a personal
    /// access token) as `Authorization: Token <token>`.
    pub fn new(base: &str, token: Option<String>) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            .build()
            .into();
        Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            agent,
        }
    }

    fn transport(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Transport {
            url: self.base.clone(),
            message: e.to_string(),
        }
    }

    fn finish(
        &self,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value, ClientError> {
        let mut resp = r.map_err(|e| self.transport(e))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| self.transport(e))?;
        let v: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).map_err(|e| self.transport(format!("bad JSON: {e}")))?
        };
        if (200..300).contains(&status) {
            Ok(v)
        } else {
            let message = v
                .get("message")
                .or_else(|| v.get("error"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or(text);
            Err(ClientError::Api { status, message })
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn auth(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Token {t}"))
    }

    /// GET.
    pub fn get(&self, path: &str) -> Result<Value, ClientError> {
        let mut req = self.agent.get(&self.url(path));
        if let Some(a) = self.auth() {
            req = req.header("Authorization", &a);
        }
        self.finish(req.call())
    }

    /// DELETE.
    pub fn delete(&self, path: &str) -> Result<Value, ClientError> {
        let mut req = self.agent.delete(&self.url(path));
        if let Some(a) = self.auth() {
            req = req.header("Authorization", &a);
        }
        self.finish(req.call())
    }

    /// POST with a JSON body (`None`: empty body).
    pub fn post<B: Serialize>(&self, path: &str, body: Option<&B>) -> Result<Value, ClientError> {
        let mut req = self.agent.post(&self.url(path));
        if let Some(a) = self.auth() {
            req = req.header("Authorization", &a);
        }
        self.finish(match body {
            Some(b) => req.send_json(b),
            None => req.send_empty(),
        })
    }

    /// PUT with a JSON body.
    pub fn put<B: Serialize>(&self, path: &str, body: &B) -> Result<Value, ClientError> {
        let mut req = self.agent.put(&self.url(path));
        if let Some(a) = self.auth() {
            req = req.header("Authorization", &a);
        }
        self.finish(req.send_json(body))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn segments() {
        assert_eq!(super::segment("Berlin Office"), "Berlin%20Office");
        assert_eq!(super::segment("a/b"), "a%2Fb");
        assert_eq!(super::segment("pol-1x"), "pol-1x");
    }
}
