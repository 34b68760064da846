//! What [`Event<E>`](super::Event) needs to decode a message, shared by every delivery of a
//! router: the writers' schemas (from the registry, cached), the upcasters, the wire format and
//! the compiled codecs. The decoding rules themselves live here too.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use busway_core::Message;
use bytes::Bytes;

use super::extract::EventRejection;
use crate::codec::{Codec, SchemaCache, WireFormat};
use crate::error::SchemaError;
use crate::event::{DataSchema, EventType};
use crate::registry::wire;
use crate::schema::SchemaFormat;
use crate::upcast::Upcasters;

/// Codecs by the Rust type of the event they read, type-erased so that one map holds them all.
pub(super) type Codecs = HashMap<TypeId, Arc<dyn Any + Send + Sync>>;

/// The decoding context an [`EventRouter`](super::EventRouter) attaches to every delivery
/// (as `Arc<DecodeContext>` in `Incoming::extensions`), where `Event<E>` finds it.
///
/// Private on purpose: only a router makes one, so a handler stack cannot attach a context that
/// disagrees with the router's registry or wire format.
pub(crate) struct DecodeContext {
    schemas: SchemaCache,
    upcasters: Upcasters,
    wire_format: WireFormat,
    /// The codecs of the routed events are compiled when the router is built (so a bad schema
    /// fails the start, not the first message); any other `Event<E>` a handler extracts is
    /// compiled on first use and kept.
    codecs: Mutex<Codecs>,
}

impl fmt::Debug for DecodeContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecodeContext")
            .field("schemas", &self.schemas)
            .field("upcasters", &self.upcasters)
            .field("wire_format", &self.wire_format)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Codecs are inserted whole, so a map whose holder panicked is still consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl DecodeContext {
    pub(super) fn new(
        schemas: SchemaCache,
        upcasters: Upcasters,
        wire_format: WireFormat,
        codecs: Codecs,
    ) -> Self {
        Self {
            schemas,
            upcasters,
            wire_format,
            codecs: Mutex::new(codecs),
        }
    }

    /// `E`'s codec, compiled once.
    fn codec<E: EventType>(&self) -> Result<Arc<E::Codec>, SchemaError> {
        let key = TypeId::of::<E>();
        let cached = lock(&self.codecs).get(&key).cloned();
        // Entries are keyed by `E`'s TypeId and always hold an `E::Codec`: the downcast only
        // fails on a bug, and then compiling afresh is still correct.
        if let Some(codec) = cached.and_then(|c| c.downcast::<E::Codec>().ok()) {
            return Ok(codec);
        }
        let codec = Arc::new(E::codec()?);
        lock(&self.codecs).insert(key, codec.clone());
        Ok(codec)
    }

    /// Decodes `message` as `E`: the type, content type, `dataschema` and subject checked, a
    /// newer version allowed only where the subject's mode promises it, Confluent framing taken
    /// off, then decoded, validated and upcast.
    pub(super) async fn decode<E: EventType>(
        &self,
        message: &Message,
    ) -> Result<E, EventRejection> {
        let ty = message.ty();
        if ty != E::TYPE {
            // Only outside the router's own dispatch: a route or fallback extracting another
            // type's event.
            return Err(EventRejection::Unknown(format!(
                "the message's type is `{ty}`, but `{}` reads `{}` events",
                std::any::type_name::<E>(),
                E::TYPE
            )));
        }
        let codec = self.codec::<E>()?;
        if let Some(ct) = message.datacontenttype()
            && !codec.accepts(ct)
        {
            return Err(SchemaError::Decode(format!(
                "events of type `{ty}` are read as `{}`, but the message's datacontenttype is `{ct}`",
                codec.content_type()
            ))
            .into());
        }
        let Some(dataschema) = message.dataschema() else {
            return Err(SchemaError::Decode(format!(
                "the message carries no dataschema, so the version of its `{ty}` event is unknown"
            ))
            .into());
        };
        let written = DataSchema::parse(dataschema)?;
        let (subject, version) = (E::SUBJECT, E::VERSION);
        if written.subject != subject {
            return Err(EventRejection::Unknown(format!(
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
                let format = codec.schema().map(|s| s.format());
                self.unframe(format, message.data(), subject, written.version)
                    .await?
            }
        };
        Ok(self
            .upcasters
            .decode::<E>(&codec, &data, written.version, &self.schemas)
            .await?)
    }

    /// Takes the Confluent header off `data`, checking that it names the schema `dataschema`
    /// does.
    async fn unframe(
        &self,
        format: Option<SchemaFormat>,
        data: &Bytes,
        subject: &str,
        version: u32,
    ) -> Result<Bytes, SchemaError> {
        let (id, payload) = match format {
            Some(SchemaFormat::Protobuf) => {
                let frame = wire::decode_protobuf(data)?;
                (frame.schema_id, frame.payload)
            }
            Some(_) => wire::decode(data)?,
            None => {
                return Err(SchemaError::Config {
                    field: "wire_format".into(),
                    reason: "the Confluent wire format needs events with a schema".into(),
                });
            }
        };
        let expected = self.schemas.id(subject, version).await?;
        if id != expected {
            return Err(SchemaError::Decode(format!(
                "the data's Confluent header names schema id {id}, but version {version} of subject `{subject}` is schema id {expected}"
            )));
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
    ) -> Result<(), EventRejection> {
        let newer =
            format!("`{ty}` version {writer} is newer than the handler knows (version {reader})");
        let mode = match self.schemas.compatibility(subject).await {
            Ok(mode) => mode,
            // Unreachable registry: the answer may come on a retry.
            Err(e) if e.is_transient() => return Err(e.into()),
            Err(e) => {
                return Err(EventRejection::Unknown(format!(
                    "{newer}, and the subject's compatibility mode is unknown: {e}"
                )));
            }
        };
        let promised = mode.checks_forward() && (mode.is_transitive() || writer == reader + 1);
        if promised {
            Ok(())
        } else {
            Err(EventRejection::Unknown(format!(
                "{newer}, and subject `{subject}`'s compatibility mode {mode} does not promise that version {reader} readers can read version {writer}"
            )))
        }
    }
}
