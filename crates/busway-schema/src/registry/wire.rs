//! The Confluent wire format: how Kafka messages carry the id of the schema they were written with.
//!
//! ```text
//! byte 0       magic byte, always 0
//! bytes 1..5   schema id, 4-byte big-endian
//! then         Protobuf only: the message indexes (see below)
//! then         the payload, encoded with the schema
//! ```
//!
//! A `.proto` file can define several messages, so Protobuf payloads also say which one they hold:
//! the path of indexes from the file's top-level messages down to nested ones, written as a
//! zigzag varint count followed by each index as a zigzag varint. The common case, the file's
//! first message, `[0]`, is written as a single `0` byte (count 0 meaning "just `[0]`").
//!
//! Every function here works on bytes only; which schema an id names is a registry's business.
//!
//! ```
//! use busway_schema::registry::wire;
//!
//! let framed = wire::encode(42, b"avro bytes");
//! assert_eq!(framed[..5], [0, 0, 0, 0, 42]);
//! let (id, payload) = wire::decode(&framed)?;
//! assert_eq!((id, payload), (42, &b"avro bytes"[..]));
//!
//! let framed = wire::encode_protobuf(7, &[0], b"proto bytes")?;
//! assert_eq!(framed[..6], [0, 0, 0, 0, 7, 0]);
//! let decoded = wire::decode_protobuf(&framed)?;
//! assert_eq!((decoded.schema_id, decoded.message_indexes, decoded.payload), (7, vec![0], &b"proto bytes"[..]));
//! # Ok::<(), busway_schema::SchemaError>(())
//! ```

use crate::error::SchemaError;

/// The first byte of every framed message.
pub const MAGIC_BYTE: u8 = 0;

/// Length of the magic byte and the schema id.
pub const HEADER_LEN: usize = 5;

/// A Protobuf message taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtobufFrame<'a> {
    /// The id of the schema (the `.proto` file) in the registry.
    pub schema_id: u32,
    /// The path to the message type within the file; `[0]` is the first top-level message.
    pub message_indexes: Vec<u32>,
    /// The Protobuf-encoded message.
    pub payload: &'a [u8],
}

/// Frames `payload` (Avro or JSON) with `schema_id`.
pub fn encode(schema_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    write_header(&mut out, schema_id);
    out.extend_from_slice(payload);
    out
}

/// Appends the magic byte and `schema_id` to `out`, for callers that encode the payload in place
/// after it.
pub fn write_header(out: &mut Vec<u8>, schema_id: u32) {
    out.push(MAGIC_BYTE);
    out.extend_from_slice(&schema_id.to_be_bytes());
}

/// Frames a Protobuf `payload` with `schema_id` and the message's `message_indexes` (an empty
/// list means the first message, like `[0]`).
///
/// Fails with [`SchemaError::Encode`] when an index does not fit the format's 32-bit signed
/// integers.
pub fn encode_protobuf(
    schema_id: u32,
    message_indexes: &[u32],
    payload: &[u8],
) -> Result<Vec<u8>, SchemaError> {
    let mut out = Vec::with_capacity(HEADER_LEN + 1 + payload.len());
    write_header(&mut out, schema_id);
    write_message_indexes(&mut out, message_indexes)?;
    out.extend_from_slice(payload);
    Ok(out)
}

/// Appends the message-index list to `out`.
pub fn write_message_indexes(
    out: &mut Vec<u8>,
    message_indexes: &[u32],
) -> Result<(), SchemaError> {
    if message_indexes.is_empty() || message_indexes == [0] {
        // The format's shortcut for the first message.
        out.push(0);
        return Ok(());
    }
    let signed = |n: usize| {
        i32::try_from(n).map_err(|_| {
            SchemaError::Encode(format!(
                "message index {n} does not fit the wire format's 32-bit signed integers"
            ))
        })
    };
    write_zigzag(out, signed(message_indexes.len())?);
    for index in message_indexes {
        write_zigzag(out, signed(*index as usize)?);
    }
    Ok(())
}

/// Splits a framed Avro or JSON message into its schema id and payload.
///
/// Fails with [`SchemaError::Decode`] when the input is shorter than the header or does not start
/// with the magic byte (data written without a registry, or by another framing).
pub fn decode(bytes: &[u8]) -> Result<(u32, &[u8]), SchemaError> {
    let schema_id = schema_id(bytes)?;
    Ok((schema_id, &bytes[HEADER_LEN..]))
}

/// The schema id of a framed message, without looking further.
pub fn schema_id(bytes: &[u8]) -> Result<u32, SchemaError> {
    let Some((&magic, rest)) = bytes.split_first() else {
        return Err(SchemaError::Decode(
            "empty message: expected the magic byte 0 and a schema id".into(),
        ));
    };
    if magic != MAGIC_BYTE {
        return Err(SchemaError::Decode(format!(
            "unknown magic byte {magic} (expected {MAGIC_BYTE}): the message was not written with \
             a schema registry's wire format"
        )));
    }
    match rest.first_chunk::<4>() {
        Some(id) => Ok(u32::from_be_bytes(*id)),
        None => Err(SchemaError::Decode(format!(
            "message of {} bytes is shorter than the {HEADER_LEN}-byte wire-format header",
            bytes.len()
        ))),
    }
}

/// Splits a framed Protobuf message into its schema id, message indexes and payload.
///
/// Fails with [`SchemaError::Decode`] on a short input, a wrong magic byte, or a malformed index
/// list (truncated, negative, or longer than the input could hold).
pub fn decode_protobuf(bytes: &[u8]) -> Result<ProtobufFrame<'_>, SchemaError> {
    let (schema_id, rest) = decode(bytes)?;
    let mut cursor = rest;
    let count = read_index(&mut cursor, "message index count")?;
    let message_indexes = if count == 0 {
        vec![0]
    } else {
        // Each index takes at least one byte: a count beyond what is left is corrupt, and
        // checking it first keeps a hostile count from reserving huge amounts of memory.
        if count as usize > cursor.len() {
            return Err(SchemaError::Decode(format!(
                "message index count {count} exceeds the {} bytes left",
                cursor.len()
            )));
        }
        let mut indexes = Vec::with_capacity(count as usize);
        for _ in 0..count {
            indexes.push(read_index(&mut cursor, "message index")?);
        }
        indexes
    };
    Ok(ProtobufFrame {
        schema_id,
        message_indexes,
        payload: cursor,
    })
}

fn write_zigzag(out: &mut Vec<u8>, n: i32) {
    let mut v = ((n << 1) ^ (n >> 31)) as u32;
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads one zigzag varint that must be a non-negative 32-bit integer.
fn read_index(cursor: &mut &[u8], what: &str) -> Result<u32, SchemaError> {
    let mut raw: u32 = 0;
    for i in 0..5 {
        let Some((&byte, rest)) = cursor.split_first() else {
            return Err(SchemaError::Decode(format!("truncated {what}")));
        };
        *cursor = rest;
        // The fifth byte may carry only the top 4 bits of a 32-bit value.
        if i == 4 && byte > 0x0f {
            return Err(SchemaError::Decode(format!("{what} overflows 32 bits")));
        }
        raw |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let value = ((raw >> 1) as i32) ^ -((raw & 1) as i32);
            return u32::try_from(value)
                .map_err(|_| SchemaError::Decode(format!("negative {what} {value}")));
        }
    }
    Err(SchemaError::Decode(format!("{what} overflows 32 bits")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_matches_the_protobuf_encoding() {
        // Values from the Protobuf encoding guide's zigzag table, as varints.
        for (n, bytes) in [
            (0, vec![0x00]),
            (-1, vec![0x01]),
            (1, vec![0x02]),
            (-2, vec![0x03]),
            (63, vec![0x7e]),
            (64, vec![0x80, 0x01]),
            (i32::MAX, vec![0xfe, 0xff, 0xff, 0xff, 0x0f]),
            (i32::MIN, vec![0xff, 0xff, 0xff, 0xff, 0x0f]),
        ] {
            let mut out = Vec::new();
            write_zigzag(&mut out, n);
            assert_eq!(out, bytes, "zigzag({n})");
        }
    }

    #[test]
    fn index_reader_round_trips_and_refuses_negatives() {
        for n in [0, 1, 2, 127, 128, 300, i32::MAX] {
            let mut out = Vec::new();
            write_zigzag(&mut out, n);
            let mut cursor = &out[..];
            assert_eq!(read_index(&mut cursor, "x").ok(), u32::try_from(n).ok());
            assert!(cursor.is_empty());
        }
        let mut out = Vec::new();
        write_zigzag(&mut out, -3);
        assert!(matches!(
            read_index(&mut &out[..], "x"),
            Err(SchemaError::Decode(m)) if m.contains("negative")
        ));
        let too_long = [0xff, 0xff, 0xff, 0xff, 0x1f];
        assert!(matches!(
            read_index(&mut &too_long[..], "x"),
            Err(SchemaError::Decode(_))
        ));
    }
}
