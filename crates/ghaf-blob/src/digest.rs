//! Content addresses: SHA-256 digests and the references that carry them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::BlobError;

/// A SHA-256 digest, the content address of a blob.
///
/// Its text form is 64 lowercase hex characters, both in `Display`/`FromStr` and in serde.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest([u8; 32]);

impl Sha256Digest {
    /// Length of the text form in characters.
    pub const HEX_LEN: usize = 64;

    /// Wraps raw digest bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Computes the SHA-256 digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Formats the digest as 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Finishes an incremental hash started with [`Sha256::new`].
    pub(crate) fn from_hasher(hasher: Sha256) -> Self {
        Self(hasher.finalize().into())
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({self})")
    }
}

impl FromStr for Sha256Digest {
    type Err = BlobError;

    /// Parses 64 lowercase hex characters. Uppercase is rejected so that every digest has
    /// exactly one text form, the one used in storage keys.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let is_lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        if value.len() != Self::HEX_LEN || !value.bytes().all(is_lower_hex) {
            return Err(BlobError::InvalidDigest {
                value: value.to_owned(),
            });
        }

        let mut bytes = [0u8; 32];
        hex::decode_to_slice(value, &mut bytes).map_err(|_| BlobError::InvalidDigest {
            value: value.to_owned(),
        })?;
        Ok(Self(bytes))
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A stored blob: its content address and its size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlobRef {
    pub digest: Sha256Digest,
    pub size: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_of_empty_input() {
        assert_eq!(Sha256Digest::of(b"").to_string(), EMPTY_SHA256);
    }

    #[test]
    fn digest_text_round_trip() {
        let digest = Sha256Digest::of(b"hello");
        let parsed: Sha256Digest = digest.to_string().parse().unwrap();
        assert_eq!(parsed, digest);
        assert_eq!(format!("{digest:?}"), format!("Sha256Digest({digest})"));
    }

    #[test]
    fn digest_parse_rejects_invalid_text() {
        let uppercase = EMPTY_SHA256.to_uppercase();
        let too_short = &EMPTY_SHA256[..63];
        let too_long = format!("{EMPTY_SHA256}0");
        let non_hex = format!("{}g", &EMPTY_SHA256[..63]);
        let prefixed = format!("sha256:{EMPTY_SHA256}");
        for value in [
            "",
            uppercase.as_str(),
            too_short,
            too_long.as_str(),
            non_hex.as_str(),
            prefixed.as_str(),
        ] {
            let error = value.parse::<Sha256Digest>().unwrap_err();
            assert!(
                matches!(&error, BlobError::InvalidDigest { value: v } if v == value),
                "{value:?} gave {error:?}"
            );
        }
    }

    #[test]
    fn digest_serde_as_hex_string() {
        let digest = Sha256Digest::of(b"");
        let json = serde_json::to_string(&digest).unwrap();
        assert_eq!(json, format!("\"{EMPTY_SHA256}\""));
        let parsed: Sha256Digest = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed, digest);
        assert!(serde_json::from_str::<Sha256Digest>("\"abc\"").is_err());
    }

    #[test]
    fn blob_ref_serde_shape() {
        let blob = BlobRef {
            digest: Sha256Digest::of(b""),
            size: 0,
        };
        let value = serde_json::to_value(blob).unwrap();
        assert_eq!(
            value,
            serde_json::json!({ "digest": EMPTY_SHA256, "size": 0 })
        );
        let parsed: BlobRef = serde_json::from_value(value).unwrap();
        assert_eq!(parsed, blob);
    }
}
