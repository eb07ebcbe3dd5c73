//! Calendar arithmetic for synthetic acquisition times (no wall clock: every date
//! comes from the seed). Seconds since 1970-01-01T00:00:00, no time zone.

/// (year, month, day) from days since 1970-01-01 (H. Hinnant's civil_from_days).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since 1970-01-01 of a civil date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp(pub i64);

impl Stamp {
    fn parts(self) -> (i64, u32, u32, u32, u32, u32) {
        let days = self.0.div_euclid(86_400);
        let sec = self.0.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        (
            y,
            m,
            d,
            (sec / 3600) as u32,
            ((sec / 60) % 60) as u32,
            (sec % 60) as u32,
        )
    }
    /// DICOM DA: YYYYMMDD.
    pub fn da(self) -> String {
        let (y, m, d, ..) = self.parts();
        format!("{y:04}{m:02}{d:02}")
    }
    /// DICOM TM: HHMMSS.
    pub fn tm(self) -> String {
        let (_, _, _, h, mi, s) = self.parts();
        format!("{h:02}{mi:02}{s:02}")
    }
    /// DICOM DT: YYYYMMDDHHMMSS.
    pub fn dt(self) -> String {
        format!("{}{}", self.da(), self.tm())
    }
    /// ISO 8601 local time: YYYY-MM-DDTHH:MM:SS.
    pub fn iso(self) -> String {
        let (y, m, d, h, mi, s) = self.parts();
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}")
    }
    pub fn plus_hours(self, h: f64) -> Stamp {
        Stamp(self.0 + (h * 3600.0).round() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn round_trip_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        let s = Stamp(days_from_civil(2024, 12, 31) * 86_400 + 23 * 3600 + 30 * 60);
        assert_eq!(s.plus_hours(1.0).iso(), "2025-01-01T00:30:00");
        assert_eq!(s.dt(), "20241231233000");
    }
}
