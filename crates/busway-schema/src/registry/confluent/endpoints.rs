//! The [`SchemaRegistry`] operations, each mapped onto its REST endpoint.

use std::sync::PoisonError;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde_json::json;

use super::super::SchemaRegistry;
use super::ConfluentRegistry;
use super::bodies::{
    CompatibilityBody, ConfigBody, IdBody, SchemaBody, SubjectVersionBody, SubjectVersionRef,
    format_of, schema_body,
};
use super::errors::{Target, classify};
use super::http::Outcome;
use crate::compat::{CompatibilityReport, Incompatibility};
use crate::error::SchemaError;
use crate::schema::{CompatibilityMode, RegisteredSchema, Schema};

impl ConfluentRegistry {
    /// The version `id` has under `subject`, from the registry's reverse index, or from a lookup
    /// when the server lacks that endpoint.
    async fn version_of(
        &self,
        subject: &str,
        schema: &Schema,
        id: u32,
    ) -> Result<u32, SchemaError> {
        let id_text = id.to_string();
        let outcome = self
            .send::<Vec<SubjectVersionRef>>(
                Method::GET,
                &["schemas", "ids", &id_text, "versions"],
                &[],
                None,
            )
            .await?;
        match outcome {
            Outcome::Ok(refs) => {
                if let Some(found) = refs.iter().find(|r| r.subject == subject) {
                    return Ok(found.version);
                }
            }
            Outcome::Failed(f) if f.status == StatusCode::NOT_FOUND => {}
            Outcome::Failed(f) => {
                return Err(classify(f, Target::of_id(id)));
            }
        }
        let unlisted = |how: &str| SchemaError::Registry {
            status: 200,
            message: format!(
                "the registry answered a registration under `{subject}` with schema id {id} but \
                 does not list that id under the subject ({how})"
            ),
        };
        match self.lookup_uncached(subject, schema).await {
            Ok(Some(registered)) => Ok(registered.version),
            Ok(None) => Err(unlisted("and a lookup does not find it")),
            // Servers without the lookup endpoint answer 405.
            Err(SchemaError::Registry { status: 405, .. }) => {
                Err(unlisted("and the server has no lookup endpoint to ask"))
            }
            Err(e) => Err(e),
        }
    }

    async fn lookup_uncached(
        &self,
        subject: &str,
        schema: &Schema,
    ) -> Result<Option<RegisteredSchema>, SchemaError> {
        let outcome = self
            .send::<SubjectVersionBody>(
                Method::POST,
                &["subjects", subject],
                &[("normalize", "true")],
                Some(schema_body(schema)),
            )
            .await?;
        match outcome {
            Outcome::Ok(body) => {
                let mut registered = body.into_registered()?;
                // The caller's text is what they registered; the server may have reformatted it.
                registered.schema = schema.clone();
                Ok(Some(registered))
            }
            Outcome::Failed(f) if matches!(f.code, Some(40401 | 40403)) => Ok(None),
            Outcome::Failed(f) => Err(classify(f, Target::of_schema(subject, schema.format()))),
        }
    }
}

/// The registry's compatibility messages as violations, leaving out the informational ones
/// (the old schema, its version, the settings) that Confluent appends to real violations.
pub(super) fn violations_from(messages: Vec<String>) -> Vec<Incompatibility> {
    let informational = |m: &str| {
        let m = m.trim_start_matches('{');
        m.starts_with("oldSchemaVersion")
            || m.starts_with("oldSchema")
            || m.starts_with("validateFields")
    };
    let all: Vec<Incompatibility> = messages
        .iter()
        .map(|m| Incompatibility::new("", m.clone()))
        .collect();
    let real: Vec<Incompatibility> = all
        .iter()
        .filter(|v| !informational(&v.message))
        .cloned()
        .collect();
    if real.is_empty() { all } else { real }
}

#[async_trait]
impl SchemaRegistry for ConfluentRegistry {
    async fn register(
        &self,
        subject: &str,
        schema: Schema,
    ) -> Result<RegisteredSchema, SchemaError> {
        if let Some(registered) = self.cached_registration(subject, &schema) {
            return Ok(registered);
        }
        let target = Target::of_schema(subject, schema.format());
        let outcome = self
            .send::<IdBody>(
                Method::POST,
                &["subjects", subject, "versions"],
                &[("normalize", "true")],
                Some(schema_body(&schema)),
            )
            .await?;
        let body = match outcome {
            Outcome::Ok(body) => body,
            Outcome::Failed(f) if f.status == StatusCode::CONFLICT => {
                // The 409 answer does not say which mode refused the schema; ask, but do not let
                // a failure to ask hide the refusal itself.
                let mode = self.compatibility(subject).await.unwrap_or_default();
                return Err(SchemaError::Incompatible {
                    subject: subject.to_owned(),
                    mode,
                    violations: vec![Incompatibility::new("", f.message)],
                });
            }
            Outcome::Failed(f) => return Err(classify(f, target)),
        };
        let version = match body.version {
            Some(version) => version,
            None => self.version_of(subject, &schema, body.id).await?,
        };
        let registered = RegisteredSchema {
            id: body.id,
            subject: subject.to_owned(),
            version,
            schema,
        };
        self.remember(&registered);
        Ok(registered)
    }

    async fn lookup(
        &self,
        subject: &str,
        schema: &Schema,
    ) -> Result<Option<RegisteredSchema>, SchemaError> {
        if let Some(registered) = self.cached_registration(subject, schema) {
            return Ok(Some(registered));
        }
        let found = self.lookup_uncached(subject, schema).await?;
        if let Some(registered) = &found {
            self.remember(registered);
        }
        Ok(found)
    }

    async fn schema_by_id(&self, id: u32) -> Result<Schema, SchemaError> {
        if let Some(schema) = self
            .schemas_by_id
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
        {
            return Ok(schema.clone());
        }
        let id_text = id.to_string();
        let body: SchemaBody = self
            .get(&["schemas", "ids", &id_text], Target::of_id(id))
            .await?;
        let schema = Schema::new(format_of(body.schema_type.as_deref())?, body.schema);
        self.schemas_by_id
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, schema.clone());
        Ok(schema)
    }

    async fn version(&self, subject: &str, version: u32) -> Result<RegisteredSchema, SchemaError> {
        let version_text = version.to_string();
        let body: SubjectVersionBody = self
            .get(
                &["subjects", subject, "versions", &version_text],
                Target {
                    version: Some(version),
                    ..Target::of_subject(subject)
                },
            )
            .await?;
        body.into_registered()
    }

    async fn latest(&self, subject: &str) -> Result<RegisteredSchema, SchemaError> {
        let body: SubjectVersionBody = self
            .get(
                &["subjects", subject, "versions", "latest"],
                Target::of_subject(subject),
            )
            .await?;
        body.into_registered()
    }

    async fn versions(&self, subject: &str) -> Result<Vec<u32>, SchemaError> {
        let mut versions: Vec<u32> = self
            .get(
                &["subjects", subject, "versions"],
                Target::of_subject(subject),
            )
            .await?;
        // A subject exists while it has versions: Confluent answers 40401 otherwise, some
        // compatible servers an empty list. Both mean the same here.
        if versions.is_empty() {
            return Err(SchemaError::SubjectNotFound(subject.to_owned()));
        }
        versions.sort_unstable();
        Ok(versions)
    }

    async fn subjects(&self) -> Result<Vec<String>, SchemaError> {
        let mut subjects: Vec<String> = self.get(&["subjects"], Target::default()).await?;
        subjects.sort();
        Ok(subjects)
    }

    async fn compatibility(&self, subject: &str) -> Result<CompatibilityMode, SchemaError> {
        let outcome = self
            .send::<ConfigBody>(
                Method::GET,
                &["config", subject],
                &[("defaultToGlobal", "true")],
                None,
            )
            .await?;
        let body = match outcome {
            Outcome::Ok(body) => body,
            // No mode of its own (40401, or 40408 on servers that ignore `defaultToGlobal`).
            Outcome::Failed(f) if f.status == StatusCode::NOT_FOUND => {
                self.get(&["config"], Target::default()).await?
            }
            Outcome::Failed(f) => {
                return Err(classify(f, Target::of_subject(subject)));
            }
        };
        body.compatibility_level
            .parse()
            .map_err(|_| SchemaError::Registry {
                status: 200,
                message: format!(
                    "unknown compatibility level `{}` in the registry's answer",
                    body.compatibility_level
                ),
            })
    }

    async fn set_compatibility(
        &self,
        subject: &str,
        mode: CompatibilityMode,
    ) -> Result<(), SchemaError> {
        let _: serde_json::Value = self
            .call(
                Method::PUT,
                &["config", subject],
                &[],
                Some(json!({ "compatibility": mode.as_str() })),
                Target::of_subject(subject),
            )
            .await?;
        Ok(())
    }

    async fn check_compatibility(
        &self,
        subject: &str,
        schema: &Schema,
    ) -> Result<CompatibilityReport, SchemaError> {
        let mode = self.compatibility(subject).await?;
        let outcome = self
            .send::<CompatibilityBody>(
                Method::POST,
                &["compatibility", "subjects", subject, "versions", "latest"],
                &[("verbose", "true")],
                Some(schema_body(schema)),
            )
            .await?;
        let body = match outcome {
            Outcome::Ok(body) => body,
            // Nothing registered yet: nothing to be incompatible with.
            Outcome::Failed(f) if matches!(f.code, Some(40401 | 40402)) => {
                return Ok(CompatibilityReport {
                    mode,
                    violations: Vec::new(),
                });
            }
            Outcome::Failed(f) => {
                return Err(classify(f, Target::of_schema(subject, schema.format())));
            }
        };
        let violations = if body.is_compatible {
            Vec::new()
        } else {
            let mut violations = violations_from(body.messages);
            if violations.is_empty() {
                // Some servers give the verdict without reasons; the verdict still counts.
                violations.push(Incompatibility::new(
                    "",
                    "the registry reports the schema incompatible without giving details",
                ));
            }
            violations
        };
        Ok(CompatibilityReport { mode, violations })
    }
}
