//! UTC timestamps for audit lines: microseconds since the Unix epoch, formatted and
//! parsed as RFC 3339 with exactly six fractional digits and a `Z`
//! (`2026-11-26T12:00:00.123456Z`).
//!
//! Only this one fixed shape is written or accepted; no time zones, no leap seconds,
//! no calendar arithmetic beyond days <-> civil dates. Nothing here reads files.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch for `t` (negative before 1970).
pub fn micros(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |m| -m),
    }
}

/// 0000-01-01T00:00:00.000000Z and 9999-12-31T23:59:59.999999Z, in microseconds
/// since the epoch: the times a 4-digit year can write.
const FIRST_US: i64 = -62_167_219_200_000_000;
const LAST_US: i64 = 253_402_300_799_999_999;

/// Formats microseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn format(us: i64) -> String {
    let mut out = Vec::with_capacity(27);
    write(&mut out, us);
    String::from_utf8(out).expect("the formatter writes ASCII")
}

/// Appends [`format`]'s text for `us` to `out` without allocating. A time
/// outside years 0000-9999 is written as the nearest of them.
pub fn write(out: &mut Vec<u8>, us: i64) {
    // Only what `parse` reads back: a clock outside years 0000-9999 is written
    // as the nearest end, so that the line stays verifiable.
    let us = us.clamp(FIRST_US, LAST_US);
    let secs = us.div_euclid(1_000_000);
    let frac = us.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    let mut digits = |at: usize, width: usize, mut v: i64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    digits(0, 4, y);
    digits(5, 2, m);
    digits(8, 2, d);
    digits(11, 2, sod / 3600);
    digits(14, 2, sod / 60 % 60);
    digits(17, 2, sod % 60);
    digits(20, 6, frac);
    out.extend_from_slice(&b);
}

/// Parses exactly the shape [`format`] writes; `None` for anything else.
pub fn parse(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 27 {
        return None;
    }
    let punct = [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (26, b'Z'),
    ];
    if punct.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        let part = &b[from..to];
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec, frac) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 26)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 59
    {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    Some((days * 86_400 + h * 3600 + mi * 60 + sec) * 1_000_000 + frac)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's days_from_civil / civil_from_days (public domain algorithms).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(format(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(format(1_709_210_096_123_456), "2024-02-29T12:34:56.123456Z");
        assert_eq!(format(951_782_400_000_001), "2000-02-29T00:00:00.000001Z");
    }

    #[test]
    fn the_buffer_writer_matches_the_reference_text() {
        let reference = |us: i64| {
            let secs = us.div_euclid(1_000_000);
            let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
            let sod = secs.rem_euclid(86_400);
            format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
                sod / 3600,
                sod / 60 % 60,
                sod % 60,
                us.rem_euclid(1_000_000)
            )
        };
        let mut us: i64 = FIRST_US;
        while us <= LAST_US {
            assert_eq!(format(us), reference(us));
            us += 7_777_777_777_777;
        }
        assert_eq!(format(LAST_US), reference(LAST_US));
    }

    #[test]
    fn times_beyond_four_digit_years_are_written_as_the_nearest_end() {
        let (first, last) = ("0000-01-01T00:00:00.000000Z", "9999-12-31T23:59:59.999999Z");
        assert_eq!(format(FIRST_US), first);
        assert_eq!(format(LAST_US), last);
        for us in [LAST_US + 1, 253_402_300_800_000_000, i64::MAX] {
            assert_eq!(format(us), last);
        }
        for us in [FIRST_US - 1, i64::MIN] {
            assert_eq!(format(us), first);
        }
        assert_eq!(parse(last), Some(LAST_US));
        assert_eq!(parse(first), Some(FIRST_US));
    }

    #[test]
    fn round_trips() {
        for us in [
            0,
            1,
            999_999,
            1_709_210_096_123_456,
            4_102_444_799_999_999,
            86_399_000_000,
        ] {
            assert_eq!(parse(&format(us)), Some(us), "{}", format(us));
        }
    }

    #[test]
    fn rejects_other_shapes() {
        for s in [
            "2024-02-29T12:34:56Z",
            "2024-02-29T12:34:56.123456+00:00",
            "2023-02-29T12:34:56.123456Z",
            "2024-13-01T00:00:00.000000Z",
            "2024-01-01 00:00:00.000000Z",
            "2024-01-01T24:00:00.000000Z",
            "2024-01-01T00:00:00.00000aZ",
        ] {
            assert_eq!(parse(s), None, "{s}");
        }
    }
}
