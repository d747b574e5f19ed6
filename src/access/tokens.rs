//! Bearer tokens: JWTs signed with a shared HS256 secret or an identity provider's RS256 or
//! EdDSA key, with `exp`, `nbf`, `iss` and `aud` checked.
//!
//! The algorithm a token names picks the kind of key it is checked with, and each kind of key
//! checks only its own algorithms: `alg: none` and a token signed with HS256 using a public key
//! as the secret (algorithm confusion) are refused.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// Seconds of clock difference tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 30;

/// How tokens are checked.
pub struct TokenSettings {
    pub hs256: Option<DecodingKey>,
    pub rsa: Vec<DecodingKey>,
    pub ed25519: Vec<DecodingKey>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// The claim that names the user (`sub`).
    pub user_claim: String,
    /// The claim that lists the roles (`roles`): an array of names, or one name.
    pub roles_claim: String,
}

/// What a valid token says.
pub struct Verified {
    pub user: Option<String>,
    pub roles: Vec<String>,
    pub claims: Value,
    /// `exp`, seconds since the epoch.
    pub expires: Option<u64>,
}

impl TokenSettings {
    /// Checks `token`; the error is what a client may be told.
    pub fn verify(&self, token: &str) -> Result<Verified, String> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| format!("the bearer token is not a JWT ({e})"))?;
        let keys: Vec<&DecodingKey> = match header.alg {
            Algorithm::HS256 => self.hs256.iter().collect(),
            Algorithm::RS256 => self.rsa.iter().collect(),
            Algorithm::EdDSA => self.ed25519.iter().collect(),
            other => return Err(format!("tokens signed with {other:?} are not accepted")),
        };
        if keys.is_empty() {
            return Err(format!(
                "the access file configures no key for {:?} tokens",
                header.alg
            ));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".to_owned());
            }
            None => validation.validate_aud = false,
        }
        let mut failure = String::new();
        for key in keys {
            match jsonwebtoken::decode::<Value>(token, key, &validation) {
                Ok(data) => return Ok(self.read_claims(data.claims)),
                Err(error) => failure = describe(&error),
            }
        }
        Err(failure)
    }

    fn read_claims(&self, claims: Value) -> Verified {
        let user = claims
            .get(&self.user_claim)
            .and_then(Value::as_str)
            .map(str::to_owned);
        let roles = match claims.get(&self.roles_claim) {
            Some(Value::String(role)) => vec![role.clone()],
            Some(Value::Array(roles)) => roles
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        let expires = claims.get("exp").and_then(Value::as_u64);
        Verified {
            user,
            roles,
            claims,
            expires,
        }
    }
}

fn describe(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "the bearer token has expired".to_owned(),
        ErrorKind::ImmatureSignature => "the bearer token is not valid yet (nbf)".to_owned(),
        ErrorKind::InvalidAudience => "the bearer token is for another audience".to_owned(),
        ErrorKind::InvalidIssuer => "the bearer token is from another issuer".to_owned(),
        ErrorKind::InvalidSignature => "the bearer token's signature does not verify".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => {
            format!("the bearer token has no `{claim}` claim")
        }
        _ => format!("the bearer token is not valid ({error})"),
    }
}
