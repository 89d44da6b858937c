use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Compares a presented credential with the configured secret in constant time.
///
/// Both sides are hashed first, so neither the secret's content nor its length can be learned
/// from how long the comparison takes.
pub fn secrets_match(presented: &[u8], secret: &[u8]) -> bool {
    let presented = Sha256::digest(presented);
    let secret = Sha256::digest(secret);
    presented.ct_eq(&secret).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_and_different() {
        assert!(secrets_match(b"s3cret", b"s3cret"));
        assert!(!secrets_match(b"s3cret", b"s3cre"));
        assert!(!secrets_match(b"", b"s3cret"));
    }
}
