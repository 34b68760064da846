//! Plain JSON through serde, without a schema.

use std::fmt;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Codec, CompiledSchema, JSON_CONTENT_TYPE};
use crate::error::SchemaError;

/// JSON through serde, with no schema: nothing is registered and nothing validated beyond what
/// serde checks while decoding.
///
/// Decoding ignores fields the Rust type does not have (unless it says
/// `#[serde(deny_unknown_fields)]`), so a consumer on an older version reads newer events.
///
/// ```
/// use busway_schema::codec::{Codec, JsonCodec};
///
/// let codec = JsonCodec::<Vec<u32>>::new();
/// assert_eq!(codec.content_type(), "application/json");
/// assert_eq!(codec.decode(&codec.encode(&vec![1, 2])?, None)?, vec![1, 2]);
/// # Ok::<(), busway_schema::SchemaError>(())
/// ```
pub struct JsonCodec<T> {
    _type: PhantomData<fn() -> T>,
}

impl<T> JsonCodec<T> {
    /// A JSON codec for `T`.
    pub fn new() -> Self {
        Self { _type: PhantomData }
    }
}

impl<T> Default for JsonCodec<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for JsonCodec<T> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for JsonCodec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JsonCodec")
    }
}

impl<T> Codec<T> for JsonCodec<T>
where
    T: Serialize + DeserializeOwned + 'static,
{
    fn content_type(&self) -> &str {
        JSON_CONTENT_TYPE
    }

    fn schema(&self) -> Option<&CompiledSchema> {
        None
    }

    fn encode(&self, value: &T) -> Result<Vec<u8>, SchemaError> {
        serde_json::to_vec(value).map_err(|e| SchemaError::Encode(e.to_string()))
    }

    fn decode(&self, data: &[u8], _writer: Option<&CompiledSchema>) -> Result<T, SchemaError> {
        serde_json::from_slice(data)
            .map_err(|e| SchemaError::Decode(format!("not the expected JSON: {e}")))
    }
}

/// Parses JSON data into a value.
pub(super) fn parse(data: &[u8]) -> Result<Value, SchemaError> {
    serde_json::from_slice(data).map_err(|e| SchemaError::Decode(format!("not JSON: {e}")))
}

/// Writes a value as JSON.
pub(super) fn to_vec(value: &Value) -> Result<Vec<u8>, SchemaError> {
    serde_json::to_vec(value).map_err(|e| SchemaError::Encode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct V1 {
        id: u64,
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct V2 {
        id: u64,
        note: String,
    }

    #[test]
    fn round_trip() {
        let codec = JsonCodec::<V2>::new();
        let v = V2 {
            id: 7,
            note: "hi".into(),
        };
        let data = codec.encode(&v).unwrap();
        assert_eq!(data, br#"{"id":7,"note":"hi"}"#);
        assert_eq!(codec.decode(&data, None).unwrap(), v);
        assert!(codec.schema().is_none());
    }

    #[test]
    fn older_reader_ignores_newer_fields_and_garbage_is_a_decode_error() {
        let newer = JsonCodec::<V2>::new()
            .encode(&V2 {
                id: 1,
                note: "x".into(),
            })
            .unwrap();
        assert_eq!(
            JsonCodec::<V1>::new().decode(&newer, None).unwrap(),
            V1 { id: 1 }
        );
        let err = JsonCodec::<V2>::new()
            .decode(br#"{"id":1}"#, None)
            .unwrap_err();
        assert!(
            matches!(&err, SchemaError::Decode(m) if m.contains("note")),
            "{err}"
        );
        let err = JsonCodec::<V1>::new().decode(b"\xff", None).unwrap_err();
        assert!(matches!(err, SchemaError::Decode(_)), "{err}");
    }
}
