//! Why a token was not taken, in the caller's words: jsonwebtoken's own say
//! `ExpiredSignature` or `JSON error: expected value at line 1 column 1`.

/// The longest part of a token's own text (a `kid`) repeated in an answer.
const MAX_ECHOED_CHARS: usize = 64;

/// A token that cannot be taken now, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token itself is refused: a 401.
    #[error(transparent)]
    Refused(#[from] TokenRefused),
    /// No key set has been fetched from the identity provider yet: a 503, the token may
    /// well be good.
    #[error("the identity provider's keys could not be fetched yet")]
    KeysUnavailable,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokenRefused(pub(super) String);

impl TokenRefused {
    pub(super) fn plain(reason: &str) -> Self {
        Self(reason.into())
    }

    /// A `kid` the key set does not have, quoted and cut short: it is the caller's text.
    pub(super) fn unknown_kid(kid: &str) -> Self {
        let shown: String = kid.chars().take(MAX_ECHOED_CHARS).collect();
        let cut = if shown.len() < kid.len() { "…" } else { "" };
        Self(format!(
            "no key with kid {:?}{cut} in the identity provider's key set",
            shown
        ))
    }

    /// A header that does not decode.
    pub(super) fn header(error: &jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind as Kind;
        match error.kind() {
            // Well-formed JSON of the wrong shape: an `alg` such as `none`.
            Kind::Json(json) if json.is_data() => {
                Self::plain("the token's header names no algorithm this gateway accepts")
            }
            _ => Self::plain(NOT_A_JWT),
        }
    }

    /// A token whose signature or claims do not pass.
    pub(super) fn new(error: &jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind as Kind;
        let reason = match error.kind() {
            Kind::ExpiredSignature => "the token has expired",
            Kind::ImmatureSignature => "the token is not valid yet (its nbf is in the future)",
            Kind::InvalidSignature => "the token's signature does not verify",
            Kind::InvalidIssuer => "the token's issuer (iss) is not the one this gateway trusts",
            Kind::InvalidAudience => "the token's audience (aud) does not name this gateway",
            Kind::MissingRequiredClaim(claim) => {
                return Self(format!("the token has no {claim} claim"));
            }
            Kind::InvalidClaimFormat(claim) => {
                return Self(format!("the token's {claim} claim has the wrong type"));
            }
            Kind::InvalidAlgorithm | Kind::UnsupportedAlgorithm | Kind::InvalidAlgorithmName => {
                "the token is signed with an algorithm this gateway does not accept"
            }
            Kind::Json(json) if json.is_data() => {
                "the token's claims have the wrong types (sub and scope are strings, exp and iat numbers)"
            }
            Kind::InvalidToken | Kind::Base64(_) | Kind::Utf8(_) | Kind::Json(_) => NOT_A_JWT,
            _ => "the token cannot be verified with the configured key",
        };
        Self(reason.into())
    }
}

/// RFC 7515 §4.1.11: a recipient must refuse a `crit` naming an extension it does not
/// understand, and this gateway understands none.
pub(super) fn refuse_critical_extensions(
    header: &jsonwebtoken::Header,
) -> Result<(), TokenRefused> {
    match &header.crit {
        None => Ok(()),
        Some(names) => Err(TokenRefused(format!(
            "the token's header marks extensions as critical (crit: {}) that this gateway does not understand",
            names
                .iter()
                .map(|name| format!("{:?}", name.chars().take(32).collect::<String>()))
                .take(4)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

const NOT_A_JWT: &str = "the token is not a JWT (three base64url parts: header.claims.signature)";
