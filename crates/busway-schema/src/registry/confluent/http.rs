//! Sending one request: URLs, media types, auth, and reading the answer or the error body.

use reqwest::Method;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use url::Url;

use super::ConfluentRegistry;
use super::errors::{Failure, Target, classify, transport};
use crate::error::SchemaError;

/// The registry's media type, for requests and preferred in responses.
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

const ACCEPT: &str = "application/vnd.schemaregistry.v1+json, \
                      application/vnd.schemaregistry+json; qs=0.9, application/json; qs=0.5";

/// What a request the server answered can come to: the answer, or the server's error for the
/// caller to classify (some errors mean "not there" rather than failure, depending on the call).
pub(super) enum Outcome<T> {
    Ok(T),
    Failed(Failure),
}

#[derive(Deserialize)]
struct ErrorBody {
    pub(super) error_code: Option<u32>,
    pub(super) message: Option<String>,
}

impl ConfluentRegistry {
    /// `base` with `segments` appended, each percent-encoded as one path segment.
    ///
    /// Fails for segments no URL can carry: empty, `.` and `..` (URL parsers resolve those, even
    /// percent-encoded, so a subject named `..` would address another resource).
    pub(super) fn url_for(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Url, SchemaError> {
        if let Some(bad) = segments.iter().find(|s| matches!(**s, "" | "." | "..")) {
            return Err(SchemaError::Config {
                field: "subject".into(),
                reason: format!("`{bad}` cannot be addressed in a registry URL"),
            });
        }
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// Sends one request; a failure the server answered with is returned for the caller to
    /// classify, transport failures are classified here.
    pub(super) async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<serde_json::Value>,
    ) -> Result<Outcome<T>, SchemaError> {
        let url = self.url_for(segments, query)?;
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .header(reqwest::header::ACCEPT, ACCEPT);
        if let Some(username) = &self.username {
            request = request.basic_auth(
                username,
                self.password.as_ref().map(|p| p.expose_secret().to_owned()),
            );
        }
        if let Some(body) = body {
            let bytes =
                serde_json::to_vec(&body).map_err(|e| SchemaError::Encode(e.to_string()))?;
            request = request
                .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                .body(bytes);
        }
        let what = format!("{method} {}", url.path());
        let response = request.send().await.map_err(|e| transport(&what, &e))?;
        let status = response.status();
        let text = read_bounded(response, &what).await?;
        if status.is_success() {
            return serde_json::from_str(&text).map(Outcome::Ok).map_err(|e| {
                SchemaError::Registry {
                    status: u32::from(status.as_u16()),
                    message: format!("unexpected answer to {what}: {e}: {}", truncate(&text)),
                }
            });
        }
        let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => (
                body.error_code,
                body.message.unwrap_or_else(|| truncate(&text)),
            ),
            Err(_) => (None, truncate(&text)),
        };
        Ok(Outcome::Failed(Failure {
            status,
            code,
            message: format!("{what}: {message}"),
        }))
    }

    /// [`Self::send`], with every failure classified.
    pub(super) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<serde_json::Value>,
        target: Target<'_>,
    ) -> Result<T, SchemaError> {
        match self.send(method, segments, query, body).await? {
            Outcome::Ok(value) => Ok(value),
            Outcome::Failed(failure) => Err(classify(failure, target)),
        }
    }

    /// A `GET` of `segments`, with every failure classified.
    pub(super) async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        target: Target<'_>,
    ) -> Result<T, SchemaError> {
        self.call(Method::GET, segments, &[], None, target).await
    }
}

/// The largest answer read from a registry: far above any real schema or listing, low enough
/// that a misbehaving server cannot make the client buffer without bound.
pub(super) const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Reads an answer's body as text, refusing one over [`MAX_ANSWER_BYTES`] as soon as it shows
/// (by its announced length, or while streaming).
async fn read_bounded(mut response: reqwest::Response, what: &str) -> Result<String, SchemaError> {
    let status = u32::from(response.status().as_u16());
    let too_large = || SchemaError::Registry {
        status,
        message: format!("the answer to {what} is larger than {MAX_ANSWER_BYTES} bytes"),
    };
    if response
        .content_length()
        .is_some_and(|len| len > MAX_ANSWER_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport(what, &e))? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn truncate(text: &str) -> String {
    const MAX: usize = 500;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}
