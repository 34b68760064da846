//! Upcasting: reading an event written as an older version as the version a handler takes.
//!
//! An upcaster turns version `n` of an event type into version `n + 1`. Two kinds exist:
//!
//! - **typed**, `Fn(Vn) -> Vn+1`, between two Rust types that both implement [`EventType`];
//! - **JSON**, `Fn(serde_json::Value) -> serde_json::Value`, for versions whose Rust types are no
//!   longer kept. The value is the data in its JSON form (for Avro as apache-avro maps it; for
//!   Protobuf the canonical proto3 JSON mapping, where 64-bit integers are strings).
//!
//! Upcasters chain automatically: an event written as version 1 and read by a handler of
//! version 4 goes through the steps 1→2, 2→3 and 3→4. A step without an upcaster relies on the
//! schemas' compatibility instead: the data is read with the next version's schema (Avro schema
//! resolution, JSON ignoring unknown fields, Protobuf field numbers). A version reached by a typed
//! upcaster is passed on as a Rust value; between kinds, the value is written with that
//! version's schema and read back, so every step sees exactly its own version.
//!
//! ```
//! use busway_schema::codec::JsonCodec;
//! use busway_schema::upcast::Upcasters;
//! use busway_schema::{EventType, SchemaError};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct PlacedV1 { euros: f64 }
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct PlacedV2 { cents: i64 }
//!
//! impl EventType for PlacedV1 {
//!     const TYPE: &'static str = "shop.order.placed";
//!     const VERSION: u32 = 1;
//!     type Codec = JsonCodec<Self>;
//!     fn codec() -> Result<Self::Codec, SchemaError> { Ok(JsonCodec::new()) }
//! }
//! impl EventType for PlacedV2 {
//!     const TYPE: &'static str = "shop.order.placed";
//!     const VERSION: u32 = 2;
//!     type Codec = JsonCodec<Self>;
//!     fn codec() -> Result<Self::Codec, SchemaError> { Ok(JsonCodec::new()) }
//! }
//!
//! let mut upcasters = Upcasters::new();
//! upcasters.typed(|v1: PlacedV1| PlacedV2 { cents: (v1.euros * 100.0).round() as i64 })?;
//! // Version 3 dropped nothing but renamed a field; no Rust type for version 2's JSON is needed:
//! upcasters.json("shop.order.placed", 2, |mut v| {
//!     if let Some(cents) = v.as_object_mut().and_then(|o| o.remove("cents")) {
//!         v["amount_cents"] = cents;
//!     }
//!     v
//! })?;
//! assert!(upcasters.covers("shop.order.placed", 1, 3));
//! # Ok::<(), SchemaError>(())
//! ```

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde_json::Value;

use crate::codec::{Codec, CompiledSchema, SchemaCache, decode_plain_value, encode_plain_value};
use crate::error::SchemaError;
use crate::event::EventType;

type JsonStep = dyn Fn(Value) -> Value + Send + Sync;

/// One step `n -> n + 1`.
#[derive(Clone)]
enum Step {
    Typed(Arc<dyn ErasedStep>),
    Json(Arc<JsonStep>),
}

/// The upcasters of every event type, by type and the version they start from.
#[derive(Clone, Default)]
pub struct Upcasters {
    steps: HashMap<String, HashMap<u32, Step>>,
}

impl fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list: Vec<(String, u32, &str)> = self
            .steps
            .iter()
            .flat_map(|(ty, steps)| {
                steps.iter().map(move |(from, step)| {
                    let kind = match step {
                        Step::Typed(_) => "typed",
                        Step::Json(_) => "json",
                    };
                    (ty.clone(), *from, kind)
                })
            })
            .collect();
        list.sort();
        f.debug_struct("Upcasters").field("steps", &list).finish()
    }
}

/// Whether two strings are equal, at compile time.
const fn same_str(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

impl Upcasters {
    /// No upcasters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a typed upcaster from `A` to `B`.
    ///
    /// `A` and `B` must be versions `n` and `n + 1` of the same event type; anything else does
    /// not compile (the check runs when the program is built). Fails with
    /// [`SchemaError::Config`] when the step already has an upcaster, and with the codecs' errors
    /// when `A` or `B` cannot create theirs.
    pub fn typed<A, B, F>(&mut self, f: F) -> Result<&mut Self, SchemaError>
    where
        A: EventType,
        B: EventType,
        F: Fn(A) -> B + Send + Sync + 'static,
    {
        const {
            assert!(
                same_str(A::TYPE, B::TYPE),
                "an upcaster turns one version of an event type into the next: both must have the same TYPE"
            );
            assert!(
                B::VERSION == A::VERSION + 1,
                "an upcaster turns version n of an event into version n + 1"
            );
        }
        let step = TypedStep::<A, B, F> {
            f,
            input: A::codec()?,
            output: B::codec()?,
            _types: PhantomData,
        };
        self.add(A::TYPE, A::VERSION, Step::Typed(Arc::new(step)))
    }

    /// Adds a JSON upcaster from version `from_version` of `event_type` to the next version.
    ///
    /// Fails with [`SchemaError::Config`] when `from_version` is 0 or the step already has an
    /// upcaster.
    pub fn json<F>(
        &mut self,
        event_type: &str,
        from_version: u32,
        f: F,
    ) -> Result<&mut Self, SchemaError>
    where
        F: Fn(Value) -> Value + Send + Sync + 'static,
    {
        if from_version == 0 {
            return Err(SchemaError::Config {
                field: "upcasters".into(),
                reason: format!("`{event_type}`: versions start at 1"),
            });
        }
        self.add(event_type, from_version, Step::Json(Arc::new(f)))
    }

    fn add(&mut self, ty: &str, from: u32, step: Step) -> Result<&mut Self, SchemaError> {
        let steps = self.steps.entry(ty.to_owned()).or_default();
        if steps.contains_key(&from) {
            return Err(SchemaError::Config {
                field: "upcasters".into(),
                reason: format!(
                    "two upcasters from version {from} of `{ty}` to version {}",
                    from.saturating_add(1)
                ),
            });
        }
        steps.insert(from, step);
        Ok(self)
    }

    /// Whether any step between versions `from` and `to` of `event_type` has an upcaster.
    pub fn covers(&self, event_type: &str, from: u32, to: u32) -> bool {
        self.steps
            .get(event_type)
            .is_some_and(|steps| (from..to).any(|n| steps.contains_key(&n)))
    }

    /// Decodes `data`, written as version `written` of `E`'s type, into `E`: directly when
    /// `written` is `E::VERSION`, with the writer's schema when it is newer (schema resolution;
    /// whether that is allowed is the caller's decision), and through the upcasters when it is
    /// older. Writers' schemas come from `schemas`.
    pub async fn decode<E: EventType>(
        &self,
        codec: &E::Codec,
        data: &[u8],
        written: u32,
        schemas: &SchemaCache,
    ) -> Result<E, SchemaError> {
        let steps = self.steps.get(E::TYPE);
        let chain = Chain::<E> {
            codec,
            schemas,
            steps,
            _event: PhantomData,
        };
        let target = E::VERSION;
        if written == target {
            return codec.decode(data, None);
        }
        if written > target || !self.covers(E::TYPE, written, target) {
            let writer = chain.schema(written).await?;
            return codec.decode(data, writer.get());
        }
        let context = |e: SchemaError| {
            in_context(
                e,
                &format!("upcasting `{}` from version {written} to {target}", E::TYPE),
            )
        };
        let mut stage = Stage::Bytes {
            data: Cow::Borrowed(data),
            written_as: written,
        };
        for n in written..target {
            let step = steps.and_then(|s| s.get(&n));
            stage = chain.step(stage, n, step).await.map_err(context)?;
        }
        chain.finish(stage).await.map_err(context)
    }
}

/// Where an event is between two steps of the chain, at the version the loop has reached.
enum Stage<'a> {
    /// Encoded data, written with the schema of version `written_as` (which may be older than
    /// the version reached: a step without upcaster leaves the data as it is).
    Bytes {
        data: Cow<'a, [u8]>,
        written_as: u32,
    },
    /// A Rust value made by the typed step `by`.
    Typed {
        value: Box<dyn Any + Send>,
        by: Arc<dyn ErasedStep>,
    },
    /// A JSON value made by a JSON step.
    Json(Value),
}

/// A schema at some version: none (schema-less JSON), the codec's own, or fetched.
enum At<'a> {
    Plain,
    Own(&'a CompiledSchema),
    Fetched(Arc<CompiledSchema>),
}

impl At<'_> {
    fn get(&self) -> Option<&CompiledSchema> {
        match self {
            Self::Plain => None,
            Self::Own(s) => Some(s),
            Self::Fetched(s) => Some(s),
        }
    }
}

struct Chain<'a, E: EventType> {
    codec: &'a E::Codec,
    schemas: &'a SchemaCache,
    /// The upcasters of `E`'s type, by the version they start from.
    steps: Option<&'a HashMap<u32, Step>>,
    _event: PhantomData<fn() -> E>,
}

impl<'a, E: EventType> Chain<'a, E> {
    /// The schema of version `version` of `E`'s subject: the handler's own, a typed upcaster's
    /// (whose Rust types carry versions `n` and `n + 1`), or else the registry's. Local schemas
    /// come first, so a consumer does not depend on every intermediate version having been
    /// registered by some producer.
    async fn schema(&self, version: u32) -> Result<At<'a>, SchemaError> {
        let Some(own) = self.codec.schema() else {
            return Ok(At::Plain);
        };
        if version == E::VERSION {
            return Ok(At::Own(own));
        }
        let local = self.steps.and_then(|steps| {
            let from = match steps.get(&version) {
                Some(Step::Typed(step)) => step.input_schema(),
                _ => None,
            };
            from.or_else(|| match steps.get(&version.checked_sub(1)?) {
                Some(Step::Typed(step)) => step.output_schema(),
                _ => None,
            })
        });
        if let Some(local) = local {
            return Ok(At::Own(local));
        }
        Ok(At::Fetched(
            self.schemas.version(E::SUBJECT, version, Some(own)).await?,
        ))
    }

    /// The stage as data, when it is at version `at`; returns the data and the version of the
    /// schema it is written with.
    async fn bytes<'s>(
        &self,
        stage: Stage<'s>,
        at: u32,
    ) -> Result<(Cow<'s, [u8]>, u32), SchemaError> {
        match stage {
            Stage::Bytes { data, written_as } => Ok((data, written_as)),
            Stage::Typed { value, by } => Ok((Cow::Owned(by.encode_output(value.as_ref())?), at)),
            Stage::Json(value) => {
                let schema = self.schema(at).await?;
                let data = match schema.get() {
                    Some(schema) => schema.encode_value(&value)?,
                    None => encode_plain_value(&value)?,
                };
                Ok((Cow::Owned(data), at))
            }
        }
    }

    /// Applies the step `n -> n + 1`.
    async fn step<'s>(
        &self,
        stage: Stage<'s>,
        n: u32,
        step: Option<&Step>,
    ) -> Result<Stage<'s>, SchemaError> {
        match step {
            // No upcaster: the next version reads this one's data as written.
            None => {
                let (data, written_as) = self.bytes(stage, n).await?;
                Ok(Stage::Bytes { data, written_as })
            }
            Some(Step::Typed(step)) => {
                let input = match stage {
                    Stage::Typed { value, by } if by.output_type() == step.input_type() => value,
                    other => {
                        let (data, written_as) = self.bytes(other, n).await?;
                        // The step's input type is version n: its codec reads older data with
                        // the writer's schema.
                        let writer = if written_as == n {
                            At::Plain
                        } else {
                            self.schema(written_as).await?
                        };
                        step.decode_input(&data, writer.get())?
                    }
                };
                Ok(Stage::Typed {
                    value: step.apply(input)?,
                    by: step.clone(),
                })
            }
            Some(Step::Json(f)) => {
                let value = match stage {
                    Stage::Json(value) => value,
                    other => {
                        let (data, written_as) = self.bytes(other, n).await?;
                        let writer = self.schema(written_as).await?;
                        // Resolved into version n's shape, which is what the step expects.
                        let reader = if written_as == n {
                            At::Plain
                        } else {
                            self.schema(n).await?
                        };
                        match writer.get() {
                            Some(writer) => writer.decode_value(&data, reader.get())?,
                            None => decode_plain_value(&data)?,
                        }
                    }
                };
                Ok(Stage::Json(f(value)))
            }
        }
    }

    /// The stage, at `E::VERSION`, as an `E`.
    async fn finish(&self, stage: Stage<'_>) -> Result<E, SchemaError> {
        let stage = match stage {
            Stage::Typed { value, by } => match value.downcast::<E>() {
                Ok(event) => return Ok(*event),
                Err(value) => Stage::Typed { value, by },
            },
            other => other,
        };
        let (data, written_as) = self.bytes(stage, E::VERSION).await?;
        let writer = if written_as == E::VERSION {
            At::Plain
        } else {
            self.schema(written_as).await?
        };
        self.codec.decode(&data, writer.get())
    }
}

/// Prefixes what a validation or decoding error says with where it happened.
fn in_context(e: SchemaError, context: &str) -> SchemaError {
    match e {
        SchemaError::Validation(m) => SchemaError::Validation(format!("{context}: {m}")),
        SchemaError::Decode(m) => SchemaError::Decode(format!("{context}: {m}")),
        SchemaError::Encode(m) => SchemaError::Encode(format!("{context}: {m}")),
        other => other,
    }
}

/// A typed step with its types erased, so steps of every type fit one map.
trait ErasedStep: Send + Sync {
    fn input_type(&self) -> TypeId;
    fn output_type(&self) -> TypeId;
    fn input_schema(&self) -> Option<&CompiledSchema>;
    fn output_schema(&self) -> Option<&CompiledSchema>;
    fn decode_input(
        &self,
        data: &[u8],
        writer: Option<&CompiledSchema>,
    ) -> Result<Box<dyn Any + Send>, SchemaError>;
    fn apply(&self, input: Box<dyn Any + Send>) -> Result<Box<dyn Any + Send>, SchemaError>;
    fn encode_output(&self, output: &(dyn Any + Send)) -> Result<Vec<u8>, SchemaError>;
}

struct TypedStep<A: EventType, B: EventType, F> {
    f: F,
    input: A::Codec,
    output: B::Codec,
    _types: PhantomData<fn(A) -> B>,
}

impl<A, B, F> ErasedStep for TypedStep<A, B, F>
where
    A: EventType,
    B: EventType,
    F: Fn(A) -> B + Send + Sync + 'static,
{
    fn input_type(&self) -> TypeId {
        TypeId::of::<A>()
    }

    fn output_type(&self) -> TypeId {
        TypeId::of::<B>()
    }

    fn input_schema(&self) -> Option<&CompiledSchema> {
        self.input.schema()
    }

    fn output_schema(&self) -> Option<&CompiledSchema> {
        self.output.schema()
    }

    fn decode_input(
        &self,
        data: &[u8],
        writer: Option<&CompiledSchema>,
    ) -> Result<Box<dyn Any + Send>, SchemaError> {
        Ok(Box::new(self.input.decode(data, writer)?))
    }

    fn apply(&self, input: Box<dyn Any + Send>) -> Result<Box<dyn Any + Send>, SchemaError> {
        // The chain only hands a step what its own codec or the previous step of the same
        // output type produced; a mismatch would be a bug here, reported rather than panicking.
        let input = input.downcast::<A>().map_err(|_| {
            SchemaError::Decode(format!(
                "upcaster from {} received a value of another type",
                std::any::type_name::<A>()
            ))
        })?;
        Ok(Box::new((self.f)(*input)))
    }

    fn encode_output(&self, output: &(dyn Any + Send)) -> Result<Vec<u8>, SchemaError> {
        let output = output.downcast_ref::<B>().ok_or_else(|| {
            SchemaError::Encode(format!(
                "upcaster to {} holds a value of another type",
                std::any::type_name::<B>()
            ))
        })?;
        self.output.encode(output)
    }
}
