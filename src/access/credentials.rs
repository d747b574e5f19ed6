//! Credentials and what they prove: a user's password (argon2id, slow on purpose), a bearer
//! token, or a session started with either.
//!
//! A verified password or token is remembered for a short time, under a keyed hash of it, so a
//! client that sends it with every request pays the verification once, and one password is
//! verified once however many connections present it at the same moment. Failed sign-ins are
//! throttled per user name and per client address (`throttle.rs`).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argon2::{Argon2, PasswordVerifier};
use lru::LruCache;
use serde_json::Value;

use super::throttle::Throttle;
use super::{Identity, Loaded};
use crate::error::{Cause, Error, Result};

/// How long a verified password or token is remembered.
const REMEMBERED_FOR: Duration = Duration::from_secs(60);
/// Verified credentials remembered at most.
const REMEMBERED: usize = 10_000;
/// How long a session lasts.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the least recently used go first.
const SESSIONS: usize = 100_000;

/// What a request presents.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// Nothing: anonymous.
    None,
    /// HTTP Basic: the base64 of `user:password`, decoded only if not remembered.
    Basic(String),
    /// A user of the access file and its password (MQTT, `/_session`).
    Password { user: String, password: String },
    /// A JWT (HTTP Bearer, a WebSocket subprotocol, an MQTT password).
    Token(String),
    /// A session cookie.
    Session(String),
}

struct Remembered {
    identity: Arc<Identity>,
    until: Instant,
}

struct Session {
    user: Option<String>,
    claims: Value,
    roles: Vec<String>,
    until: Instant,
}

/// Verifies credentials, remembering what it verified.
pub struct Verifier {
    remembered: Mutex<LruCache<u128, Remembered>>,
    sessions: Mutex<LruCache<String, Session>>,
    /// A turn per password being verified: those that present it meanwhile wait for the answer.
    verifying: Mutex<HashMap<u128, Arc<tokio::sync::Mutex<()>>>>,
    throttle: Throttle,
    /// The keys of [`Verifier::fingerprint`].
    keys: [RandomState; 2],
}

impl Verifier {
    pub fn new() -> Verifier {
        let size = |n| NonZeroUsize::new(n).expect("not zero");
        Verifier {
            remembered: Mutex::new(LruCache::new(size(REMEMBERED))),
            sessions: Mutex::new(LruCache::new(size(SESSIONS))),
            verifying: Mutex::new(HashMap::new()),
            throttle: Throttle::new(),
            keys: [RandomState::new(), RandomState::new()],
        }
    }

    /// Forgets every verified credential (the rules changed).
    pub fn forget(&self) {
        self.remembered.lock().expect("lock").clear();
    }

    pub async fn verify(
        &self,
        loaded: &Arc<Loaded>,
        credentials: Credentials,
        address: IpAddr,
    ) -> Result<Arc<Identity>> {
        match credentials {
            Credentials::None => Ok(loaded.anonymous.clone()),
            Credentials::Session(token) => self.session(loaded, &token),
            Credentials::Basic(encoded) => {
                let key = self.fingerprint(&["basic", &encoded]);
                if let Some(identity) = self.recall(key) {
                    return Ok(identity);
                }
                let (user, password) = decode_basic(&encoded)?;
                self.password(loaded, key, user, password, address).await
            }
            Credentials::Password { user, password } => {
                let key = self.fingerprint(&["password", &user, &password]);
                if let Some(identity) = self.recall(key) {
                    return Ok(identity);
                }
                self.password(loaded, key, user, password, address).await
            }
            Credentials::Token(token) => {
                let key = self.fingerprint(&["token", &token]);
                if let Some(identity) = self.recall(key) {
                    return Ok(identity);
                }
                let Some(settings) = &loaded.policy.tokens else {
                    return Err(Error::Unauthenticated(
                        "this server's access file accepts no bearer tokens".to_owned(),
                    ));
                };
                let verified = settings.verify(&token).map_err(Error::Unauthenticated)?;
                let left = verified.expires.map_or(REMEMBERED_FOR, |exp| {
                    Duration::from_secs(exp.saturating_sub(epoch_seconds()))
                });
                let identity = loaded.identity(verified.user, verified.claims, verified.roles);
                Ok(self.remember(key, Arc::new(identity), left.min(REMEMBERED_FOR)))
            }
        }
    }

    /// Verifies `user`'s `password` (remembered under `key`), once however many present it at
    /// the same moment: the others wait for the first one's answer.
    async fn password(
        &self,
        loaded: &Arc<Loaded>,
        key: u128,
        user: String,
        password: String,
        address: IpAddr,
    ) -> Result<Arc<Identity>> {
        let turn = self
            .verifying
            .lock()
            .expect("lock")
            .entry(key)
            .or_default()
            .clone();
        let verified = async {
            let _turn = turn.lock().await;
            if let Some(identity) = self.recall(key) {
                return Ok(identity);
            }
            self.throttle.admit(&user, address)?;
            match verify_password(loaded.clone(), user.clone(), password).await {
                Ok(identity) => Ok(self.remember(key, identity, REMEMBERED_FOR)),
                Err(error) => {
                    self.throttle.failed(&user, address);
                    Err(error)
                }
            }
        }
        .await;
        self.verifying.lock().expect("lock").remove(&key);
        verified
    }

    /// A keyed hash of credentials (128 bits of SipHash under keys of this process), so that
    /// what is remembered holds no password and no one can make up credentials that match it.
    fn fingerprint(&self, parts: &[&str]) -> u128 {
        let hash = |keys: &RandomState| {
            let mut hasher = keys.build_hasher();
            for part in parts {
                hasher.write_usize(part.len());
                hasher.write(part.as_bytes());
            }
            hasher.finish()
        };
        (u128::from(hash(&self.keys[0])) << 64) | u128::from(hash(&self.keys[1]))
    }

    fn recall(&self, key: u128) -> Option<Arc<Identity>> {
        let mut remembered = self.remembered.lock().expect("lock");
        match remembered.get(&key) {
            Some(entry) if entry.until > Instant::now() => Some(entry.identity.clone()),
            Some(_) => {
                remembered.pop(&key);
                None
            }
            None => None,
        }
    }

    fn remember(&self, key: u128, identity: Arc<Identity>, lifetime: Duration) -> Arc<Identity> {
        let until = Instant::now() + lifetime;
        let entry = Remembered {
            identity: identity.clone(),
            until,
        };
        self.remembered.lock().expect("lock").put(key, entry);
        identity
    }

    pub fn open_session(&self, identity: &Identity) -> String {
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes).expect("the system's random numbers");
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let session = Session {
            user: identity.user.clone(),
            claims: identity.claims.clone(),
            roles: identity.roles().to_vec(),
            until: Instant::now() + SESSION_LIFETIME,
        };
        self.sessions
            .lock()
            .expect("lock")
            .put(token.clone(), session);
        token
    }

    pub fn close_session(&self, token: &str) {
        self.sessions.lock().expect("lock").pop(token);
    }

    fn session(&self, loaded: &Loaded, token: &str) -> Result<Arc<Identity>> {
        let mut sessions = self.sessions.lock().expect("lock");
        match sessions.get(token) {
            Some(session) if session.until > Instant::now() => Ok(Arc::new(loaded.identity(
                session.user.clone(),
                session.claims.clone(),
                session.roles.clone(),
            ))),
            _ => {
                sessions.pop(token);
                Err(Error::Unauthenticated(
                    "the session has ended; sign in again at POST /_session".to_owned(),
                ))
            }
        }
    }
}

/// Checks `password` on the blocking pool (argon2 takes tens of milliseconds); an unknown user
/// takes as long as a known one, so timing does not tell which names exist.
async fn verify_password(
    loaded: Arc<Loaded>,
    user: String,
    password: String,
) -> Result<Arc<Identity>> {
    let checked = tokio::task::spawn_blocking(move || {
        let known = loaded.policy.users.get(&user);
        let hash = known.map_or_else(|| decoy().as_str(), |u| u.password.as_str());
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), hash)
            .is_ok();
        match known {
            Some(known) if matches => {
                let roles = known.roles.clone();
                Ok(Arc::new(loaded.identity(
                    Some(user),
                    Value::Object(Default::default()),
                    roles,
                )))
            }
            _ => Err(Error::Unauthenticated(
                "wrong user name or password".to_owned(),
            )),
        }
    });
    checked
        .await
        .map_err(|e| Error::Internal(Cause::of("verifying a password failed", e)))?
}

/// A hash no password matches, checked for unknown users.
fn decoy() -> &'static String {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| super::passwd::hash("not a password of anyone").expect("argon2 hashes"))
}

/// `user:password` from the base64 of HTTP Basic credentials.
fn decode_basic(encoded: &str) -> Result<(String, String)> {
    use base64::Engine;
    let malformed = || {
        Error::Unauthenticated("Basic credentials must be the base64 of `user:password`".to_owned())
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| malformed())?;
    let text = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (user, password) = text.split_once(':').ok_or_else(malformed)?;
    Ok((user.to_owned(), password.to_owned()))
}

fn epoch_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
