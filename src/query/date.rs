//! Dates in queries: ISO 8601 dates and times as milliseconds since the Unix epoch.

/// Parses `YYYY-MM-DD`, optionally followed by `THH:MM[:SS[.fraction]]` and `Z` or `±HH:MM`
/// (UTC when absent), into milliseconds since the Unix epoch.
pub fn parse_date(text: &str) -> Option<i64> {
    let number = |s: &str| -> Option<i64> {
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse().ok())
            .flatten()
    };
    let (date, time) = match text.split_once(['T', 't', ' ']) {
        Some((date, time)) => (date, Some(time)),
        None => (text, None),
    };
    let mut parts = date.splitn(3, '-');
    let (year, month, day) = (
        number(parts.next()?)?,
        number(parts.next()?)?,
        number(parts.next()?)?,
    );
    if date.len() != 10 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let mut ms = days_from_civil(year, month, day) * 86_400_000;
    if let Some(time) = time {
        let (clock, offset_ms) = if let Some(clock) = time.strip_suffix(['Z', 'z']) {
            (clock, 0)
        } else if let Some(at) = time.rfind(['+', '-']) {
            let (clock, zone) = time.split_at(at);
            let (hours, minutes) = zone[1..].split_once(':')?;
            let offset = (number(hours)? * 60 + number(minutes)?) * 60_000;
            (
                clock,
                if zone.starts_with('-') {
                    -offset
                } else {
                    offset
                },
            )
        } else {
            (time, 0)
        };
        let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
        let mut fields = hms.split(':');
        let hours = number(fields.next()?)?;
        let minutes = number(fields.next()?)?;
        let seconds = fields.next().map_or(Some(0), number)?;
        if fields.next().is_some() || hours > 23 || minutes > 59 || seconds > 60 {
            return None;
        }
        let millis = match fraction {
            "" => 0,
            digits => number(&format!("{digits:0<3}")[..3])?,
        };
        ms += ((hours * 60 + minutes) * 60 + seconds) * 1000 + millis - offset_ms;
    }
    Some(ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
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
        for bad in [
            "2001",
            "2001-13-01",
            "2001-1-1",
            "2001-01-01T25:00",
            "soon",
            "2001-01-01T00:00:00+0100",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }
}
