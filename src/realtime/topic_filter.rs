//! Topic filters: which records a subscription watches.
//!
//! A record's topic is `<table>/<id>`. Filters follow MQTT's rules: `+` matches one level, a final
//! `#` matches any number of levels (none included), and a filter starting with a wildcard does
//! not match topics starting with `$`. `Product/42` watches a record, `Product/#` (or
//! `/Product/` over HTTP) the whole table. A string id holding `/` spans levels (the record
//! `a/b` is on `Product/a/b`), so `Product/+` watches only the records whose id has none: MQTT
//! clients and other brokers read `+` as one level, and so does this one.

use std::fmt;

use crate::storage::Key;

/// A topic filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicFilter {
    levels: Vec<Level>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Level {
    Exact(String),
    /// `+`: any one level.
    One,
    /// `#`: this level and every one below, or none.
    Rest,
}

/// The longest topic filter accepted, in bytes (MQTT's own limit).
const MAX_FILTER_BYTES: usize = 65_535;

impl TopicFilter {
    /// Parses an MQTT topic filter.
    pub fn parse(text: &str) -> Result<TopicFilter, String> {
        if text.is_empty() {
            return Err("a topic filter cannot be empty".to_owned());
        }
        if text.len() > MAX_FILTER_BYTES {
            return Err("the topic filter is too long".to_owned());
        }
        if text.contains('\0') {
            return Err("a topic filter cannot contain U+0000".to_owned());
        }
        let parts: Vec<&str> = text.split('/').collect();
        let last = parts.len() - 1;
        let levels = parts
            .iter()
            .enumerate()
            .map(|(at, part)| match *part {
                "+" => Ok(Level::One),
                "#" if at == last => Ok(Level::Rest),
                "#" => Err("`#` must be the last level of a topic filter".to_owned()),
                part if part.contains(['+', '#']) => Err(format!(
                    "`{part}`: a wildcard must occupy a whole level (`a/+/b`, `a/#`)"
                )),
                part => Ok(Level::Exact(part.to_owned())),
            })
            .collect::<Result<_, _>>()?;
        Ok(TopicFilter { levels })
    }

    /// The filter watching one record.
    pub fn record(table: &str, key: &Key) -> TopicFilter {
        let id = key.to_string();
        let levels = std::iter::once(table)
            .chain(id.split('/'))
            .map(|level| Level::Exact(level.to_owned()))
            .collect();
        TopicFilter { levels }
    }

    /// The filter watching every record of a table.
    pub fn table(table: &str) -> TopicFilter {
        TopicFilter {
            levels: vec![Level::Exact(table.to_owned()), Level::Rest],
        }
    }

    /// The first level, if it names one thing rather than a wildcard.
    pub fn first(&self) -> Option<&str> {
        match self.levels.first() {
            Some(Level::Exact(name)) => Some(name),
            _ => None,
        }
    }

    /// Whether a table named `table` may hold topics this filter matches.
    pub fn may_match_table(&self, table: &str) -> bool {
        match self.levels.first() {
            Some(Level::Exact(name)) => name == table,
            Some(Level::One | Level::Rest) => !table.starts_with('$'),
            None => false,
        }
    }

    /// The id of the one record of a table this filter matches, if it names exactly one.
    pub fn exact_id(&self) -> Option<String> {
        let rest = self.levels.get(1..).filter(|rest| !rest.is_empty())?;
        let mut id = String::new();
        for (at, level) in rest.iter().enumerate() {
            let Level::Exact(part) = level else {
                return None;
            };
            if at > 0 {
                id.push('/');
            }
            id.push_str(part);
        }
        Some(id)
    }

    /// Whether the topic of record `id` of `table` matches.
    pub fn matches_record(&self, table: &str, id: &Key) -> bool {
        if !self.may_match_table(table) {
            return false;
        }
        if self.levels.get(1) == Some(&Level::Rest) {
            // The common whole-table watch needs no id formatting.
            return true;
        }
        let id = id.to_string();
        self.matches_levels(std::iter::once(table).chain(id.split('/')))
    }

    /// Whether `topic` matches.
    pub fn matches(&self, topic: &str) -> bool {
        if topic.starts_with('$') && !matches!(self.levels.first(), Some(Level::Exact(_))) {
            return false;
        }
        self.matches_levels(topic.split('/'))
    }

    fn matches_levels<'a>(&self, mut topic: impl Iterator<Item = &'a str>) -> bool {
        for level in &self.levels {
            match (level, topic.next()) {
                (Level::Rest, _) => return true,
                (Level::One, Some(_)) => {}
                (Level::Exact(want), Some(got)) if want == got => {}
                _ => return false,
            }
        }
        topic.next().is_none()
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (at, level) in self.levels.iter().enumerate() {
            if at > 0 {
                f.write_str("/")?;
            }
            match level {
                Level::Exact(part) => f.write_str(part)?,
                Level::One => f.write_str("+")?,
                Level::Rest => f.write_str("#")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> TopicFilter {
        TopicFilter::parse(text).expect(text)
    }

    #[test]
    fn matching_follows_mqtt() {
        let cases = [
            ("T/1", "T/1", true),
            ("T/1", "T/2", false),
            ("T/+", "T/1", true),
            ("T/+", "T/a/b", false),
            ("T/+", "T", false),
            ("T/#", "T", true),
            ("T/#", "T/a/b", true),
            ("T/#", "U/1", false),
            ("+/1", "T/1", true),
            ("#", "T/1", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("a//b", "a//b", true),
            ("a/+/b", "a//b", true),
        ];
        for (filter, topic, expected) in cases {
            assert_eq!(
                parse(filter).matches(topic),
                expected,
                "{filter} vs {topic}"
            );
        }
    }

    #[test]
    fn bad_filters_are_refused_with_a_reason() {
        for bad in ["", "a/#/b", "a+", "a/b#", "#/a"] {
            assert!(TopicFilter::parse(bad).is_err(), "{bad:?} was accepted");
        }
        for good in ["#", "+", "a/+/b/#", "/", "$SYS/+"] {
            assert_eq!(parse(good).to_string(), good);
        }
    }

    #[test]
    fn records_and_tables() {
        let key = Key::Str("a/b".to_owned());
        let record = TopicFilter::record("T", &key);
        assert!(record.matches_record("T", &key));
        assert!(!record.matches_record("T", &Key::Str("a".to_owned())));
        assert_eq!(record.exact_id().as_deref(), Some("a/b"));
        // An id that looks like a wildcard is still one literal record.
        let plus = TopicFilter::record("T", &Key::Str("+".to_owned()));
        assert!(!plus.matches_record("T", &Key::Str("x".to_owned())));
        let table = TopicFilter::table("T");
        assert!(table.matches_record("T", &Key::Int(5)));
        assert!(table.matches_record("T", &key));
        assert!(!table.matches_record("U", &Key::Int(5)));
        assert_eq!(table.exact_id(), None);
        assert!(parse("T/+").matches_record("T", &Key::Int(-3)));
        assert!(!parse("T/+").matches_record("T", &key));
        assert!(parse("+/7").matches_record("Any", &Key::Int(7)));
    }
}
