//! API tokens: `ghaf_<id>_<secret>`, where `<id>` is the public token id (32 hex digits) and
//! `<secret>` is 32 random bytes as 64 hex digits. Only SHA-256 of the secret is stored; a
//! fast hash is enough because the secret has 256 bits of entropy, unlike a password.

use ghaf_core::TokenId;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const PREFIX: &str = "ghaf_";

/// A token as presented by a client, split into its parts.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedToken {
    pub id: TokenId,
    pub secret: String,
}

/// Generates a token id, the full token string to show once, and the hash to store.
pub fn generate() -> (TokenId, String, String) {
    let id = TokenId::generate();
    let mut secret_bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut secret_bytes);
    let secret = hex::encode(secret_bytes);
    let token = format!("{PREFIX}{id}_{secret}");
    let hash = hash_secret(&secret);
    (id, token, hash)
}

/// Parses a presented token; `None` when it does not have the token shape.
pub fn parse(token: &str) -> Option<ParsedToken> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let is_hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !is_hex(id, 32) || !is_hex(secret, 64) {
        return None;
    }
    Some(ParsedToken {
        id: TokenId::from_stored(id),
        secret: secret.to_owned(),
    })
}

/// Hex SHA-256 of a token secret, as stored.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares a presented secret with a stored hash in constant time.
pub fn secret_matches(secret: &str, stored_hash: &str) -> bool {
    let presented = hash_secret(secret);
    presented.as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_token_parses_and_matches() {
        let (id, token, hash) = generate();
        let parsed = parse(&token).expect("generated token parses");
        assert_eq!(parsed.id, id);
        assert!(secret_matches(&parsed.secret, &hash));
        assert!(
            !token.contains(&hash),
            "the stored hash is not part of the token"
        );
    }

    #[test]
    fn wrong_secret_does_not_match() {
        let (_, token, hash) = generate();
        let mut parsed = parse(&token).unwrap();
        parsed.secret.replace_range(
            0..1,
            if parsed.secret.starts_with('0') {
                "1"
            } else {
                "0"
            },
        );
        assert!(!secret_matches(&parsed.secret, &hash));
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        let id = "0".repeat(32);
        let secret = "a".repeat(64);
        assert!(parse(&format!("ghaf_{id}_{secret}")).is_some());
        for bad in [
            String::new(),
            "ghaf_".into(),
            format!("ghaf_{id}{secret}"),
            format!("xghaf_{id}_{secret}"),
            format!("ghaf_{id}_{secret}0"),
            format!("ghaf_{}_{secret}", "g".repeat(32)),
            format!("ghaf_{id}_{}", "é".repeat(32)),
        ] {
            assert!(parse(&bad).is_none(), "{bad:?} should be rejected");
        }
    }
}
