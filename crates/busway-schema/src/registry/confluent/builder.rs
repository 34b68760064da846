//! Settings of a [`ConfluentRegistry`]: URL, credentials, timeouts.

use std::sync::RwLock;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use super::ConfluentRegistry;
use crate::error::SchemaError;

/// Settings of a [`ConfluentRegistry`]; see [`ConfluentRegistry::builder`].
pub struct ConfluentRegistryBuilder {
    pub(super) url: String,
    pub(super) username: Option<String>,
    pub(super) password: Option<SecretString>,
    pub(super) timeout: Duration,
    pub(super) connect_timeout: Duration,
}

impl std::fmt::Debug for ConfluentRegistryBuilder {
    /// The URL may carry `user:password@`: its password is replaced, like the basic-auth one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfluentRegistryBuilder")
            .field("url", &redact_url(&self.url))
            .field("username", &self.username)
            .field("password", &self.password)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl ConfluentRegistryBuilder {
    /// Authenticates every request with HTTP basic auth (Confluent Cloud: API key and secret).
    pub fn basic_auth(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self.password = Some(SecretString::from(password.into()));
        self
    }

    /// Limits each request, from connecting to reading the whole answer
    /// ([`DEFAULT_TIMEOUT`](super::DEFAULT_TIMEOUT) unless set).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Limits connecting ([`DEFAULT_CONNECT_TIMEOUT`](super::DEFAULT_CONNECT_TIMEOUT) unless set).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The client. Fails with [`SchemaError::Config`] on a URL that is not `http(s)://…`.
    ///
    /// Credentials in the URL (`https://user:secret@host`) are taken out of it and used for basic
    /// auth, so that they never show in URLs, logs or errors.
    pub fn build(self) -> Result<ConfluentRegistry, SchemaError> {
        let config_error = |reason: String| SchemaError::Config {
            field: "url".into(),
            reason,
        };
        let mut base = Url::parse(&self.url)
            .map_err(|e| config_error(format!("not a URL ({e}): {}", redact_url(&self.url))))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(config_error(format!(
                "expected an http:// or https:// URL, got `{}`",
                redact_url(&self.url)
            )));
        }
        let (mut username, mut password) = (self.username, self.password);
        if !base.username().is_empty() || base.password().is_some() {
            if username.is_none() {
                username = Some(decode(base.username()));
                password = base.password().map(|p| SecretString::from(decode(p)));
            }
            // Both calls only fail for URLs without a host, which were refused above.
            let _ = base.set_username("");
            let _ = base.set_password(None);
        }
        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .build()
            .map_err(|e| config_error(format!("cannot build the HTTP client: {e}")))?;
        Ok(ConfluentRegistry {
            http,
            base,
            username,
            password,
            schemas_by_id: RwLock::default(),
            registrations: RwLock::default(),
        })
    }
}

/// Percent-decodes a URL's user or password (`%40` is `@`); `+` stays a plus, unlike in forms.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A URL for messages: the password, if any, replaced.
fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("REDACTED"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => "<unparsable URL>".to_owned(),
    }
}
