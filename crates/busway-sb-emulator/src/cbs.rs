//! Claims-based security: SAS tokens put on the `$cbs` node and the claims they grant.
//!
//! Service Bus refuses a put-token whose signature does not verify with a key it knows, whose
//! expiry has passed or whose audience does not cover the requested resource; it answers `202` on
//! success and `401` otherwise. A link to an entity is refused unless a token covering the entity
//! was put on the same connection first.

use std::collections::HashMap;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Shared access keys by key name.
#[derive(Clone, Default)]
pub(crate) struct SasKeys(HashMap<String, String>);

impl std::fmt::Debug for SasKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys are secrets: only their names are shown.
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl SasKeys {
    pub fn insert(&mut self, name: String, key: String) {
        self.0.insert(name, key);
    }

    pub fn first(&self) -> Option<(&str, &str)> {
        let mut names: Vec<&String> = self.0.keys().collect();
        names.sort();
        let name = names.first()?;
        Some((name.as_str(), self.0.get(*name)?.as_str()))
    }

    /// Validates a `SharedAccessSignature sr=..&sig=..&se=..&skn=..` token for `resource`.
    /// Returns the audience path (entity path prefix) it grants, or why it is refused.
    pub fn validate(&self, token: &str, resource: &str, now_secs: i64) -> Result<String, String> {
        let fields = token
            .strip_prefix("SharedAccessSignature ")
            .ok_or("not a SharedAccessSignature token")?;
        let mut sr_raw = None;
        let mut sig = None;
        let mut se = None;
        let mut skn = None;
        for pair in fields.split('&') {
            let (k, v) = pair.split_once('=').ok_or("malformed token")?;
            match k {
                "sr" => sr_raw = Some(v),
                "sig" => sig = Some(decode(v)?),
                "se" => se = Some(decode(v)?),
                "skn" => skn = Some(decode(v)?),
                _ => {}
            }
        }
        let (sr_raw, sig, se, skn) = match (sr_raw, sig, se, skn) {
            (Some(a), Some(b), Some(c), Some(d)) => (a, b, c, d),
            _ => return Err("token lacks sr, sig, se or skn".into()),
        };
        let key = self
            .0
            .get(&skn)
            .ok_or_else(|| format!("unknown SharedAccessKeyName '{skn}'"))?;
        // The signature covers the audience exactly as it appears (URL-encoded) in the token.
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes())
            .map_err(|_| "invalid key length".to_string())?;
        mac.update(format!("{sr_raw}\n{se}").as_bytes());
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        if expected != sig {
            return Err("InvalidSignature: the token has an invalid signature".into());
        }
        let expiry: i64 = se.parse().map_err(|_| "invalid expiry".to_string())?;
        if expiry <= now_secs {
            return Err("ExpiredToken: the token is expired".into());
        }
        let audience = normalize(&decode(sr_raw)?);
        let requested = normalize(resource);
        if !requested.starts_with(&audience) {
            return Err(format!(
                "InvalidAudience: the token audience '{audience}' does not cover '{requested}'"
            ));
        }
        Ok(path_of(&requested).to_string())
    }
}

fn decode(v: &str) -> Result<String, String> {
    urlencoding::decode(&v.replace('+', " "))
        .map(|s| s.into_owned())
        .map_err(|_| "malformed token encoding".to_string())
}

/// Lower-cases and drops the scheme so `amqp://`, `amqps://` and `sb://` audiences compare equal.
fn normalize(uri: &str) -> String {
    let without_scheme = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    without_scheme.trim_end_matches('/').to_ascii_lowercase()
}

fn path_of(normalized: &str) -> &str {
    normalized.split_once('/').map_or("", |(_, path)| path)
}

/// Entity paths this connection holds tokens for.
#[derive(Debug, Default)]
pub(crate) struct Claims {
    paths: Vec<String>,
}

impl Claims {
    pub fn grant(&mut self, path: String) {
        if !self.paths.contains(&path) {
            self.paths.push(path);
        }
    }

    /// Whether a token covering `path` (an entity path, any case) was put.
    pub fn covers(&self, path: &str) -> bool {
        let path = path.trim_matches('/').to_ascii_lowercase();
        self.paths.iter().any(|granted| {
            granted.is_empty()
                || path == *granted
                || path
                    .strip_prefix(granted.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn token(audience: &str, key: &str, expiry: i64) -> String {
        let encoded: String = urlencoding::encode(audience).into_owned();
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(format!("{encoded}\n{expiry}").as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        format!(
            "SharedAccessSignature sig={}&se={expiry}&skn=root&sr={encoded}",
            urlencoding::encode(&sig)
        )
    }

    #[test]
    fn validates_tokens() {
        let mut keys = SasKeys::default();
        keys.insert("root".into(), "secret".into());
        let good = token("amqp://127.0.0.1:5672/", "secret", 2_000_000_000);
        assert_eq!(
            keys.validate(&good, "amqp://127.0.0.1:5672/q1", 1_000)
                .unwrap(),
            "q1"
        );
        let bad = token("amqp://127.0.0.1:5672/", "wrong", 2_000_000_000);
        assert!(
            keys.validate(&bad, "amqp://127.0.0.1:5672/q1", 1_000)
                .is_err()
        );
        let expired = token("amqp://127.0.0.1:5672/", "secret", 10);
        assert!(
            keys.validate(&expired, "amqp://127.0.0.1:5672/q1", 1_000)
                .is_err()
        );
        let other = token("amqp://127.0.0.1:5672/q2", "secret", 2_000_000_000);
        assert!(
            keys.validate(&other, "amqp://127.0.0.1:5672/q1", 1_000)
                .is_err()
        );
    }

    #[test]
    fn claims_cover_sub_paths() {
        let mut claims = Claims::default();
        claims.grant("t1".into());
        assert!(claims.covers("T1/Subscriptions/s"));
        assert!(!claims.covers("t10"));
    }
}
