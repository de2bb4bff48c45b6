//! The MessagePack codec: one envelope for every message, validated on the way in.
//!
//! Every payload on the bus is a MessagePack map `{"version": 1, "kind": "bid", "body": {...}}`
//! whose body is itself a map with named fields (rmp-serde's named encoding), so a client in any
//! language reads it with a generic MessagePack library. Decoding is defensive in a fixed order:
//! size first (before any allocation proportional to the input), then the envelope header (so a
//! message from a newer protocol version gets a clear "unknown version" rather than a confusing
//! field error), then the body, then [`Message::validate`]. Nothing reaches a component that has
//! not passed all four.

use crate::validate::ValidationError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// The largest payload accepted, in bytes: the NATS server's default `max_payload` (1 MiB).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// A message type of the protocol.
pub trait Message: Serialize + DeserializeOwned {
    /// The `kind` written in the envelope, e.g. `"bid"`.
    const KIND: &'static str;

    /// Checks the values of a decoded (or about to be encoded) message.
    fn validate(&self) -> Result<(), ValidationError>;
}

/// Why a payload could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("payload is {size} bytes; at most {max} are accepted")]
    TooLarge { size: usize, max: usize },
    #[error("payload is not a valid entente envelope: {0}")]
    Malformed(String),
    #[error("protocol version {found} is not supported (this build speaks version {supported})")]
    UnknownVersion { found: u16, supported: u16 },
    #[error("expected a {expected:?} message, got {found:?}")]
    WrongKind { expected: &'static str, found: String },
    #[error("{kind} message is invalid: {source}")]
    Invalid { kind: &'static str, source: ValidationError },
}

/// Why a message could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("refusing to send an invalid {kind} message: {source}")]
    Invalid { kind: &'static str, source: ValidationError },
    #[error("encoded {kind} message is {size} bytes; at most {max} may be sent")]
    TooLarge { kind: &'static str, size: usize, max: usize },
    #[error("could not encode {kind} message: {reason}")]
    Serialize { kind: &'static str, reason: String },
}

#[derive(Serialize)]
struct EnvelopeOut<'a, M> {
    version: u16,
    kind: &'a str,
    body: &'a M,
}

#[derive(Deserialize)]
struct EnvelopeHeader {
    version: u16,
    kind: String,
}

#[derive(Deserialize)]
struct EnvelopeIn<M> {
    body: M,
}

/// Encodes a message, refusing one that would not pass validation on the other side.
pub fn encode<M: Message>(message: &M) -> Result<Vec<u8>, EncodeError> {
    message.validate().map_err(|source| EncodeError::Invalid { kind: M::KIND, source })?;
    let mut bytes = Vec::with_capacity(256);
    let mut serializer = rmp_serde::Serializer::new(&mut bytes).with_struct_map().with_human_readable();
    EnvelopeOut { version: PROTOCOL_VERSION, kind: M::KIND, body: message }
        .serialize(&mut serializer)
        .map_err(|e| EncodeError::Serialize { kind: M::KIND, reason: e.to_string() })?;
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(EncodeError::TooLarge { kind: M::KIND, size: bytes.len(), max: MAX_MESSAGE_BYTES });
    }
    Ok(bytes)
}

/// Decodes and validates a message of type `M`.
pub fn decode<M: Message>(bytes: &[u8]) -> Result<M, DecodeError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge { size: bytes.len(), max: MAX_MESSAGE_BYTES });
    }
    let header: EnvelopeHeader = from_msgpack(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if header.version != PROTOCOL_VERSION {
        return Err(DecodeError::UnknownVersion { found: header.version, supported: PROTOCOL_VERSION });
    }
    if header.kind != M::KIND {
        return Err(DecodeError::WrongKind { expected: M::KIND, found: header.kind });
    }
    let envelope: EnvelopeIn<M> = from_msgpack(bytes)
        .map_err(|e| DecodeError::Malformed(format!("{} body: {e}", M::KIND)))?;
    envelope.body.validate().map_err(|source| DecodeError::Invalid { kind: M::KIND, source })?;
    Ok(envelope.body)
}

/// Reads only the envelope's kind and version: for tools that route or display any message.
pub fn peek_kind(bytes: &[u8]) -> Result<(u16, String), DecodeError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge { size: bytes.len(), max: MAX_MESSAGE_BYTES });
    }
    let header: EnvelopeHeader = from_msgpack(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    Ok((header.version, header.kind))
}

/// Human-readable mode makes UUIDs (and anything else that cares) travel as strings.
fn from_msgpack<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    let mut deserializer = rmp_serde::Deserializer::from_read_ref(bytes).with_human_readable();
    T::deserialize(&mut deserializer)
}
