//! Extractors: the arguments a handler function can take.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use super::{HandlerError, Incoming};
use crate::dead_letter::DeadLetterReason;
use crate::delivery::DeliveryInfo;
use crate::message::Message;

/// A handler argument, taken from the delivery and the consumer's state `S`.
///
/// Extraction may fail with a typed rejection; it becomes the attempt's [`HandlerError`], so a
/// rejection that no retry can fix (undecodable JSON) should be permanent with a clear reason.
/// Extraction is async so that extractors may look things up (busway-schema's `Event<T>` reads
/// writers' schemas from a registry).
pub trait FromIncoming<S>: Sized {
    /// Why extraction failed.
    type Rejection: Into<HandlerError>;
    /// Extracts the argument.
    fn from_incoming(
        incoming: &Incoming,
        state: &S,
    ) -> impl Future<Output = Result<Self, Self::Rejection>> + Send;
}

/// The whole delivery as the handler stack sees it.
impl<S: Sync> FromIncoming<S> for Incoming {
    type Rejection = Infallible;
    async fn from_incoming(incoming: &Incoming, _: &S) -> Result<Self, Infallible> {
        Ok(incoming.clone())
    }
}

/// The message.
impl<S: Sync> FromIncoming<S> for Message {
    type Rejection = Infallible;
    async fn from_incoming(incoming: &Incoming, _: &S) -> Result<Self, Infallible> {
        Ok(incoming.message.clone())
    }
}

/// Topic, group, attempt number and first failure.
impl<S: Sync> FromIncoming<S> for DeliveryInfo {
    type Rejection = Infallible;
    async fn from_incoming(incoming: &Incoming, _: &S) -> Result<Self, Infallible> {
        Ok((*incoming.info).clone())
    }
}

/// Topic, group, attempt number and first failure, shared rather than copied.
impl<S: Sync> FromIncoming<S> for Arc<DeliveryInfo> {
    type Rejection = Infallible;
    async fn from_incoming(incoming: &Incoming, _: &S) -> Result<Self, Infallible> {
        Ok(incoming.info.clone())
    }
}

/// The message's data, as sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Data(pub Bytes);

impl<S: Sync> FromIncoming<S> for Data {
    type Rejection = Infallible;
    async fn from_incoming(incoming: &Incoming, _: &S) -> Result<Self, Infallible> {
        Ok(Data(incoming.message.data().clone()))
    }
}

/// The message's CloudEvents attributes, extensions included, without the data.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Attributes {
    /// `id`.
    pub id: String,
    /// `source`.
    pub source: String,
    /// `type`.
    pub ty: String,
    /// `subject`.
    pub subject: Option<String>,
    /// `time`.
    pub time: Option<DateTime<Utc>>,
    /// `datacontenttype`.
    pub datacontenttype: Option<String>,
    /// `dataschema`.
    pub dataschema: Option<String>,
    /// Extension attributes: `partitionkey`, `correlationid`, `traceparent`, your own.
    pub extensions: BTreeMap<String, String>,
}

impl Attributes {
    /// An extension attribute's value.
    pub fn extension(&self, name: &str) -> Option<&str> {
        self.extensions.get(name).map(String::as_str)
    }
}

impl<S: Sync> FromIncoming<S> for Attributes {
    type Rejection = Infallible;
    async fn from_incoming(incoming: &Incoming, _: &S) -> Result<Self, Infallible> {
        let m = &incoming.message;
        Ok(Attributes {
            id: m.id().to_owned(),
            source: m.source().to_owned(),
            ty: m.ty().to_owned(),
            subject: m.subject().map(str::to_owned),
            time: m.time(),
            datacontenttype: m.datacontenttype().map(str::to_owned),
            dataschema: m.dataschema().map(str::to_owned),
            extensions: m.extensions().clone(),
        })
    }
}

/// The message's data decoded from JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Json<T>(pub T);

/// The data is not the JSON the handler expects: permanent, dead-lettered as `undecodable`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct JsonRejection(#[source] crate::error::Error);

impl From<JsonRejection> for HandlerError {
    fn from(rejection: JsonRejection) -> Self {
        HandlerError::undecodable(rejection)
    }
}

impl<T: DeserializeOwned + Send, S: Sync> FromIncoming<S> for Json<T> {
    type Rejection = JsonRejection;
    async fn from_incoming(incoming: &Incoming, _: &S) -> Result<Self, JsonRejection> {
        incoming
            .message
            .decode_json()
            .map(Json)
            .map_err(JsonRejection)
    }
}

/// Values derivable from the consumer's state: the state itself, or a part of it.
///
/// `State<T>` extracts any `T: FromRef<S>`; every `Clone` type is `FromRef` of itself.
/// Implement it for the parts of an application state that handlers take separately:
///
/// ```
/// use busway_core::FromRef;
/// # #[derive(Clone)] struct Db;
/// # #[derive(Clone)] struct Mailer;
/// #[derive(Clone)]
/// struct App { db: Db, mailer: Mailer }
///
/// impl FromRef<App> for Db {
///     fn from_ref(app: &App) -> Db { app.db.clone() }
/// }
/// ```
pub trait FromRef<S> {
    /// Derives the value from the state.
    fn from_ref(state: &S) -> Self;
}

impl<T: Clone> FromRef<T> for T {
    fn from_ref(state: &T) -> T {
        state.clone()
    }
}

/// The consumer's state (set with [`ConsumerBuilder::state`](crate::ConsumerBuilder::state) or
/// [`Router::with_state`](super::Router::with_state)), or a part of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct State<T>(pub T);

impl<T: FromRef<S> + Send, S: Sync> FromIncoming<S> for State<T> {
    type Rejection = Infallible;
    async fn from_incoming(_: &Incoming, state: &S) -> Result<Self, Infallible> {
        Ok(State(T::from_ref(state)))
    }
}

/// A value a layer attached to the delivery ([`Incoming::extensions`]).
///
/// Missing means the handler stack was put together wrong: the delivery is dead-lettered with
/// reason `missing_extension` (and can be redriven once the stack is fixed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extension<T>(pub T);

impl<T: Clone + Send + Sync + 'static, S: Sync> FromIncoming<S> for Extension<T> {
    type Rejection = HandlerError;
    async fn from_incoming(incoming: &Incoming, _: &S) -> Result<Self, HandlerError> {
        incoming
            .extensions
            .get::<T>()
            .cloned()
            .map(Extension)
            .ok_or_else(|| {
                HandlerError::permanent(format!(
                    "no {} was attached to the delivery; add the layer that provides it",
                    std::any::type_name::<T>()
                ))
                .with_reason(DeadLetterReason::Other("missing_extension".into()))
            })
    }
}

/// Extracts an optional value: `None` where extraction fails.
impl<T: FromIncoming<S> + Send, S: Sync> FromIncoming<S> for Option<T> {
    type Rejection = Infallible;
    async fn from_incoming(incoming: &Incoming, state: &S) -> Result<Self, Infallible> {
        Ok(T::from_incoming(incoming, state).await.ok())
    }
}
