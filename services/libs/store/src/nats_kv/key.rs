//! Store keys as NATS KV keys, and back.
//!
//! NATS KV keys allow only `[-/_=.a-zA-Z0-9]`, and `.` separates subject tokens (which wildcard
//! filters match on). A store key is a `/`-separated path, so each path segment becomes one
//! token: `/` maps to `.`, `[A-Za-z0-9_-]` stays as it is, and every other byte of the segment's
//! UTF-8 (`.`, `@`, `:`, `=`, `%`, `*`, `>`, non-ASCII, …) becomes `=XX` (uppercase hex). An empty
//! segment becomes the token `=`, which no escape can produce. So every string has exactly one
//! encoding, always a valid NATS key, and decodes back to itself:
//! `device/pk/a.b@c:d` ↔ `device.pk.a=2Eb=40c=3Ad`.

use std::fmt::Write;

/// The token that stands for an empty path segment.
const EMPTY_SEGMENT: &str = "=";

/// A key that is not the encoding of any store key (written to the bucket by someone else).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct BadKey(pub String);

/// Encodes a store key as a NATS KV key.
pub(super) fn encode(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for (i, segment) in key.split('/').enumerate() {
        if i > 0 {
            out.push('.');
        }
        if segment.is_empty() {
            out.push_str(EMPTY_SEGMENT);
        }
        for byte in segment.bytes() {
            if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
                out.push(char::from(byte));
            } else {
                // Writing to a String cannot fail.
                let _ = write!(out, "={byte:02X}");
            }
        }
    }
    out
}

/// Decodes a NATS KV key written by [`encode`].
pub(super) fn decode(encoded: &str) -> Result<String, BadKey> {
    let bad = || BadKey(encoded.to_owned());
    let mut bytes = Vec::with_capacity(encoded.len());
    for (i, token) in encoded.split('.').enumerate() {
        if i > 0 {
            bytes.push(b'/');
        }
        if token == EMPTY_SEGMENT {
            continue;
        }
        if token.is_empty() {
            return Err(bad());
        }
        let mut rest = token.as_bytes();
        while let Some((&byte, tail)) = rest.split_first() {
            if byte == b'=' {
                let [hi, lo, tail @ ..] = tail else { return Err(bad()) };
                let hex = [*hi, *lo];
                let hex = std::str::from_utf8(&hex).map_err(|_| bad())?;
                bytes.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                rest = tail;
            } else if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
                bytes.push(byte);
                rest = tail;
            } else {
                return Err(bad());
            }
        }
    }
    let key = String::from_utf8(bytes).map_err(|_| bad())?;
    // Only the one encoding `encode` writes names a key (no lowercase hex, no needless escapes).
    if encode(&key) == encoded { Ok(key) } else { Err(bad()) }
}

/// The subject filter (relative to the bucket) that holds every key starting with `prefix`.
///
/// Exact when `prefix` is empty or ends with `/` (`device/pk/` → `device.pk.>`); a prefix that
/// ends inside a segment (`device/p`) gets its parent's filter (`device.>`), and the caller
/// keeps only the keys that really start with the prefix.
pub(super) fn filter(prefix: &str) -> String {
    match prefix.rfind('/') {
        None => ">".to_owned(),
        Some(end) => format!("{}.>", encode(&prefix[..end])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NATS's own rule for KV keys (async-nats `is_valid_key`).
    fn is_valid_nats_key(key: &str) -> bool {
        !key.is_empty()
            && !key.starts_with('.')
            && !key.ends_with('.')
            && !key.contains("..")
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b))
    }

    const KEYS: &[&str] = &[
        "tenant/default",
        "apikey/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "product/a1B2_c-3",
        "device/pk/dn",
        "device/pk/dev.1@home:8080",
        "presence/pk/a-b_c",
        "shadow/x",
        "odd/=/%/*/>/ /$",
        "unicode/ü/设备",
        "",
        "/",
        "a//b",
        "a/",
        "/a",
        "=",
        "=3D",
    ];

    #[test]
    fn encodes_paths_as_tokens_and_escapes_the_rest() {
        assert_eq!(encode("device/pk/dn"), "device.pk.dn");
        assert_eq!(encode("device/pk/a.b@c:d"), "device.pk.a=2Eb=40c=3Ad");
        assert_eq!(encode("x/a=b%c"), "x.a=3Db=25c");
        assert_eq!(encode("x/ü"), "x.=C3=BC");
        assert_eq!(encode("a//b/"), "a.=.b.=");
        assert_eq!(encode(""), "=");
    }

    #[test]
    fn every_key_round_trips_through_a_valid_nats_key() {
        for key in KEYS {
            let encoded = encode(key);
            assert!(is_valid_nats_key(&encoded), "{key:?} encodes to invalid {encoded:?}");
            assert_eq!(decode(&encoded).as_deref(), Ok(*key), "{key:?} via {encoded:?}");
        }
    }

    #[test]
    fn every_allowed_device_name_byte_round_trips() {
        let name: String = (0u8..=127).map(char::from).filter(|c| c.is_ascii_graphic() && *c != '/').collect();
        let key = format!("device/pk/{name}");
        let encoded = encode(&key);
        assert!(is_valid_nats_key(&encoded));
        assert_eq!(decode(&encoded).unwrap(), key);
    }

    #[test]
    fn distinct_keys_never_share_an_encoding() {
        let mut encoded: Vec<String> = KEYS.iter().map(|k| encode(k)).collect();
        encoded.sort();
        encoded.dedup();
        assert_eq!(encoded.len(), KEYS.len());
    }

    #[test]
    fn rejects_keys_it_did_not_write() {
        for bad in ["a..b", ".a", "a.", "a=4", "a=G0", "a@b", "=FF", "a=2", "a=2e", "=41"] {
            assert!(decode(bad).is_err(), "{bad:?} decoded");
        }
    }

    #[test]
    fn prefixes_become_subject_filters() {
        assert_eq!(filter(""), ">");
        assert_eq!(filter("device/"), "device.>");
        assert_eq!(filter("device/pk/"), "device.pk.>");
        assert_eq!(filter("device/p.k/"), "device.p=2Ek.>");
        // Mid-segment prefixes widen to their parent; the caller filters the rest.
        assert_eq!(filter("dev"), ">");
        assert_eq!(filter("device/p"), "device.>");
        // Only whole segments match a filter: `device/pk/` never sees `device/pk2/…`.
        assert!(!encode("device/pk2/a").starts_with(filter("device/pk/").trim_end_matches('>')));
    }
}
