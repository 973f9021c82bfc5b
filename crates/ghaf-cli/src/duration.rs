//! Durations on the command line: a whole number with the unit `s`, `m`, `h` or `d`.

/// Parses a duration such as `30d`, `12h`, `90m` or `3600s` into seconds.
pub fn parse_duration_seconds(value: &str) -> Result<u64, String> {
    let hint = "use a whole number with the unit s, m, h or d, such as 30d, 12h or 3600s";
    let text = value.trim();
    let Some(unit) = text.chars().last() else {
        return Err(format!("invalid duration {value:?}: {hint}"));
    };
    let seconds_per_unit: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        c if c.is_ascii_digit() => {
            return Err(format!(
                "invalid duration {value:?}: the unit is missing; {hint}"
            ));
        }
        _ => {
            return Err(format!(
                "invalid duration {value:?}: unknown unit {unit:?}; {hint}"
            ));
        }
    };
    let number = &text[..text.len() - unit.len_utf8()];
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid duration {value:?}: {hint}"));
    }
    let count: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {value:?}: the number is too large"))?;
    if count == 0 {
        return Err(format!(
            "invalid duration {value:?}: it must be longer than zero"
        ));
    }
    count
        .checked_mul(seconds_per_unit)
        .ok_or_else(|| format!("invalid duration {value:?}: the number is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_convert_to_seconds() {
        assert_eq!(parse_duration_seconds("3600s"), Ok(3_600));
        assert_eq!(parse_duration_seconds("90m"), Ok(5_400));
        assert_eq!(parse_duration_seconds("12h"), Ok(43_200));
        assert_eq!(parse_duration_seconds("30d"), Ok(2_592_000));
        assert_eq!(parse_duration_seconds(" 1d "), Ok(86_400));
    }

    #[test]
    fn missing_unit_is_rejected() {
        let error = parse_duration_seconds("30").unwrap_err();
        assert!(error.contains("unit is missing"), "{error}");
    }

    #[test]
    fn malformed_values_are_rejected() {
        for value in ["", "d", "1.5h", "-1d", "1w", "1 d", "ten s", "1dd"] {
            assert!(parse_duration_seconds(value).is_err(), "{value:?}");
        }
    }

    #[test]
    fn zero_is_rejected() {
        assert!(
            parse_duration_seconds("0s")
                .unwrap_err()
                .contains("longer than zero")
        );
    }

    #[test]
    fn overflow_is_rejected() {
        assert!(parse_duration_seconds("99999999999999999999s").is_err());
        assert!(parse_duration_seconds("18446744073709551615d").is_err());
    }
}
