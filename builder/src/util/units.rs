//! Sizes as a newtype, so a count of sectors is never added to a count of bytes by accident.
//! The type is the contract's (its layout plan speaks in it); profiles parse it through serde.

pub use berth_contract::units::{Bytes, GIB, KIB, MIB};

/// Days since 1970-01-01 to (year, month 1–12, day 1–31), proleptic Gregorian (Howard
/// Hinnant's `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `2026-01-01 00:00:00 UTC` for Unix seconds: a build timestamp people read.
pub fn utc_string(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_strings() {
        assert_eq!(super::utc_string(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            super::utc_string(1767225600 + 3723),
            "2026-01-01 01:02:03 UTC"
        );
    }
}
