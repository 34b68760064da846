//! Classifying failures into [`SchemaError`]s (see the module docs).

use reqwest::StatusCode;

use crate::error::SchemaError;
use crate::schema::SchemaFormat;

/// What a request was about, to name it in errors.
#[derive(Clone, Copy, Default)]
pub(super) struct Target<'a> {
    pub(super) subject: Option<&'a str>,
    pub(super) version: Option<u32>,
    pub(super) id: Option<u32>,
    /// The format of a schema the request carries.
    pub(super) format: Option<SchemaFormat>,
}

impl<'a> Target<'a> {
    /// A request about `subject`.
    pub(super) fn of_subject(subject: &'a str) -> Self {
        Self {
            subject: Some(subject),
            ..Self::default()
        }
    }

    /// A request carrying a schema of `format` for `subject`.
    pub(super) fn of_schema(subject: &'a str, format: SchemaFormat) -> Self {
        Self {
            format: Some(format),
            ..Self::of_subject(subject)
        }
    }

    /// A request about schema `id`.
    pub(super) fn of_id(id: u32) -> Self {
        Self {
            id: Some(id),
            ..Self::default()
        }
    }
}

/// An error answer, before classification.
pub(super) struct Failure {
    pub(super) status: StatusCode,
    pub(super) code: Option<u32>,
    pub(super) message: String,
}

/// A request that got no answer: unreachable, refused, timed out, cut off.
pub(super) fn transport(what: &str, e: &reqwest::Error) -> SchemaError {
    let mut message = format!("{what}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    SchemaError::Unavailable(message)
}

/// Classifies an error answer (see the module docs).
pub(super) fn classify(failure: Failure, target: Target<'_>) -> SchemaError {
    let Failure {
        status,
        code,
        message,
    } = failure;
    let subject = || target.subject.unwrap_or_default().to_owned();
    match code {
        Some(40401) => return SchemaError::SubjectNotFound(subject()),
        Some(40402) => {
            return SchemaError::VersionNotFound {
                subject: subject(),
                version: target.version.unwrap_or_default(),
            };
        }
        Some(40403) => return SchemaError::SchemaNotFound(target.id.unwrap_or_default()),
        _ => {}
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return SchemaError::Auth(message);
    }
    // A 422 about the schema the request carried; other 422 codes (bad version, bad mode) are
    // the client's mistake and stay `Registry` errors.
    if let Some(format) = target.format
        && (status == StatusCode::UNPROCESSABLE_ENTITY || code == Some(42201))
        && matches!(code, None | Some(42201) | Some(422))
    {
        return SchemaError::InvalidSchema {
            format,
            reason: message,
        };
    }
    if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        return SchemaError::Unavailable(format!("HTTP {status}: {message}"));
    }
    SchemaError::Registry {
        status: code.unwrap_or_else(|| u32::from(status.as_u16())),
        message,
    }
}
