//! The query parser never panics, and what it accepts is a well-formed page.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &str| {
    if let Ok(query) = tablecast::query::parse(raw) {
        assert!(query.limit.is_none() || query.offset.checked_add(query.limit.unwrap_or(0)).is_some());
    }
});
