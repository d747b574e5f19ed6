//! Reading the access file: users, token verification and roles, checked against the tables,
//! every problem reported as `file#/pointer: reason`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::DecodingKey;
use serde_json::{Map, Value};

use super::grant::{Role, TableRules};
use super::rate::RateLimit;
use super::rule::Rule;
use super::tokens::TokenSettings;
use super::topics::{self, TopicPatterns};
use crate::catalog::Catalog;
use crate::schema::LoadError;
use crate::schema::settings::escape_pointer;

/// A user of the access file.
pub struct User {
    /// An argon2id hash in PHC form (`$argon2id$v=19$...`).
    pub password: String,
    pub roles: Vec<String>,
}

/// What the access file defines.
pub struct Policy {
    pub users: HashMap<String, User>,
    pub tokens: Option<TokenSettings>,
    pub roles: HashMap<String, Role>,
}

/// Reads and checks the access file at `path` against the tables of `catalog`.
pub fn load(path: &Path, catalog: &Catalog) -> Result<Policy, Vec<LoadError>> {
    let mut reader = Reader {
        file: path,
        errors: Vec::new(),
    };
    let text = std::fs::read_to_string(path).map_err(|e| vec![reader.error("", e.to_string())])?;
    let mut document: Value = serde_json::from_str(&text)
        .map_err(|e| vec![reader.error("", format!("not JSON: {e}"))])?;
    reader.expand_environment(&mut document, String::new());
    let Value::Object(top) = &document else {
        return Err(vec![reader.error(
            "",
            "must be an object with users, tokens and roles".to_owned(),
        )]);
    };
    reader.known_keys(top, "", &["users", "tokens", "roles"]);
    let roles = reader.roles(top.get("roles"), catalog);
    let users = reader.users(top.get("users"), &roles);
    let tokens = top.get("tokens").and_then(|t| reader.tokens(t));
    if reader.errors.is_empty() {
        Ok(Policy {
            users,
            tokens,
            roles,
        })
    } else {
        Err(reader.errors)
    }
}

struct Reader<'a> {
    file: &'a Path,
    errors: Vec<LoadError>,
}

impl Reader<'_> {
    fn error(&self, pointer: &str, reason: String) -> LoadError {
        LoadError {
            file: self.file.to_owned(),
            pointer: pointer.to_owned(),
            reason,
        }
    }

    fn fail(&mut self, pointer: &str, reason: impl Into<String>) {
        let error = self.error(pointer, reason.into());
        self.errors.push(error);
    }

    /// Replaces `${NAME}` in every string with the environment variable's value.
    fn expand_environment(&mut self, value: &mut Value, pointer: String) {
        match value {
            Value::String(text) => {
                while let Some(start) = text.find("${") {
                    let Some(length) = text[start..].find('}') else {
                        self.fail(&pointer, "`${` without a closing `}`");
                        return;
                    };
                    let name = &text[start + 2..start + length];
                    match std::env::var(name) {
                        Ok(found) => text.replace_range(start..=start + length, &found),
                        Err(_) => {
                            let reason = format!("the environment variable `{name}` is not set");
                            self.fail(&pointer, reason);
                            return;
                        }
                    }
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.expand_environment(item, format!("{pointer}/{i}"));
                }
            }
            Value::Object(fields) => {
                for (name, item) in fields.iter_mut() {
                    let at = format!("{pointer}/{}", escape_pointer(name));
                    self.expand_environment(item, at);
                }
            }
            _ => {}
        }
    }

    fn known_keys(&mut self, object: &Map<String, Value>, pointer: &str, known: &[&str]) {
        for name in object.keys() {
            if !known.contains(&name.as_str()) {
                let reason = format!("unknown key; expected one of {}", known.join(", "));
                self.fail(&format!("{pointer}/{}", escape_pointer(name)), reason);
            }
        }
    }

    fn object<'v>(&mut self, value: &'v Value, pointer: &str) -> Option<&'v Map<String, Value>> {
        match value {
            Value::Object(object) => Some(object),
            _ => {
                self.fail(pointer, "must be an object");
                None
            }
        }
    }

    fn strings(&mut self, value: Option<&Value>, pointer: &str) -> Vec<String> {
        match value {
            None => Vec::new(),
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(_) => {
                self.fail(pointer, "must be an array of strings");
                Vec::new()
            }
        }
    }

    fn roles(&mut self, value: Option<&Value>, catalog: &Catalog) -> HashMap<String, Role> {
        let mut roles = HashMap::new();
        let Some(object) = value.and_then(|v| self.object(v, "/roles")) else {
            return roles;
        };
        for (name, role) in object {
            let pointer = format!("/roles/{}", escape_pointer(name));
            if let Some(role) = self.object(role, &pointer) {
                let role = self.role(role, &pointer, catalog);
                roles.insert(name.clone(), role);
            }
        }
        roles
    }

    fn role(&mut self, object: &Map<String, Value>, pointer: &str, catalog: &Catalog) -> Role {
        self.known_keys(object, pointer, &["admin", "tables", "mqtt", "rate"]);
        let mut role = Role::default();
        match object.get("admin") {
            None => {}
            Some(Value::Bool(admin)) => role.admin = *admin,
            Some(_) => self.fail(&format!("{pointer}/admin"), "must be true or false"),
        }
        if let Some(tables) = object.get("tables") {
            let at = format!("{pointer}/tables");
            for (table, rules) in self.object(tables, &at).into_iter().flatten() {
                let at = format!("{at}/{}", escape_pointer(table));
                let Ok(resource) = catalog.resource(table) else {
                    self.fail(&at, format!("there is no table named `{table}`"));
                    continue;
                };
                let schema = &resource.table().schema().document();
                if let Some(rules) = self.object(rules, &at) {
                    let rules = self.table_rules(rules, &at, schema);
                    role.tables.insert(table.clone(), rules);
                }
            }
        }
        if let Some(mqtt) = object.get("mqtt") {
            let at = format!("{pointer}/mqtt");
            if let Some(mqtt) = self.object(mqtt, &at) {
                self.known_keys(mqtt, &at, &["publish", "subscribe"]);
                role.mqtt = TopicPatterns {
                    publish: self.patterns(mqtt.get("publish"), &format!("{at}/publish")),
                    subscribe: self.patterns(mqtt.get("subscribe"), &format!("{at}/subscribe")),
                };
            }
        }
        match object.get("rate") {
            None => {}
            Some(Value::String(rate)) => match RateLimit::parse(rate) {
                Ok(rate) => role.rate = Some(Arc::new(rate)),
                Err(reason) => self.fail(&format!("{pointer}/rate"), reason),
            },
            Some(_) => self.fail(
                &format!("{pointer}/rate"),
                "must be a rate such as \"50/s\"",
            ),
        }
        role
    }

    fn patterns(&mut self, value: Option<&Value>, pointer: &str) -> Vec<String> {
        let patterns = self.strings(value, pointer);
        for (i, pattern) in patterns.iter().enumerate() {
            if let Err(reason) = topics::check(pattern) {
                self.fail(&format!("{pointer}/{i}"), reason);
            }
        }
        patterns
    }

    fn table_rules(
        &mut self,
        object: &Map<String, Value>,
        pointer: &str,
        schema: &Value,
    ) -> TableRules {
        self.known_keys(
            object,
            pointer,
            &["read", "insert", "update", "delete", "properties"],
        );
        let mut rule = |name: &str| match object.get(name) {
            None | Some(Value::Bool(false)) => Rule::Deny,
            Some(Value::Bool(true)) => Rule::Allow,
            Some(Value::String(text)) => Rule::parse(text, schema).unwrap_or_else(|e| {
                self.fail(&format!("{pointer}/{name}"), format!("`{text}`: {e}"));
                Rule::Deny
            }),
            Some(_) => {
                self.fail(
                    &format!("{pointer}/{name}"),
                    "must be true, false or a rule such as \"owner=$user\"",
                );
                Rule::Deny
            }
        };
        let mut rules = TableRules {
            read: rule("read"),
            insert: rule("insert"),
            update: rule("update"),
            delete: rule("delete"),
            ..TableRules::none()
        };
        let Some(properties) = object.get("properties") else {
            return rules;
        };
        let at = format!("{pointer}/properties");
        let declared = schema.get("properties").and_then(Value::as_object);
        for (property, access) in self.object(properties, &at).into_iter().flatten() {
            let at = format!("{at}/{}", escape_pointer(property));
            if !declared.is_some_and(|d| d.contains_key(property)) {
                self.fail(
                    &at,
                    format!("the table's schema declares no property `{property}`"),
                );
                continue;
            }
            let Some(access) = self.object(access, &at) else {
                continue;
            };
            self.known_keys(access, &at, &["read", "write"]);
            for (name, list) in [("read", &mut rules.hidden), ("write", &mut rules.fixed)] {
                match access.get(name) {
                    None | Some(Value::Bool(true)) => {}
                    Some(Value::Bool(false)) => list.push(property.clone()),
                    Some(_) => self.fail(&format!("{at}/{name}"), "must be true or false"),
                }
            }
        }
        rules
    }

    fn users(
        &mut self,
        value: Option<&Value>,
        roles: &HashMap<String, Role>,
    ) -> HashMap<String, User> {
        let mut users = HashMap::new();
        let Some(object) = value.and_then(|v| self.object(v, "/users")) else {
            return users;
        };
        for (name, user) in object {
            let pointer = format!("/users/{}", escape_pointer(name));
            let Some(user) = self.object(user, &pointer) else {
                continue;
            };
            self.known_keys(user, &pointer, &["password", "roles"]);
            let password = match user.get("password") {
                Some(Value::String(hash)) if hash.starts_with("$argon2id$") => {
                    if let Err(e) = argon2::password_hash::phc::PasswordHash::new(hash) {
                        self.fail(
                            &format!("{pointer}/password"),
                            format!("not a valid argon2id hash: {e}"),
                        );
                    }
                    hash.clone()
                }
                _ => {
                    self.fail(&format!("{pointer}/password"), "must be an argon2id hash ($argon2id$v=19$...): make one with `tablecast passwd`");
                    String::new()
                }
            };
            let listed = self.strings(user.get("roles"), &format!("{pointer}/roles"));
            for (i, role) in listed.iter().enumerate() {
                if !roles.contains_key(role) {
                    self.fail(
                        &format!("{pointer}/roles/{i}"),
                        format!("no role named `{role}` is defined under /roles"),
                    );
                }
            }
            if name.contains(':') {
                self.fail(&pointer, "a user name cannot contain `:` (Basic authentication separates name and password with it)");
            }
            users.insert(
                name.clone(),
                User {
                    password,
                    roles: listed,
                },
            );
        }
        users
    }

    fn tokens(&mut self, value: &Value) -> Option<TokenSettings> {
        let object = self.object(value, "/tokens")?;
        let known = [
            "hs256",
            "publicKeys",
            "issuer",
            "audience",
            "userClaim",
            "rolesClaim",
        ];
        self.known_keys(object, "/tokens", &known);
        let text = |name: &str| object.get(name).and_then(Value::as_str).map(str::to_owned);
        for name in ["hs256", "issuer", "audience", "userClaim", "rolesClaim"] {
            if object.get(name).is_some_and(|v| !v.is_string()) {
                self.fail(&format!("/tokens/{name}"), "must be a string");
            }
        }
        let hs256 = match text("hs256") {
            Some(secret) if secret.len() < 32 => {
                self.fail(
                    "/tokens/hs256",
                    "an HS256 secret must be at least 32 bytes long",
                );
                None
            }
            Some(secret) => DecodingKey::from_secret(secret.as_bytes()).ok(),
            None => None,
        };
        let mut settings = TokenSettings {
            hs256,
            rsa: Vec::new(),
            ed25519: Vec::new(),
            issuer: text("issuer"),
            audience: text("audience"),
            user_claim: text("userClaim").unwrap_or_else(|| "sub".to_owned()),
            roles_claim: text("rolesClaim").unwrap_or_else(|| "roles".to_owned()),
        };
        let base = self.file.parent().unwrap_or(Path::new("."));
        for (i, file) in self
            .strings(object.get("publicKeys"), "/tokens/publicKeys")
            .iter()
            .enumerate()
        {
            let at = format!("/tokens/publicKeys/{i}");
            let pem = match std::fs::read(base.join(file)) {
                Ok(pem) => pem,
                Err(e) => {
                    self.fail(&at, format!("cannot read `{file}`: {e}"));
                    continue;
                }
            };
            if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                settings.rsa.push(key);
            } else if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
                settings.ed25519.push(key);
            } else {
                self.fail(
                    &at,
                    format!("`{file}` holds no RSA or Ed25519 public key in PEM"),
                );
            }
        }
        if settings.hs256.is_none() && settings.rsa.is_empty() && settings.ed25519.is_empty() {
            self.fail(
                "/tokens",
                "needs an hs256 secret or publicKeys to check tokens with",
            );
        }
        Some(settings)
    }
}
