//! Plain MQTT topics a role may publish and subscribe to: topic filters in which `$user` stands
//! for the user's name (`devices/$user/#`).

/// The `mqtt` part of a role.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicPatterns {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

impl TopicPatterns {
    /// Adds what `other` allows.
    pub fn extend(&mut self, other: &TopicPatterns) {
        self.publish.extend(other.publish.iter().cloned());
        self.subscribe.extend(other.subscribe.iter().cloned());
    }

    /// Whether `user` may publish to `topic`.
    pub fn may_publish(&self, topic: &str, user: Option<&str>) -> bool {
        self.publish
            .iter()
            .filter_map(|pattern| with_user(pattern, user))
            .any(|pattern| covers(&pattern, topic))
    }

    /// Whether every topic `filter` matches is one `user` may subscribe to.
    pub fn may_subscribe(&self, filter: &str, user: Option<&str>) -> bool {
        self.subscribe
            .iter()
            .filter_map(|pattern| with_user(pattern, user))
            .any(|pattern| covers(&pattern, filter))
    }
}

/// Checks a pattern as written in the access file.
pub fn check(pattern: &str) -> Result<(), String> {
    let probe = pattern.replace("$user", "user");
    let levels: Vec<&str> = probe.split('/').collect();
    let valid = !pattern.is_empty()
        && levels.iter().enumerate().all(|(i, level)| match *level {
            "#" => i == levels.len() - 1,
            "+" => true,
            level => !level.contains(['+', '#']),
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{pattern}` is not an MQTT topic filter (`+` and `#` stand alone as levels, `#` last)"
        ))
    }
}

/// `pattern` with `$user` replaced; `None` if there is no user, or a name that would add
/// levels or wildcards.
fn with_user(pattern: &str, user: Option<&str>) -> Option<String> {
    if !pattern.contains("$user") {
        return Some(pattern.to_owned());
    }
    let user = user.filter(|u| !u.is_empty() && !u.contains(['/', '+', '#', '\0']))?;
    Some(pattern.replace("$user", user))
}

/// Whether every topic that `filter` matches is matched by `pattern` (a topic is a filter
/// without wildcards). Topics starting with `$` match only patterns that name them so.
fn covers(pattern: &str, filter: &str) -> bool {
    if filter.starts_with('$') && !pattern.starts_with('$') {
        return false;
    }
    let mut wanted = filter.split('/');
    for level in pattern.split('/') {
        match (level, wanted.next()) {
            ("#", _) => return true,
            (_, None) => return false,
            ("+", Some(asked)) => {
                if asked == "#" {
                    return false;
                }
            }
            (literal, Some(asked)) => {
                if literal != asked {
                    return false;
                }
            }
        }
    }
    wanted.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_cover_topics_and_narrower_filters() {
        assert!(covers("devices/alice/#", "devices/alice/temp"));
        assert!(covers("devices/alice/#", "devices/alice"));
        assert!(covers("devices/alice/#", "devices/alice/+/x"));
        assert!(!covers("devices/alice/#", "devices/+/temp"));
        assert!(!covers("devices/alice/#", "devices/#"));
        assert!(!covers("devices/alice/#", "#"));
        assert!(covers("devices/+/temp", "devices/bob/temp"));
        assert!(covers("devices/+/temp", "devices/+/temp"));
        assert!(!covers("devices/+/temp", "devices/#"));
        assert!(!covers("devices/+/temp", "devices/bob/temp/x"));
        assert!(!covers("#", "$SYS/broker"));
        assert!(covers("#", "anything/at/all"));
    }

    #[test]
    fn user_names_fill_one_level_only() {
        let patterns = TopicPatterns {
            publish: vec!["devices/$user/#".into()],
            subscribe: vec!["devices/$user/#".into(), "news".into()],
        };
        assert!(patterns.may_publish("devices/alice/temp", Some("alice")));
        assert!(!patterns.may_publish("devices/bob/temp", Some("alice")));
        assert!(!patterns.may_publish("devices/x/temp", Some("x/..")));
        assert!(!patterns.may_publish("devices/alice/temp", None));
        assert!(!patterns.may_subscribe("devices/#", Some("#")));
        assert!(patterns.may_subscribe("news", None));
    }

    #[test]
    fn checked_as_filters() {
        assert!(check("devices/$user/#").is_ok());
        assert!(check("a/#/b").is_err());
        assert!(check("a+/b").is_err());
        assert!(check("").is_err());
    }
}
