//! Row rules: `true`, `false`, or conditions in tablecast's own query language with the
//! variables `$user` and `$claims.<path>`, bound to an identity and a table's schema when used.
//!
//! Variables are substituted into the parsed conditions, never into the rule's text, so no
//! user name or claim can change a rule's structure. A variable the identity does not have (an
//! anonymous `$user`, a missing claim, a claim that is an object) makes its condition match
//! nothing.

use serde_json::Value;

use crate::error::QueryError;
use crate::query::{self, Filter, Literal, Query};

/// Which records a permission covers.
#[derive(Clone, Debug, PartialEq)]
pub enum Rule {
    /// Every record.
    Allow,
    /// No record.
    Deny,
    /// The records that match any of these conditions (unbound: with variables).
    Any(Vec<Filter>),
}

/// A rule bound to one identity and one table: what [`Rule::bind`] makes of it.
#[derive(Clone, Debug, PartialEq)]
pub enum Bound {
    /// Every record.
    All,
    /// No record.
    None,
    /// The records `filter` matches.
    Matching(Filter),
}

/// The values a rule's variables take for one identity.
pub struct Variables<'a> {
    /// `$user`; `None` for anonymous.
    pub user: Option<&'a str>,
    /// `$claims`: a token's claims (`{}` for a user of the access file).
    pub claims: &'a Value,
}

impl Rule {
    /// Reads a rule as written in the access file: `true`, `false`, or a query condition
    /// (`owner=$user`, `status=published|owner=$user`) checked against `schema`.
    pub fn parse(text: &str, schema: &Value) -> Result<Rule, QueryError> {
        let parsed = query::parse(text)?;
        let has_calls = parsed.select.is_some()
            || !parsed.sort.is_empty()
            || parsed.limit.is_some()
            || parsed.offset > 0
            || parsed.after.is_some();
        if has_calls {
            return Err(QueryError {
                position: 0,
                token: text.to_owned(),
                expected: "conditions only: select(), sort(), limit() and after() are not rules"
                    .to_owned(),
            });
        }
        let Some(filter) = parsed.filter else {
            return Err(QueryError {
                position: 0,
                token: String::new(),
                expected: "a condition such as owner=$user, or true or false".to_owned(),
            });
        };
        check_variables(&filter)?;
        // Bound once with stand-ins, so that an unknown attribute or a value of the wrong type
        // is reported when the file is read, not when the rule is first used.
        let probe = Variables {
            user: Some("user"),
            claims: &Value::Null,
        };
        Rule::Any(vec![filter.clone()]).bind(&probe, schema)?;
        Ok(Rule::Any(vec![filter]))
    }

    /// The rule that grants what either grants.
    pub fn or(self, other: Rule) -> Rule {
        match (self, other) {
            (Rule::Allow, _) | (_, Rule::Allow) => Rule::Allow,
            (Rule::Deny, rule) | (rule, Rule::Deny) => rule,
            (Rule::Any(mut a), Rule::Any(b)) => {
                a.extend(b);
                Rule::Any(a)
            }
        }
    }

    /// Whether the rule covers no record whoever asks.
    pub fn is_deny(&self) -> bool {
        matches!(self, Rule::Deny)
    }

    /// The rule for one identity, with its values converted by the table's `schema`.
    pub fn bind(&self, variables: &Variables, schema: &Value) -> Result<Bound, QueryError> {
        let filters = match self {
            Rule::Allow => return Ok(Bound::All),
            Rule::Deny => return Ok(Bound::None),
            Rule::Any(filters) => filters,
        };
        let mut bound = Vec::with_capacity(filters.len());
        for filter in filters {
            let query = Query {
                filter: Some(substitute(filter, variables)),
                ..Query::default()
            };
            if let Some(filter) = query::bind(query, schema)?.filter {
                bound.push(filter);
            }
        }
        Ok(match bound.len() {
            1 => Bound::Matching(bound.pop().expect("one")),
            _ => Bound::Matching(Filter::Any(bound)),
        })
    }
}

impl Bound {
    /// Whether `record` is covered.
    pub fn covers(&self, record: &Value) -> bool {
        match self {
            Bound::All => true,
            Bound::None => false,
            Bound::Matching(filter) => query::evaluate::matches(filter, record),
        }
    }
}

/// The only variables there are: `$user` and `$claims.<path>`.
fn check_variables(filter: &Filter) -> Result<(), QueryError> {
    match filter {
        Filter::All(parts) | Filter::Any(parts) => parts.iter().try_for_each(check_variables),
        Filter::Condition(condition) => match &condition.value {
            Literal::Text(text) if text.starts_with('$') => {
                let known = text == "$user"
                    || text.strip_prefix("$claims.").is_some_and(|path| {
                        !path.is_empty() && !path.split('.').any(str::is_empty)
                    });
                if known {
                    Ok(())
                } else {
                    Err(QueryError {
                        position: condition.value_position,
                        token: text.clone(),
                        expected: "a variable $user or $claims.<name> (write a value that starts with $ as string:$...)".to_owned(),
                    })
                }
            }
            _ => Ok(()),
        },
    }
}

/// `filter` with its variables replaced by their values; a condition on a missing value
/// becomes one that matches nothing (an empty `|`).
fn substitute(filter: &Filter, variables: &Variables) -> Filter {
    match filter {
        Filter::All(parts) => Filter::All(parts.iter().map(|p| substitute(p, variables)).collect()),
        Filter::Any(parts) => Filter::Any(parts.iter().map(|p| substitute(p, variables)).collect()),
        Filter::Condition(condition) => {
            let Literal::Text(text) = &condition.value else {
                return filter.clone();
            };
            let value = if text == "$user" {
                variables.user.map(|user| Literal::Text(user.to_owned()))
            } else if let Some(path) = text.strip_prefix("$claims.") {
                let path: Vec<String> = path.split('.').map(str::to_owned).collect();
                query::evaluate::lookup(variables.claims, &path).and_then(claim_literal)
            } else {
                return filter.clone();
            };
            match value {
                Some(value) => Filter::Condition(query::Condition {
                    value,
                    ..condition.clone()
                }),
                None => Filter::Any(Vec::new()),
            }
        }
    }
}

fn claim_literal(claim: &Value) -> Option<Literal> {
    match claim {
        Value::String(text) => Some(Literal::Text(text.clone())),
        Value::Number(n) => n.as_f64().map(Literal::Number),
        Value::Bool(b) => Some(Literal::Bool(*b)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "owner": {"type": "string"}, "tenant": {"type": "integer"},
            "status": {"type": "string"}}})
    }

    fn covers(rule: &str, user: Option<&str>, claims: Value, record: Value) -> bool {
        let rule = Rule::parse(rule, &schema()).expect("a valid rule");
        let variables = Variables {
            user,
            claims: &claims,
        };
        rule.bind(&variables, &schema())
            .expect("binds")
            .covers(&record)
    }

    #[test]
    fn variables_take_the_identity_s_values() {
        let record = json!({"owner": "alice", "tenant": 7, "status": "draft"});
        assert!(covers(
            "owner=$user",
            Some("alice"),
            json!({}),
            record.clone()
        ));
        assert!(!covers(
            "owner=$user",
            Some("bob"),
            json!({}),
            record.clone()
        ));
        assert!(covers(
            "tenant=$claims.tenant",
            None,
            json!({"tenant": 7}),
            record.clone()
        ));
        assert!(!covers(
            "tenant=$claims.tenant",
            None,
            json!({"tenant": 8}),
            record.clone()
        ));
        assert!(covers(
            "status=published|owner=$user",
            Some("alice"),
            json!({}),
            record.clone()
        ));
    }

    #[test]
    fn a_missing_variable_matches_nothing_not_null() {
        let unowned = json!({"status": "draft"});
        assert!(!covers("owner=$user", None, json!({}), unowned.clone()));
        assert!(!covers(
            "tenant=$claims.tenant",
            None,
            json!({}),
            unowned.clone()
        ));
        assert!(!covers(
            "owner=$claims.who",
            None,
            json!({"who": {"a": 1}}),
            unowned
        ));
        let published = json!({"status": "published"});
        assert!(covers(
            "status=published|owner=$user",
            None,
            json!({}),
            published
        ));
    }

    #[test]
    fn a_user_name_cannot_change_the_rule() {
        let record = json!({"owner": "bob", "status": "published"});
        assert!(!covers(
            "owner=$user",
            Some("x|owner=bob"),
            json!({}),
            record.clone()
        ));
        assert!(!covers("owner=$user", Some("bob*"), json!({}), record));
    }

    #[test]
    fn bad_rules_are_refused_with_where() {
        let schema = json!({"type": "object", "additionalProperties": false,
                            "properties": {"owner": {"type": "string"}}});
        assert!(Rule::parse("nosuch=$user", &schema).is_err());
        assert_eq!(Rule::parse("owner=$usr", &schema).unwrap_err().position, 6);
        assert!(Rule::parse("owner=$user&limit(1)", &schema).is_err());
        assert!(Rule::parse("", &schema).is_err());
        assert!(Rule::parse("owner=string:$user", &schema).is_ok());
    }

    #[test]
    fn either_rule_grants() {
        let a = Rule::parse("owner=$user", &schema()).unwrap();
        assert_eq!(a.clone().or(Rule::Allow), Rule::Allow);
        assert_eq!(Rule::Deny.or(a.clone()), a);
        assert!(matches!(a.clone().or(a), Rule::Any(parts) if parts.len() == 2));
    }
}
