//! Unit tests of URL building, credentials in URLs, and error classification.

#![allow(clippy::unwrap_used)]

use reqwest::StatusCode;
use secrecy::ExposeSecret;

use super::bodies::format_of;
use super::endpoints::violations_from;
use super::errors::{Failure, Target, classify};
use super::*;
use crate::schema::SchemaFormat;

#[test]
fn subjects_are_one_percent_encoded_path_segment() {
    let registry = ConfluentRegistry::new("http://localhost:8081/prefix/").unwrap();
    let url = registry
        .url_for(
            &["subjects", "a/b c?d#e%", "versions"],
            &[("verbose", "true")],
        )
        .unwrap();
    assert_eq!(
        url.as_str(),
        "http://localhost:8081/prefix/subjects/a%2Fb%20c%3Fd%23e%25/versions?verbose=true"
    );
    let registry = ConfluentRegistry::new("http://localhost:8081").unwrap();
    for bad in ["", ".", ".."] {
        assert!(matches!(
            registry.url_for(&["subjects", bad], &[]),
            Err(SchemaError::Config { .. })
        ));
    }
    assert_eq!(
        registry
            .url_for(&["subjects", "...", "a.b"], &[])
            .unwrap()
            .as_str(),
        "http://localhost:8081/subjects/.../a.b"
    );
}

#[test]
fn credentials_in_the_url_move_to_basic_auth_and_never_print() {
    let registry = ConfluentRegistry::new("https://key:s3cr%40t@registry.example.com").unwrap();
    assert_eq!(registry.url().as_str(), "https://registry.example.com/");
    assert_eq!(registry.username.as_deref(), Some("key"));
    assert_eq!(
        registry
            .password
            .as_ref()
            .map(|p| p.expose_secret().to_owned()),
        Some("s3cr@t".to_owned())
    );
    let debug = format!("{registry:?}");
    assert!(!debug.contains("s3cr"), "{debug}");
    assert!(debug.contains("key"), "{debug}");

    let builder = ConfluentRegistry::builder("http://h").basic_auth("u", "hunter2");
    assert!(!format!("{builder:?}").contains("hunter2"));
    let builder = ConfluentRegistry::builder("https://key:hunter2@registry.example.com");
    let debug = format!("{builder:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("registry.example.com"), "{debug}");
    assert!(!format!("{:?}", builder.build().unwrap()).contains("hunter2"));
}

#[test]
fn bad_urls_are_config_errors_without_the_password() {
    for url in ["not a url", "ftp://host/", "mailto:someone@example.com"] {
        assert!(
            matches!(ConfluentRegistry::new(url), Err(SchemaError::Config { ref field, .. }) if field == "url"),
            "{url}"
        );
    }
    let err = ConfluentRegistry::new("ftp://user:pw-secret@host/").unwrap_err();
    assert!(!err.to_string().contains("pw-secret"), "{err}");
}

fn failure(status: u16, code: Option<u32>) -> Failure {
    Failure {
        status: StatusCode::from_u16(status).unwrap(),
        code,
        message: "server says no".into(),
    }
}

#[test]
fn error_answers_are_classified() {
    let target = Target {
        subject: Some("s"),
        version: Some(3),
        id: Some(9),
        format: Some(SchemaFormat::Json),
    };
    let c = |status, code| classify(failure(status, code), target);
    assert!(matches!(c(404, Some(40401)), SchemaError::SubjectNotFound(s) if s == "s"));
    assert!(matches!(
        c(404, Some(40402)),
        SchemaError::VersionNotFound { subject, version: 3 } if subject == "s"
    ));
    assert!(matches!(
        c(404, Some(40403)),
        SchemaError::SchemaNotFound(9)
    ));
    assert!(matches!(
        c(422, Some(42201)),
        SchemaError::InvalidSchema {
            format: SchemaFormat::Json,
            ..
        }
    ));
    assert!(matches!(c(422, None), SchemaError::InvalidSchema { .. }));
    assert!(matches!(c(401, Some(40101)), SchemaError::Auth(_)));
    assert!(matches!(c(403, None), SchemaError::Auth(_)));
    for status in [500, 502, 503, 504, 408, 429] {
        let e = c(status, None);
        assert!(e.is_transient(), "{status}: {e:?}");
    }
    assert!(matches!(
        c(422, Some(42203)),
        SchemaError::Registry { status: 42203, .. }
    ));
    assert!(matches!(
        c(404, None),
        SchemaError::Registry { status: 404, .. }
    ));
    assert!(matches!(
        c(400, None),
        SchemaError::Registry { status: 400, .. }
    ));
    // Without a schema in the request a 422 is not about a schema.
    assert!(matches!(
        classify(failure(422, Some(42202)), Target::default()),
        SchemaError::Registry { status: 42202, .. }
    ));
}

#[test]
fn informational_messages_are_not_violations() {
    let violations = violations_from(vec![
        "{errorType:'READER_FIELD_MISSING_DEFAULT_VALUE', description:'amount has no default'}"
            .into(),
        "{oldSchemaVersion: 1}".into(),
        "{oldSchema: '{\"type\":\"record\"}'}".into(),
        "{validateFields: 'false', compatibility: 'BACKWARD'}".into(),
    ]);
    assert_eq!(violations.len(), 1);
    assert!(violations[0].message.contains("amount"));
    // When only informational messages came, they are kept rather than dropping everything.
    assert_eq!(
        violations_from(vec!["{oldSchemaVersion: 1}".into()]).len(),
        1
    );
}

#[test]
fn absent_schema_type_means_avro() {
    assert_eq!(format_of(None).unwrap(), SchemaFormat::Avro);
    assert_eq!(format_of(Some("PROTOBUF")).unwrap(), SchemaFormat::Protobuf);
    assert!(matches!(
        format_of(Some("XML")),
        Err(SchemaError::Registry { .. })
    ));
}

/// Serves one HTTP answer of `body_len` bytes to whoever connects, announcing its length or not.
async fn huge_answer(body_len: usize, announce: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let mut request = [0u8; 4096];
        let _ = socket.read(&mut request).await;
        let head = if announce {
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {body_len}\r\n\r\n"
            )
        } else {
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n"
                .to_owned()
        };
        if socket.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b' '; 64 * 1024];
        let mut sent = 0;
        while sent < body_len {
            let n = chunk.len().min(body_len - sent);
            if socket.write_all(&chunk[..n]).await.is_err() {
                return;
            }
            sent += n;
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn an_answer_larger_than_the_bound_is_refused_not_buffered() {
    use crate::registry::SchemaRegistry;
    for announce in [true, false] {
        let url = huge_answer(super::http::MAX_ANSWER_BYTES + 1, announce).await;
        let registry = ConfluentRegistry::new(url).unwrap();
        let err = registry.subjects().await.unwrap_err();
        assert!(
            err.to_string().contains("larger than"),
            "announce={announce}: {err}"
        );
    }
}
