//! UTC timestamps formatted by hand from `SystemTime` (SigV4 dates, record timestamps): no
//! date crate needed for two formats.

use std::time::{SystemTime, UNIX_EPOCH};

/// A UTC instant at whole-second precision.
#[derive(Clone, Copy, Debug)]
pub struct AmzTime {
    y: i64,
    mo: u32,
    d: u32,
    h: u32,
    mi: u32,
    s: u32,
}

impl AmzTime {
    pub fn now() -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self::from_unix(secs as i64)
    }

    pub fn from_unix(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, mo, d) = berth_contract::units::civil_from_days(days);
        AmzTime {
            y,
            mo: mo as u32,
            d: d as u32,
            h: (rem / 3600) as u32,
            mi: (rem % 3600 / 60) as u32,
            s: (rem % 60) as u32,
        }
    }

    /// `20150830T123600Z`
    pub fn amz_date(&self) -> String {
        format!("{}T{:02}{:02}{:02}Z", self.date(), self.h, self.mi, self.s)
    }

    /// `20150830`
    pub fn date(&self) -> String {
        format!("{:04}{:02}{:02}", self.y, self.mo, self.d)
    }

    /// `2015-08-30T12:36:00Z`
    pub fn rfc3339(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            self.y, self.mo, self.d, self.h, self.mi, self.s
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(AmzTime::from_unix(0).rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(
            AmzTime::from_unix(951_782_400).rfc3339(),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            AmzTime::from_unix(1_440_938_160).amz_date(),
            "20150830T123600Z"
        );
        assert_eq!(
            AmzTime::from_unix(4_102_444_799).rfc3339(),
            "2099-12-31T23:59:59Z"
        );
    }
}
