//! The query parser never panics, every error points inside the query, and binding and
//! evaluating whatever it accepts never panics either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|raw: &str| {
    match tablecast::query::parse(raw) {
        Ok(query) => {
            let schema = json!({"type": "object", "properties": {"n": {"type": "number"}, "d": {"type": "string", "format": "date-time"}}});
            if let Ok(query) = tablecast::query::bind(query, &schema)
                && let Some(filter) = &query.filter
            {
                let record = json!({"n": 1, "s": "x", "d": "2001-01-01T00:00:00Z", "a": [1, "b", null], "o": {"p": true}});
                tablecast::query::evaluate::matches(filter, &record);
            }
        }
        Err(error) => assert!(error.position <= raw.len(), "{error:?} for {raw:?}"),
    }
});
