//! The query parser never panics, every error points inside the query, and binding and
//! evaluating whatever it accepts never panics either, whatever the stored values are: the input
//! is a query, then optionally a NUL and a text that every attribute of the record holds (as a
//! string, and as a number if it is one), since conditions parse stored strings too (dates).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fuzz_target!(|raw: &str| {
    let (text, stored) = raw.split_once('\0').unwrap_or((raw, "2001-01-01T00:00:00Z"));
    match tablecast::query::parse(text) {
        Ok(query) => {
            let schema = json!({"type": "object", "properties": {"n": {"type": "number"}, "d": {"type": "string", "format": "date-time"}}});
            if let Ok(query) = tablecast::query::bind(query, &schema)
                && let Some(filter) = &query.filter
            {
                let number = stored.parse::<f64>().ok().map_or(Value::Null, Value::from);
                let record = json!({"n": number, "s": stored, "d": stored, "a": [1, stored, null], "o": {"p": stored}});
                tablecast::query::evaluate::matches(filter, &record);
                let fixed = json!({"n": 1, "s": "x", "d": "2001-01-01T00:00:00Z", "a": [1, "b", null], "o": {"p": true}});
                tablecast::query::evaluate::matches(filter, &fixed);
            }
        }
        Err(error) => assert!(error.position <= text.len(), "{error:?} for {text:?}"),
    }
});
