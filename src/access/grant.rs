//! What a set of roles grants: per table, the rows each operation covers and the properties
//! it may not see or change; the control routes; MQTT topics; a rate.

use std::collections::HashMap;
use std::sync::Arc;

use super::rate::RateLimit;
use super::rule::Rule;
use super::topics::TopicPatterns;

/// A role as the access file defines it.
#[derive(Debug, Default)]
pub struct Role {
    /// Passes every rule, and may use the control routes.
    pub admin: bool,
    /// Per table name.
    pub tables: HashMap<String, TableRules>,
    /// Plain MQTT topics it may publish and subscribe to.
    pub mqtt: TopicPatterns,
    /// Requests per period, per identity.
    pub rate: Option<Arc<RateLimit>>,
}

/// The permissions on one table.
#[derive(Clone, Debug, PartialEq)]
pub struct TableRules {
    pub read: Rule,
    pub insert: Rule,
    pub update: Rule,
    pub delete: Rule,
    /// Top-level properties that never leave the server (`read: false`).
    pub hidden: Vec<String>,
    /// Top-level properties it may not set or change (`write: false`).
    pub fixed: Vec<String>,
}

impl TableRules {
    /// No permission at all.
    pub fn none() -> TableRules {
        TableRules {
            read: Rule::Deny,
            insert: Rule::Deny,
            update: Rule::Deny,
            delete: Rule::Deny,
            hidden: Vec::new(),
            fixed: Vec::new(),
        }
    }

    fn writes(&self) -> bool {
        !(self.insert.is_deny() && self.update.is_deny() && self.delete.is_deny())
    }

    /// What either grants: each operation's rules joined; a property stays hidden (or fixed)
    /// only if every grant that reads (or writes) hides (or fixes) it.
    fn or(self, other: TableRules) -> TableRules {
        let hidden = narrowed(
            (&self.hidden, !self.read.is_deny()),
            (&other.hidden, !other.read.is_deny()),
        );
        let fixed = narrowed((&self.fixed, self.writes()), (&other.fixed, other.writes()));
        TableRules {
            read: self.read.or(other.read),
            insert: self.insert.or(other.insert),
            update: self.update.or(other.update),
            delete: self.delete.or(other.delete),
            hidden,
            fixed,
        }
    }
}

/// The properties restricted by both lists, ignoring a list whose grant does not apply.
fn narrowed(a: (&Vec<String>, bool), b: (&Vec<String>, bool)) -> Vec<String> {
    match (a, b) {
        ((a, true), (b, true)) => a.iter().filter(|p| b.contains(p)).cloned().collect(),
        ((a, true), (_, false)) => a.clone(),
        ((_, false), (b, _)) => b.clone(),
    }
}

/// What an identity's roles grant together.
#[derive(Debug, Default)]
pub struct Grants {
    /// The roles, by name.
    pub roles: Vec<String>,
    pub admin: bool,
    pub tables: HashMap<String, TableRules>,
    pub mqtt: TopicPatterns,
    /// The most generous rate of the roles; `None` if one of them has none.
    pub rate: Option<Arc<RateLimit>>,
}

impl Grants {
    /// Everything: the server without an access file.
    pub fn everything() -> Grants {
        Grants {
            admin: true,
            ..Grants::default()
        }
    }

    /// What `roles` grant together (roles the file does not define grant nothing).
    pub fn of<'a>(names: Vec<String>, roles: impl Fn(&str) -> Option<&'a Role>) -> Grants {
        let mut grants = Grants::default();
        let mut unlimited = false;
        let mut rate: Option<Arc<RateLimit>> = None;
        for role in names.iter().filter_map(|name| roles(name)) {
            grants.admin |= role.admin;
            for (table, rules) in &role.tables {
                let merged = match grants.tables.remove(table) {
                    Some(held) => held.or(rules.clone()),
                    None => rules.clone(),
                };
                grants.tables.insert(table.clone(), merged);
            }
            grants.mqtt.extend(&role.mqtt);
            match &role.rate {
                None => unlimited = true,
                Some(limit)
                    if rate
                        .as_ref()
                        .is_none_or(|r| limit.per_second() > r.per_second()) =>
                {
                    rate = Some(limit.clone());
                }
                Some(_) => {}
            }
        }
        grants.rate = if unlimited || grants.admin {
            None
        } else {
            rate
        };
        grants.roles = names;
        grants
    }

    /// The permissions on `table`; none if no role names it.
    pub fn table(&self, table: &str) -> Option<&TableRules> {
        self.tables.get(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(read: Rule, hidden: &[&str]) -> TableRules {
        TableRules {
            read,
            hidden: hidden.iter().map(|s| s.to_string()).collect(),
            ..TableRules::none()
        }
    }

    #[test]
    fn roles_grant_together() {
        let mut staff = Role::default();
        staff.tables.insert(
            "Order".into(),
            rules(Rule::Allow, &["internalNote", "cost"]),
        );
        let mut auditor = Role::default();
        auditor
            .tables
            .insert("Order".into(), rules(Rule::Deny, &[]));
        let mut viewer = Role::default();
        viewer
            .tables
            .insert("Order".into(), rules(Rule::Any(Vec::new()), &["cost"]));
        let roles: HashMap<&str, Role> =
            [("staff", staff), ("auditor", auditor), ("viewer", viewer)].into();
        let lookup = |name: &str| roles.get(name);
        let grants = Grants::of(vec!["staff".into(), "auditor".into()], lookup);
        let order = grants.table("Order").expect("granted");
        assert_eq!(order.read, Rule::Allow);
        assert_eq!(
            order.hidden,
            ["internalNote", "cost"],
            "a role that reads nothing shows nothing"
        );
        let grants = Grants::of(
            vec!["staff".into(), "viewer".into(), "nosuch".into()],
            lookup,
        );
        assert_eq!(grants.table("Order").unwrap().hidden, ["cost"]);
        assert!(!grants.admin);
    }
}
