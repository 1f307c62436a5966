//! Sizes as a newtype, so a count of sectors is never added to a count of bytes by accident.
//! The type is the contract's (its layout plan speaks in it); profiles parse it through serde.

pub use berth_contract::units::{civil_from_days, Bytes, GIB, KIB, MIB};

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
