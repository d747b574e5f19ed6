//! Identity and access: who a request is, and what it may read and write. One decision for
//! every transport: REST, WebSocket, SSE and MQTT ask the same [`Identity`] for a table's
//! [`Reader`] and [`Writer`].
//!
//! | file | holds |
//! | --- | --- |
//! | `mod.rs` | [`Access`] (the loaded access file, reloadable) and [`Identity`] |
//! | `file.rs` | reading the access file, `file#/pointer: reason` for each problem |
//! | `credentials.rs` | passwords (argon2id), bearer tokens, sessions; what was verified is remembered |
//! | `tokens.rs` | JWT verification |
//! | `grant.rs` | roles, and what several roles grant together |
//! | `rule.rs` | row rules in the query language, with `$user` and `$claims` |
//! | `read.rs`, `write.rs` | what an identity sees of a table, and the guard of its writes |
//! | `rate.rs`, `throttle.rs` | rate limits; failed sign-ins throttled |
//! | `topics.rs` | plain MQTT topics a role may use |
//! | `passwd.rs` | `tablecast passwd` |
//!
//! Without an access file, every request is an administrator: the server is open, as it may be
//! only on a loopback address (see `app.rs`).

mod credentials;
mod file;
mod grant;
pub mod passwd;
mod rate;
mod read;
mod rule;
mod throttle;
mod tokens;
mod topics;
mod write;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde_json::Value;

pub use credentials::Credentials;
pub use rate::Allowed;
pub use read::Reader;
pub use write::{Write, Writer};

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::schema::LoadError;
use crate::table::{Guard, Table};
use credentials::Verifier;
use file::Policy;
use grant::Grants;
use rule::{Bound, Variables};

/// The access rules in force. Cloning shares them.
#[derive(Clone)]
pub struct Access(Arc<State>);

enum State {
    /// No access file: everyone may do everything.
    Open(Arc<Identity>),
    Guarded(Box<Guarded>),
}

struct Guarded {
    path: PathBuf,
    catalog: Arc<Catalog>,
    loaded: RwLock<Arc<Loaded>>,
    verifier: Verifier,
}

/// One reading of the access file.
struct Loaded {
    policy: Policy,
    /// What each set of roles grants, computed when first asked.
    grants: Mutex<HashMap<Vec<String>, Arc<Grants>>>,
    anonymous: Arc<Identity>,
}

/// Sets of roles whose grants are kept; tokens could name any number of sets.
const MAX_ROLE_SETS: usize = 1024;

impl Loaded {
    fn new(policy: Policy) -> Loaded {
        let mut loaded = Loaded {
            policy,
            grants: Mutex::new(HashMap::new()),
            anonymous: Arc::new(Identity::anonymous(Arc::default())),
        };
        let grants = loaded.grants(vec!["anonymous".to_owned()]);
        loaded.anonymous = Arc::new(Identity::anonymous(grants));
        loaded
    }

    /// What `roles` grant together.
    fn grants(&self, mut roles: Vec<String>) -> Arc<Grants> {
        roles.retain(|r| self.policy.roles.contains_key(r));
        roles.sort();
        roles.dedup();
        let mut cache = self.grants.lock().expect("grants lock");
        if let Some(grants) = cache.get(&roles) {
            return grants.clone();
        }
        let grants = Arc::new(Grants::of(roles.clone(), |name| {
            self.policy.roles.get(name)
        }));
        if cache.len() < MAX_ROLE_SETS {
            cache.insert(roles, grants.clone());
        }
        grants
    }

    fn identity(&self, user: Option<String>, claims: Value, roles: Vec<String>) -> Identity {
        Identity {
            user,
            claims,
            grants: self.grants(roles),
            authenticated: true,
        }
    }
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.0 {
            State::Open(_) => f.write_str("Access(open)"),
            State::Guarded(guarded) => write!(f, "Access({})", guarded.path.display()),
        }
    }
}

impl Access {
    /// No rules: every request may do everything.
    pub fn open() -> Access {
        Access(Arc::new(State::Open(Arc::new(Identity::open()))))
    }

    /// The rules of the access file at `path`, for the tables of `catalog`.
    pub fn load(path: &Path, catalog: Arc<Catalog>) -> Result<Access, Vec<LoadError>> {
        let policy = file::load(path, &catalog)?;
        Ok(Access(Arc::new(State::Guarded(Box::new(Guarded {
            path: path.to_owned(),
            catalog,
            loaded: RwLock::new(Arc::new(Loaded::new(policy))),
            verifier: Verifier::new(),
        })))))
    }

    /// Whether an access file is in force.
    pub fn is_guarded(&self) -> bool {
        matches!(*self.0, State::Guarded(_))
    }

    /// Reads the access file again and puts it in force; on a problem, the rules in force stay
    /// and the problems are returned.
    pub fn reload(&self) -> Result<(), Vec<LoadError>> {
        let State::Guarded(guarded) = &*self.0 else {
            return Ok(());
        };
        let policy = file::load(&guarded.path, &guarded.catalog)?;
        *guarded.loaded.write().expect("access lock") = Arc::new(Loaded::new(policy));
        // Identities remembered hold the old grants.
        guarded.verifier.forget();
        Ok(())
    }

    /// The identity `credentials` prove, from `address`; anonymous without credentials.
    pub async fn authenticate(
        &self,
        credentials: Credentials,
        address: IpAddr,
    ) -> Result<Arc<Identity>> {
        match &*self.0 {
            State::Open(everyone) => Ok(everyone.clone()),
            State::Guarded(guarded) => {
                let loaded = guarded.loaded.read().expect("access lock").clone();
                guarded.verifier.verify(&loaded, credentials, address).await
            }
        }
    }

    /// Counts a request of `identity` from `address` against its rate.
    pub fn limit(&self, identity: &Identity, address: IpAddr) -> Result<Option<Allowed>> {
        let Some(rate) = &identity.grants.rate else {
            return Ok(None);
        };
        let key = match &identity.user {
            Some(user) => format!("user:{user}"),
            None => format!("address:{address}"),
        };
        rate.check(&key)
            .map(Some)
            .map_err(|refused| Error::RateLimited {
                detail: format!(
                    "past the rate of {} requests per {} s of your role ({})",
                    refused.limit,
                    refused.window.as_secs(),
                    refused.text
                ),
                retry_after: refused.retry_after,
            })
    }

    /// Starts a session for `identity`, returning its token (for a cookie).
    pub fn open_session(&self, identity: &Identity) -> Option<String> {
        match &*self.0 {
            State::Open(_) => None,
            State::Guarded(guarded) => Some(guarded.verifier.open_session(identity)),
        }
    }

    /// Ends the session with this token.
    pub fn close_session(&self, token: &str) {
        if let State::Guarded(guarded) = &*self.0 {
            guarded.verifier.close_session(token);
        }
    }
}

/// Who a request is: a user, a token's subject, or anonymous, with what its roles grant.
#[derive(Debug)]
pub struct Identity {
    /// The user's name (`$user`); `None` for anonymous.
    pub user: Option<String>,
    /// A token's claims (`$claims`); `{}` for a user of the access file.
    pub claims: Value,
    grants: Arc<Grants>,
    /// Whether credentials proved it (false for anonymous, and on an open server).
    pub authenticated: bool,
}

impl Identity {
    /// Everyone, on a server without an access file.
    fn open() -> Identity {
        Identity::anonymous(Arc::new(Grants::everything()))
    }

    fn anonymous(grants: Arc<Grants>) -> Identity {
        Identity {
            user: None,
            claims: Value::Null,
            grants,
            authenticated: false,
        }
    }

    /// Passes every rule and may use the control routes.
    pub fn is_admin(&self) -> bool {
        self.grants.admin
    }

    /// The roles, for logs and sessions.
    pub fn roles(&self) -> &[String] {
        &self.grants.roles
    }

    fn variables(&self) -> Variables<'_> {
        Variables {
            user: self.user.as_deref(),
            claims: &self.claims,
        }
    }

    fn bind(&self, rule: &rule::Rule, table: &Table) -> Bound {
        rule.bind(&self.variables(), &table.schema().document())
            .unwrap_or_else(|error| {
                // A value of the wrong type for the attribute (a user name where the rule compares
                // a number): the rule covers nothing for this identity.
                tracing::debug!(%error, table = table.name(), "a row rule does not bind");
                Bound::None
            })
    }

    /// What the identity sees of `table`.
    pub fn reader(&self, table: &Table) -> Reader {
        if self.grants.admin {
            return Reader::everything();
        }
        match self.grants.table(table.name()) {
            None => Reader {
                rows: Bound::None,
                hidden: Vec::new(),
            },
            Some(rules) => Reader {
                rows: self.bind(&rules.read, table),
                hidden: rules.hidden.clone(),
            },
        }
    }

    /// What the identity may write to `table`.
    pub fn writer(&self, table: &Table) -> Writer {
        let reader = self.reader(table);
        let none = grant::TableRules::none();
        let rules = match self.grants.table(table.name()) {
            _ if self.grants.admin => {
                return Writer {
                    table: table.name().to_owned(),
                    reader,
                    insert: Bound::All,
                    update: Bound::All,
                    delete: Bound::All,
                    fixed: Vec::new(),
                };
            }
            Some(rules) => rules,
            None => &none,
        };
        Writer {
            table: table.name().to_owned(),
            insert: self.bind(&rules.insert, table),
            update: self.bind(&rules.update, table),
            delete: self.bind(&rules.delete, table),
            fixed: rules.fixed.clone(),
            reader,
        }
    }

    /// The guard of `write` on `table` and what the writer may read back; refused at once if
    /// no record could be written.
    pub fn write_guard(&self, table: &Table, write: Write) -> Result<(Option<Guard>, Reader)> {
        let writer = self.writer(table);
        if writer.refuses(write) {
            let what = match write {
                Write::Put => "write to",
                Write::Create => "create records in",
                Write::Patch => "change records of",
                Write::Delete => "delete records of",
            };
            return Err(self.refusal(format!("{what} table `{}`", table.name())));
        }
        Ok((writer.guard(write), self.reader(table)))
    }

    /// Refuses a push (`Write::Put`) or an eviction (`Write::Delete`) on a cache table unless
    /// the identity may write every record: an entry mirrors the origin for everyone, so a
    /// row rule cannot apply.
    pub fn may_write_cache(&self, table: &Table, write: Write) -> Result<()> {
        if self.writer(table).writes_any_record(write) {
            return Ok(());
        }
        let what = match write {
            Write::Delete => "evict entries of",
            _ => "push entries to",
        };
        let name = table.name();
        Err(self.refusal(format!("{what} cache table `{name}` (it needs update: true, or delete: true, without property rules)")))
    }

    /// The error for something the identity may not do: 401 without credentials (they might
    /// allow it), 403 with them.
    pub fn refusal(&self, what: impl Into<String>) -> Error {
        let what = what.into();
        if self.authenticated {
            Error::Forbidden(format!(
                "your roles ({}) may not {what}",
                self.grants.roles.join(", ")
            ))
        } else {
            Error::Unauthenticated(format!(
                "{what} needs credentials: a user's password (Basic) or a bearer token"
            ))
        }
    }

    /// Refuses anyone but an administrator.
    pub fn require_admin(&self, what: &str) -> Result<()> {
        if self.grants.admin {
            Ok(())
        } else {
            Err(self.refusal(what))
        }
    }

    /// Whether the identity may publish to the plain MQTT topic `topic`.
    pub fn may_publish(&self, topic: &str) -> bool {
        self.grants.admin || self.grants.mqtt.may_publish(topic, self.user.as_deref())
    }

    /// Whether the identity may subscribe to every plain MQTT topic `filter` matches.
    pub fn may_subscribe(&self, filter: &str) -> bool {
        self.grants.admin || self.grants.mqtt.may_subscribe(filter, self.user.as_deref())
    }
}
