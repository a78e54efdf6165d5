//! How the durable stream lays out its data in fjall: log records, group records and ack keys.
//!
//! A log record, keyed by its big-endian sequence number, is
//! `format (u8) | published at, ms since the epoch (u64) | subject | header count (u32) |
//! (name, value)* | payload`, each string as `length (u32) | utf-8 bytes`, integers big-endian and
//! the payload the rest of the value. A length-prefixed layout rather than JSON: payloads are
//! opaque bytes, and reading the publish time (for retention) needs no parsing at all.
//!
//! A group record, keyed by the group name, is `floor (u64) | filter`. An ack key is
//! `name length (u32) | name | sequence (u64)`, so one group's acks share a prefix in sequence order.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::{BusError, BusMessage};

/// The one record layout so far; a record of any other is refused, never guessed at.
const FORMAT: u8 = 1;

/// A message as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Record {
    pub published_ms: u64,
    pub message: BusMessage,
}

/// Why stored bytes cannot be read back.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum Corrupt {
    #[error("stored bytes end early")]
    Truncated,
    #[error("unknown record format {0}")]
    Format(u8),
    #[error("stored string is not utf-8")]
    NotUtf8,
    #[error("stored key has {0} bytes, not 8")]
    KeyLength(usize),
}

/// Reads length-prefixed fields off the front of stored bytes.
struct Fields<'a> {
    rest: &'a [u8],
}

// === impl Record ===

impl Record {
    /// The stored form of `message`, published at `published_ms`.
    pub fn encode(published_ms: u64, message: &BusMessage) -> Result<Vec<u8>, BusError> {
        let headers_len: usize = message.headers.iter().map(|(name, value)| 8 + name.len() + value.len()).sum();
        let mut out = Vec::with_capacity(1 + 8 + 4 + message.subject.len() + 4 + headers_len + message.payload.len());
        out.push(FORMAT);
        out.extend_from_slice(&published_ms.to_be_bytes());
        put_str(&mut out, &message.subject)?;
        put_len(&mut out, message.headers.len())?;
        for (name, value) in &message.headers {
            put_str(&mut out, name)?;
            put_str(&mut out, value)?;
        }
        out.extend_from_slice(&message.payload);
        Ok(out)
    }

    pub fn decode(raw: &[u8]) -> Result<Self, Corrupt> {
        let mut fields = Fields::open(raw)?;
        let published_ms = fields.u64()?;
        let subject = fields.string()?;
        let count = fields.u32()?;
        let mut headers = BTreeMap::new();
        for _ in 0..count {
            let name = fields.string()?;
            headers.insert(name, fields.string()?);
        }
        let payload = Bytes::copy_from_slice(fields.rest);
        Ok(Self { published_ms, message: BusMessage { subject, headers, payload } })
    }

    /// Only the publish time of a stored record: what retention by age needs.
    pub fn published_ms(raw: &[u8]) -> Result<u64, Corrupt> {
        Fields::open(raw)?.u64()
    }
}

/// The log key of sequence number `seq`: big-endian, so keys sort in publish order.
pub(super) fn log_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

pub(super) fn parse_log_key(key: &[u8]) -> Result<u64, Corrupt> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| Corrupt::KeyLength(key.len()))?;
    Ok(u64::from_be_bytes(bytes))
}

/// A group record: the floor below which everything is acked (or not the group's), and the filter.
pub(super) fn group_record(floor: u64, filter: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + filter.len());
    out.extend_from_slice(&floor.to_be_bytes());
    out.extend_from_slice(filter.as_bytes());
    out
}

/// `(floor, filter)` of a group record.
pub(super) fn parse_group_record(raw: &[u8]) -> Result<(u64, String), Corrupt> {
    let (floor, filter) = raw.split_first_chunk::<8>().ok_or(Corrupt::Truncated)?;
    let filter = std::str::from_utf8(filter).map_err(|_| Corrupt::NotUtf8)?;
    Ok((u64::from_be_bytes(*floor), filter.to_owned()))
}

/// The prefix every ack key of `group` starts with.
pub(super) fn ack_prefix(group: &str) -> Result<Vec<u8>, BusError> {
    let mut out = Vec::with_capacity(4 + group.len());
    put_str(&mut out, group)?;
    Ok(out)
}

/// The key recording that the group with `prefix` ([`ack_prefix`]) acked `seq` above its floor.
pub(super) fn ack_key(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 8);
    out.extend_from_slice(prefix);
    out.extend_from_slice(&seq.to_be_bytes());
    out
}

/// `(group, seq)` of an ack key.
pub(super) fn parse_ack_key(key: &[u8]) -> Result<(String, u64), Corrupt> {
    let mut fields = Fields { rest: key };
    let group = fields.string()?;
    let seq = parse_log_key(fields.rest)?;
    Ok((group, seq))
}

fn put_len(out: &mut Vec<u8>, len: usize) -> Result<(), BusError> {
    let len = u32::try_from(len).map_err(|_| BusError::Invalid(format!("a field of {len} bytes is too long")))?;
    out.extend_from_slice(&len.to_be_bytes());
    Ok(())
}

fn put_str(out: &mut Vec<u8>, value: &str) -> Result<(), BusError> {
    put_len(out, value.len())?;
    out.extend_from_slice(value.as_bytes());
    Ok(())
}

// === impl Fields ===

impl<'a> Fields<'a> {
    /// Fields of a log record, after its format byte.
    fn open(raw: &'a [u8]) -> Result<Self, Corrupt> {
        match raw.split_first() {
            Some((&FORMAT, rest)) => Ok(Self { rest }),
            Some((&other, _)) => Err(Corrupt::Format(other)),
            None => Err(Corrupt::Truncated),
        }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], Corrupt> {
        if self.rest.len() < len {
            return Err(Corrupt::Truncated);
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }

    fn u32(&mut self) -> Result<u32, Corrupt> {
        let (bytes, rest) = self.rest.split_first_chunk::<4>().ok_or(Corrupt::Truncated)?;
        self.rest = rest;
        Ok(u32::from_be_bytes(*bytes))
    }

    fn u64(&mut self) -> Result<u64, Corrupt> {
        let (bytes, rest) = self.rest.split_first_chunk::<8>().ok_or(Corrupt::Truncated)?;
        self.rest = rest;
        Ok(u64::from_be_bytes(*bytes))
    }

    fn string(&mut self) -> Result<String, Corrupt> {
        let len = usize::try_from(self.u32()?).map_err(|_| Corrupt::Truncated)?;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| Corrupt::NotUtf8)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn message() -> impl Strategy<Value = BusMessage> {
        let headers = prop::collection::btree_map(".{0,12}", ".{0,24}", 0..4);
        (".{0,40}", headers, prop::collection::vec(any::<u8>(), 0..256))
            .prop_map(|(subject, headers, payload)| BusMessage { subject, headers, payload: payload.into() })
    }

    proptest! {
        #[test]
        fn records_read_back_as_written(published_ms in any::<u64>(), message in message()) {
            let raw = Record::encode(published_ms, &message).unwrap();
            prop_assert_eq!(Record::published_ms(&raw), Ok(published_ms));
            prop_assert_eq!(Record::decode(&raw), Ok(Record { published_ms, message }));
        }

        #[test]
        fn any_bytes_decode_to_a_record_or_an_error(raw in prop::collection::vec(any::<u8>(), 0..128)) {
            let _ = Record::decode(&raw);
            let _ = parse_ack_key(&raw);
            let _ = parse_group_record(&raw);
        }

        #[test]
        fn truncated_records_are_corrupt(message in message(), cut in any::<prop::sample::Index>()) {
            let raw = Record::encode(7, &message).unwrap();
            // Anything shorter than the fields before the payload cannot be read back.
            let fixed = raw.len() - message.payload.len();
            let cut = cut.index(fixed);
            prop_assert!(Record::decode(&raw[..cut]).is_err());
        }

        #[test]
        fn ack_keys_read_back_and_sort_by_sequence(group in ".{0,20}", a in any::<u64>(), b in any::<u64>()) {
            let prefix = ack_prefix(&group).unwrap();
            let (key_a, key_b) = (ack_key(&prefix, a), ack_key(&prefix, b));
            prop_assert_eq!(parse_ack_key(&key_a), Ok((group.clone(), a)));
            prop_assert_eq!(key_a.cmp(&key_b), a.cmp(&b));
        }
    }

    #[test]
    fn a_record_of_an_unknown_format_is_refused() {
        let mut raw = Record::encode(1, &BusMessage::new("tether.up.t.pk.dn.property", "{}")).unwrap();
        raw[0] = 9;
        assert_eq!(Record::decode(&raw), Err(Corrupt::Format(9)));
        assert_eq!(Record::decode(&[]), Err(Corrupt::Truncated));
    }

    #[test]
    fn group_records_read_back() {
        assert_eq!(parse_group_record(&group_record(42, "tether.up.>")), Ok((42, "tether.up.>".to_owned())));
        assert_eq!(parse_group_record(&[0; 3]), Err(Corrupt::Truncated));
        assert_eq!(parse_log_key(&[1, 2]), Err(Corrupt::KeyLength(2)));
    }
}
