//! Routing one message: handler lookup, version and compatibility checks, Confluent
//! unframing, error classification.

use std::collections::HashMap;

use busway_core::{DeadLetterReason, HandlerError, Incoming};
use bytes::Bytes;

use super::handler::Route;
use crate::codec::{SchemaCache, WireFormat};
use crate::error::SchemaError;
use crate::event::DataSchema;
use crate::registry::wire;
use crate::schema::SchemaFormat;
use crate::upcast::Upcasters;

pub(super) struct Inner {
    pub(super) routes: HashMap<&'static str, Box<dyn Route>>,
    pub(super) upcasters: Upcasters,
    pub(super) schemas: SchemaCache,
    pub(super) wire_format: WireFormat,
}

fn unknown_type(message: String) -> HandlerError {
    HandlerError::permanent(message).with_reason(DeadLetterReason::UnknownType)
}

/// The handler error for a schema failure, with the reason it dead-letters under.
pub(super) fn classify(e: SchemaError) -> HandlerError {
    match e {
        SchemaError::Validation(_) => {
            HandlerError::permanent(e).with_reason(DeadLetterReason::SchemaValidation)
        }
        SchemaError::Decode(_) | SchemaError::Encode(_) => HandlerError::undecodable(e),
        SchemaError::VersionNotFound { .. }
        | SchemaError::SubjectNotFound(_)
        | SchemaError::SchemaNotFound(_) => {
            HandlerError::permanent(e).with_reason(DeadLetterReason::UnknownType)
        }
        e if e.is_transient() => HandlerError::transient(e),
        e => HandlerError::permanent(e),
    }
}

impl Inner {
    pub(super) async fn dispatch(&self, incoming: Incoming) -> Result<(), HandlerError> {
        let message = &incoming.message;
        let ty = message.ty();
        let Some(route) = self.routes.get(ty) else {
            let known: Vec<_> = self.routes.keys().map(|t| format!("`{t}`")).collect();
            return Err(unknown_type(format!(
                "no handler for event type `{ty}` (this router handles {})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            )));
        };
        if let Some(ct) = message.datacontenttype()
            && !route.accepts(ct)
        {
            return Err(HandlerError::undecodable(SchemaError::Decode(format!(
                "events of type `{ty}` are read as `{}`, but the message's datacontenttype is `{ct}`",
                route.content_type()
            ))));
        }
        let Some(dataschema) = message.dataschema() else {
            return Err(HandlerError::undecodable(SchemaError::Decode(format!(
                "the message carries no dataschema, so the version of its `{ty}` event is unknown"
            ))));
        };
        let written = DataSchema::parse(dataschema).map_err(classify)?;
        let (subject, version) = (route.subject(), route.version());
        if written.subject != subject {
            return Err(unknown_type(format!(
                "the message's dataschema names subject `{}`, but `{ty}` events have their schemas under `{subject}`",
                written.subject
            )));
        }
        if written.version > version {
            self.check_forward(ty, subject, written.version, version)
                .await?;
        }
        let data = match self.wire_format {
            WireFormat::Plain => message.data().clone(),
            WireFormat::Confluent => {
                self.unframe(route.format(), message.data(), subject, written.version)
                    .await?
            }
        };
        route.dispatch(self, incoming, data, written.version).await
    }

    /// Takes the Confluent header off `data`, checking that it names the schema `dataschema`
    /// does.
    async fn unframe(
        &self,
        format: Option<SchemaFormat>,
        data: &Bytes,
        subject: &str,
        version: u32,
    ) -> Result<Bytes, HandlerError> {
        let (id, payload) = match format {
            Some(SchemaFormat::Protobuf) => {
                let frame = wire::decode_protobuf(data).map_err(classify)?;
                (frame.schema_id, frame.payload)
            }
            Some(_) => wire::decode(data).map_err(classify)?,
            None => {
                return Err(HandlerError::permanent(SchemaError::Config {
                    field: "wire_format".into(),
                    reason: "the Confluent wire format needs events with a schema".into(),
                }));
            }
        };
        let expected = self.schemas.id(subject, version).await.map_err(classify)?;
        if id != expected {
            return Err(HandlerError::undecodable(SchemaError::Decode(format!(
                "the data's Confluent header names schema id {id}, but version {version} of subject `{subject}` is schema id {expected}"
            ))));
        }
        Ok(data.slice_ref(payload))
    }

    /// Whether a handler of version `reader` may read version `writer` (newer), per the
    /// subject's compatibility mode.
    async fn check_forward(
        &self,
        ty: &str,
        subject: &str,
        writer: u32,
        reader: u32,
    ) -> Result<(), HandlerError> {
        let newer =
            format!("`{ty}` version {writer} is newer than the handler knows (version {reader})");
        let mode = match self.schemas.compatibility(subject).await {
            Ok(mode) => mode,
            Err(e) if e.is_transient() => return Err(HandlerError::transient(e)),
            Err(e) => {
                return Err(unknown_type(format!(
                    "{newer}, and the subject's compatibility mode is unknown: {e}"
                )));
            }
        };
        let promised = mode.checks_forward() && (mode.is_transitive() || writer == reader + 1);
        if promised {
            Ok(())
        } else {
            Err(unknown_type(format!(
                "{newer}, and subject `{subject}`'s compatibility mode {mode} does not promise that version {reader} readers can read version {writer}"
            )))
        }
    }
}
