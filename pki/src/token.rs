//! Join tokens: `RSWTKN-1-<CA digest: 50 base 36 chars>-<secret: 25 base 36 chars>`.
//!
//! The digest lets a joining node check the root CA it downloads; the secret
//! proves to the manager that the node may join (and with which role, since
//! workers and managers get different secrets).

use std::fmt;
use std::str::FromStr;

use rand::RngCore;

use crate::base36;
use crate::ca::CA_DIGEST_LEN;
use crate::error::TokenError;

/// First part of every join token.
const PREFIX: &str = "RSWTKN";

/// The only token version this build writes and reads.
const VERSION: &str = "1";

/// Length of the secret in base 36 characters (128 bits need 25).
const SECRET_LEN: usize = 25;

/// Bytes of randomness in a secret.
const SECRET_BYTES: usize = 16;

/// A parsed join token. `Display` gives the full token string; `Debug`
/// hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Digest of the cluster's root CA certificate (see [`crate::ca_digest`]).
    pub ca_digest: String,
    /// The random secret, 25 lowercase base 36 characters.
    pub secret: String,
}

impl JoinToken {
    /// A new token for the CA with digest `ca_digest`, with a fresh random
    /// 128-bit secret.
    pub fn generate(ca_digest: &str) -> JoinToken {
        let mut bytes = [0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        JoinToken {
            ca_digest: ca_digest.to_owned(),
            secret: base36::encode_padded(&bytes, SECRET_LEN),
        }
    }

    /// Parses a token string; surrounding whitespace is ignored.
    pub fn parse(token: &str) -> Result<JoinToken, TokenError> {
        let token = token.trim();
        let rest = token
            .strip_prefix(PREFIX)
            .and_then(|r| r.strip_prefix('-'))
            .ok_or(TokenError::MissingPrefix)?;
        let parts: Vec<&str> = rest.split('-').collect();
        match parts.first() {
            Some(&VERSION) => {}
            Some(version) if !version.is_empty() => return Err(TokenError::UnsupportedVersion),
            _ => return Err(TokenError::WrongPartCount),
        }
        let [_, digest, secret] = parts[..] else {
            return Err(TokenError::WrongPartCount);
        };
        check_digest(digest)?;
        check_secret(secret)?;
        Ok(JoinToken {
            ca_digest: digest.to_owned(),
            secret: secret.to_owned(),
        })
    }
}

fn check_digest(digest: &str) -> Result<(), TokenError> {
    let found = digest.chars().count();
    if found != CA_DIGEST_LEN {
        return Err(TokenError::DigestLength { found });
    }
    if !base36::is_base36(digest) {
        return Err(TokenError::DigestNotBase36);
    }
    Ok(())
}

fn check_secret(secret: &str) -> Result<(), TokenError> {
    let found = secret.chars().count();
    if found != SECRET_LEN {
        return Err(TokenError::SecretLength { found });
    }
    if !base36::is_base36(secret) {
        return Err(TokenError::SecretNotBase36);
    }
    Ok(())
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}-{VERSION}-{}-{}", self.ca_digest, self.secret)
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_digest", &self.ca_digest)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl FromStr for JoinToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JoinToken::parse(s)
    }
}

/// Compares two token strings in time independent of where they differ
/// (only their lengths leak). Different lengths never match.
pub fn tokens_match(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcd";

    #[test]
    fn round_trips() {
        let token = JoinToken::generate(DIGEST);
        let text = token.to_string();
        assert!(text.starts_with("RSWTKN-1-"));
        assert_eq!(text.len(), "RSWTKN-1-".len() + 50 + 1 + 25);
        assert_eq!(JoinToken::parse(&text), Ok(token.clone()));
        assert_eq!(text.parse::<JoinToken>(), Ok(token.clone()));
        assert_eq!(JoinToken::parse(&format!(" {text}\n")), Ok(token));
    }

    #[test]
    fn secrets_differ_and_are_base36() {
        let a = JoinToken::generate(DIGEST);
        let b = JoinToken::generate(DIGEST);
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.secret.len(), 25);
        assert!(base36::is_base36(&a.secret));
    }

    #[test]
    fn debug_hides_secret() {
        let token = JoinToken::generate(DIGEST);
        assert!(!format!("{token:?}").contains(&token.secret));
    }

    #[test]
    fn each_malformation_has_its_error() {
        let secret = "abcdefghijklmnopqrstuvwxy";
        let cases = [
            (
                format!("SWMTKN-1-{DIGEST}-{secret}"),
                TokenError::MissingPrefix,
            ),
            ("RSWTKN".to_owned(), TokenError::MissingPrefix),
            (
                format!("RSWTKN-2-{DIGEST}-{secret}"),
                TokenError::UnsupportedVersion,
            ),
            (format!("RSWTKN-1-{DIGEST}"), TokenError::WrongPartCount),
            ("RSWTKN-".to_owned(), TokenError::WrongPartCount),
            (
                format!("RSWTKN-1-{DIGEST}-{secret}-x"),
                TokenError::WrongPartCount,
            ),
            (
                format!("RSWTKN-1-{}-{secret}", &DIGEST[1..]),
                TokenError::DigestLength { found: 49 },
            ),
            (
                format!("RSWTKN-1-{}Z-{secret}", &DIGEST[1..]),
                TokenError::DigestNotBase36,
            ),
            (
                format!("RSWTKN-1-{DIGEST}-{secret}z"),
                TokenError::SecretLength { found: 26 },
            ),
            (
                format!("RSWTKN-1-{DIGEST}-{}_", &secret[1..]),
                TokenError::SecretNotBase36,
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(JoinToken::parse(&text), Err(expected), "{text}");
        }
    }

    #[test]
    fn messages_are_lower_case_and_actionable() {
        let e = TokenError::WrongPartCount.to_string();
        assert!(e.starts_with("invalid join token: it must look like RSWTKN-1-"));
        assert!(e.contains("rswarm join-token worker"));
    }

    #[test]
    fn match_is_exact() {
        assert!(tokens_match("RSWTKN-1-a-b", "RSWTKN-1-a-b"));
        assert!(!tokens_match("RSWTKN-1-a-b", "RSWTKN-1-a-c"));
        assert!(!tokens_match("RSWTKN-1-a-b", "RSWTKN-1-a-bb"));
        assert!(!tokens_match("", "x"));
        assert!(tokens_match("", ""));
    }
}
