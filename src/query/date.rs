//! Dates in queries: RFC 3339 / ISO 8601 dates and times (read by `jiff`) as milliseconds since
//! the Unix epoch.

/// Parses an RFC 3339 / ISO 8601 date or date-time (`2001-02-03`, `2001-02-03T04:05`,
/// `2001-02-03T04:05:06.789Z`, `2001-02-03 04:05:06+01:00`, ...) into milliseconds since the Unix
/// epoch; a date or date-time without an offset is UTC. Impossible dates (`2001-02-31`) and
/// anything else are `None`. This runs on stored strings as well as on queries, so it must hold
/// for any text.
pub fn parse_date(text: &str) -> Option<i64> {
    if let Ok(instant) = text.parse::<jiff::Timestamp>() {
        return Some(instant.as_millisecond());
    }
    let civil: jiff::civil::DateTime = text.parse().ok()?;
    let instant = jiff::tz::TimeZone::UTC.to_timestamp(civil).ok()?;
    Some(instant.as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2001-01-01"), Some(978_307_200_000));
        assert_eq!(
            parse_date("2001-01-01T00:00:00.000Z"),
            Some(978_307_200_000)
        );
        assert_eq!(
            parse_date("2001-01-01T01:00:00+01:00"),
            Some(978_307_200_000)
        );
        assert_eq!(
            parse_date("2000-12-31T23:00:00-01:00"),
            Some(978_307_200_000)
        );
        assert_eq!(parse_date("2001-01-01T00:00:00.5Z"), Some(978_307_200_500));
        assert_eq!(parse_date("1969-12-31T23:59:59Z"), Some(-1000));
        assert_eq!(parse_date("2001-01-01 01:00+01:00"), Some(978_307_200_000));
        assert_eq!(parse_date("2000-02-29"), Some(951_782_400_000));
        for bad in [
            "2001",
            "2001-13-01",
            "2001-1-1",
            "2001-02-31",
            "2001-02-29",
            "2001-01-01T25:00",
            "2001-01-01T12:00:00.aa\u{e9}",
            "2001-01-01T12:00:00.\u{e9}",
            "soon",
            "",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::parse_date;

    proptest! {
        /// Any text, stored or queried, is a date or not: never a panic.
        #[test]
        fn any_text_parses_or_is_refused(text in "\\PC{0,40}") {
            let _ = parse_date(&text);
        }

        /// Date-like text with every kind of character in the fraction and the offset.
        #[test]
        fn date_like_text_parses_or_is_refused(
            tail in "[0-9.:+\\-Zz\u{e9}\u{1F600}a ]{0,16}"
        ) {
            let _ = parse_date(&format!("2001-01-01T12:00:00{tail}"));
        }

        /// A well-formed date-time reads as the instant it names.
        #[test]
        fn well_formed_date_times_read_as_their_instant(
            ms in -62_135_596_800_000i64..253_402_300_799_000i64
        ) {
            let instant = jiff::Timestamp::from_millisecond(ms).expect("in range");
            prop_assert_eq!(parse_date(&instant.to_string()), Some(ms));
        }
    }
}
