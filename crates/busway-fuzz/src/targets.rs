//! The targets of busway-core and busway-schema's decoders.

use arbitrary::{Arbitrary, Unstructured};
use busway_core::wire;
use bytes::Bytes;

/// A binary-mode broker message: headers (some CloudEvents attributes under the prefix, some
/// not), a native content type and a body.
#[derive(Arbitrary, Debug)]
struct BinaryInput {
    headers: Vec<(String, String)>,
    /// Attributes written under the `ce_` prefix, names as the generator picks them.
    attributes: Vec<(Attribute, String)>,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// Attribute names, weighted towards the ones the decoder treats specially.
#[derive(Arbitrary, Debug)]
enum Attribute {
    Id,
    Source,
    Type,
    SpecVersion,
    Time,
    Subject,
    DataSchema,
    DataContentType,
    Other(String),
}

impl Attribute {
    fn name(&self) -> &str {
        match self {
            Self::Id => "id",
            Self::Source => "source",
            Self::Type => "type",
            Self::SpecVersion => "specversion",
            Self::Time => "time",
            Self::Subject => "subject",
            Self::DataSchema => "dataschema",
            Self::DataContentType => "datacontenttype",
            Self::Other(name) => name,
        }
    }
}

/// Binary mode: whatever the headers say, decoding never panics; what decodes is a valid
/// message, and its own binary attributes decode back to the same message.
pub fn cloudevents_binary(data: &[u8]) {
    let Ok(input) = BinaryInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let mut headers: Vec<(String, String)> = input.headers;
    headers.extend(
        input
            .attributes
            .iter()
            .map(|(a, v)| (format!("ce_{}", a.name()), v.clone())),
    );
    let decoded = wire::from_binary(
        headers.iter().map(|(k, v)| (k.as_str(), v.clone())),
        &["ce_"],
        input.content_type,
        Bytes::from(input.body),
    );
    let Ok(message) = decoded else {
        return;
    };
    if let Err(e) = message.validate() {
        panic!("from_binary returned an invalid message: {e}: {message:?}");
    }
    let again: Vec<(String, String)> = wire::binary_attributes(&message)
        .into_iter()
        .map(|(k, v)| (format!("ce_{k}"), v))
        .collect();
    let round_trip = wire::from_binary(
        again.iter().map(|(k, v)| (k.as_str(), v.clone())),
        &["ce_"],
        message.datacontenttype().map(str::to_owned),
        message.data().clone(),
    );
    match round_trip {
        Ok(back) => assert_eq!(back, message, "binary mode does not round-trip"),
        Err(e) => panic!("a decoded message does not decode again: {e}: {message:?}"),
    }
}

/// Structured mode: decoding never panics; what decodes is valid, and encoding it then decoding
/// settles after one step (JSON data may be normalised once, never changed again).
pub fn cloudevents_structured(data: &[u8]) {
    let Ok(message) = wire::from_structured(data) else {
        return;
    };
    if let Err(e) = message.validate() {
        panic!("from_structured returned an invalid message: {e}: {message:?}");
    }
    let once = encode_decode(&message);
    let twice = encode_decode(&once);
    assert_eq!(once, twice, "structured mode does not settle");
}

fn encode_decode(message: &busway_core::Message) -> busway_core::Message {
    let body = match wire::to_structured(message) {
        Ok(body) => body,
        Err(e) => panic!("a decoded message does not encode: {e}: {message:?}"),
    };
    match wire::from_structured(&body) {
        Ok(back) => back,
        Err(e) => panic!(
            "an encoded message does not decode: {e}: {}",
            String::from_utf8_lossy(&body)
        ),
    }
}

/// The Confluent wire format (magic byte, schema id, Protobuf message indexes): decoding never
/// panics, and a decoded frame encodes back to the same bytes.
pub fn confluent_wire(data: &[u8]) {
    use busway_schema::registry::wire as confluent;
    if let Ok((id, payload)) = confluent::decode(data) {
        assert_eq!(
            confluent::encode(id, payload),
            data,
            "framing does not round-trip"
        );
        assert_eq!(confluent::schema_id(data).ok(), Some(id));
    }
    let _ = confluent::decode_protobuf(data);
}
