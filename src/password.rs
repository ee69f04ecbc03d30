//! Password hashes for `[auth]`: argon2id PHC strings, made by `sesrelay hash-password` and
//! verified when a client authenticates. Passwords are never kept or logged in clear.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params};

/// A hash no password is known for, with the default parameters: an unknown username is
/// verified against it, so that an unknown user costs as much time as a known one.
pub const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$FSL8Xce2lUQbn+2+IFZ3EA$GOZ0xmNJuQE+DVQGfE2v+kMrAx3RepBgiiPgjUd8+6A";

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("the password is empty")]
    Empty,
    #[error("no random salt: {0}")]
    Random(String),
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// The argon2id PHC string of `password`, with a random 16-byte salt and argon2's default
/// parameters (m=19456 KiB, t=2, p=1).
pub fn hash(password: &str) -> Result<String, PasswordError> {
    if password.is_empty() {
        return Err(PasswordError::Empty);
    }
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| PasswordError::Random(e.to_string()))?;
    let salt = SaltString::encode_b64(&bytes).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `hash` (argon2's comparison is constant
/// time). A hash that does not parse matches nothing. This is slow by design: call it on a
/// blocking thread.
pub fn verify(password: &str, hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// Whether `hash` is an argon2id PHC string that [`verify`] can check against.
pub fn is_argon2id_hash(hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        parsed.algorithm == Algorithm::Argon2id.ident()
            && parsed.hash.is_some()
            && parsed.salt.is_some()
            && Params::try_from(&parsed).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(is_argon2id_hash(&h));
        assert!(verify("correct horse", &h));
        assert!(!verify("correct horsE", &h));
        assert_ne!(h, hash("correct horse").unwrap(), "the salt is random");
        assert!(matches!(hash(""), Err(PasswordError::Empty)));
    }

    #[test]
    fn the_dummy_hash_is_well_formed() {
        assert!(is_argon2id_hash(DUMMY_HASH));
        assert!(!verify("", DUMMY_HASH));
    }

    #[test]
    fn other_strings_are_not_argon2id_hashes() {
        for s in [
            "",
            "$argon2id$",
            "$argon2i$v=19$m=19456,t=2,p=1$c2VzcmVsYXktZHVtbXktc2FsdA$e6yEqNn7g4k7yfJbeFnQxTbq9dYgt5+JG+KkWqPYqiE",
            "$argon2id$v=19$m=1,t=2,p=1$c2VzcmVsYXktZHVtbXktc2FsdA$e6yEqNn7g4k7yfJbeFnQxTbq9dYgt5+JG+KkWqPYqiE",
            "$argon2id$v=19$m=19456,t=2,p=1$c2VzcmVsYXktZHVtbXktc2FsdA",
            "plain",
        ] {
            assert!(!is_argon2id_hash(s), "{s}");
            assert!(!verify("x", s));
        }
    }
}
