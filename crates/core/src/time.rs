//! Date-times as DICOM writes them (DA, TM, DT), without time zones: a console
//! exports every series of a therapy cycle in its own local time, so differences
//! between them are what matters. Converted to seconds on a proleptic Gregorian
//! calendar (Howard Hinnant's days-from-civil algorithm).

use dicom_core::value::deserialize::{
    parse_date_partial, parse_datetime_partial, parse_time_partial,
};
use dicom_core::value::{DicomDate, DicomTime};
use serde::{Serialize, Serializer};
use std::fmt;

/// A naive (zone-less) date and time, to microseconds.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct DateTime {
    /// Seconds since 1970-01-01T00:00:00 (naive).
    secs: f64,
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A run of ASCII digits as a number (used by the ISO 8601 parser).
fn num(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl DateTime {
    pub(crate) fn from_parts(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: f64) -> Option<Self> {
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || !(0..=23).contains(&h) {
            return None;
        }
        if !(0..=59).contains(&mi) || !(0.0..61.0).contains(&s) {
            return None;
        }
        let days = days_from_civil(y, mo, d);
        Some(DateTime {
            secs: days as f64 * 86400.0 + (h * 3600 + mi * 60) as f64 + s,
        })
    }

    /// DICOM DA ("YYYYMMDD"; the old "YYYY.MM.DD" too) plus TM ("HH", "HHMM",
    /// "HHMMSS", "HHMMSS.FFFFFF"; the old "HH:MM:SS" too; empty is midnight).
    /// Parsed by dicom-core, on bytes: a value with non-ASCII bytes is refused,
    /// never sliced inside a character.
    pub fn from_dicom_da_tm(da: &str, tm: &str) -> Option<Self> {
        let da = da.trim().replace('.', "");
        let (date, rest) = parse_date_partial(da.as_bytes()).ok()?;
        if !rest.is_empty() {
            return None;
        }
        let tm = tm.trim().replace(':', "");
        let time = if tm.is_empty() {
            None
        } else {
            let (t, rest) = parse_time_partial(tm.as_bytes()).ok()?;
            if !rest.is_empty() {
                return None;
            }
            Some(t)
        };
        Self::from_dicom_parts(&date, time.as_ref())
    }

    /// A full dicom-core date (year, month and day) and an optional time.
    fn from_dicom_parts(date: &DicomDate, time: Option<&DicomTime>) -> Option<Self> {
        let (y, mo, d) = (*date.year(), *date.month()?, *date.day()?);
        let (h, mi, sec, micro) = match time {
            Some(t) => (
                *t.hour(),
                t.minute().copied().unwrap_or(0),
                t.second().copied().unwrap_or(0),
                t.fraction_micro().unwrap_or(0),
            ),
            None => (0, 0, 0, 0),
        };
        Self::from_parts(
            y as i64,
            mo as i64,
            d as i64,
            h as i64,
            mi as i64,
            sec as f64 + micro as f64 * 1e-6,
        )
    }

    /// DICOM DT ("YYYYMMDDHHMMSS.FFFFFF", optionally with "&ZZXX", which is
    /// ignored: see the module comment).
    pub fn from_dicom_dt(dt: &str) -> Option<Self> {
        let v = parse_datetime_partial(dt.trim().as_bytes()).ok()?;
        Self::from_dicom_parts(v.date(), v.time())
    }

    /// ISO 8601 "YYYY-MM-DDTHH:MM:SS[.ffffff]".
    pub fn parse_iso(s: &str) -> Option<Self> {
        let s = s.trim().trim_end_matches('Z');
        let (d, t) = s.split_once('T').or_else(|| s.split_once(' '))?;
        let mut dp = d.split('-');
        let (y, mo, da) = (num(dp.next()?)?, num(dp.next()?)?, num(dp.next()?)?);
        let mut tp = t.split(':');
        let h = num(tp.next()?)?;
        let mi = num(tp.next()?)?;
        let sec: f64 = tp.next().unwrap_or("0").parse().ok()?;
        Self::from_parts(y, mo, da, h, mi, sec)
    }

    pub fn from_epoch_seconds(secs: f64) -> Self {
        DateTime { secs }
    }

    pub fn epoch_seconds(&self) -> f64 {
        self.secs
    }

    /// Hours from `earlier` to `self`.
    pub fn hours_since(&self, earlier: &DateTime) -> f64 {
        (self.secs - earlier.secs) / 3600.0
    }

    pub fn plus_hours(&self, h: f64) -> DateTime {
        DateTime {
            secs: self.secs + h * 3600.0,
        }
    }

    fn parts(&self) -> (i64, i64, i64, i64, i64, f64) {
        let days = (self.secs / 86400.0).floor() as i64;
        let rem = self.secs - days as f64 * 86400.0;
        let (y, m, d) = civil_from_days(days);
        let h = (rem / 3600.0).floor() as i64;
        let mi = ((rem - h as f64 * 3600.0) / 60.0).floor() as i64;
        let s = rem - h as f64 * 3600.0 - mi as f64 * 60.0;
        (y, m, d, h, mi, s)
    }

    /// DICOM DA and TM strings.
    pub(crate) fn to_dicom_da_tm(self) -> (String, String) {
        let (y, m, d, h, mi, s) = self.parts();
        let whole = s.floor();
        let micros = ((s - whole) * 1e6).round() as i64;
        let tm = if micros > 0 {
            format!("{h:02}{mi:02}{:02}.{micros:06}", whole as i64)
        } else {
            format!("{h:02}{mi:02}{:02}", whole as i64)
        };
        (format!("{y:04}{m:02}{d:02}"), tm)
    }

    /// DICOM DA ("YYYYMMDD").
    pub fn da(&self) -> String {
        self.to_dicom_da_tm().0
    }

    /// DICOM TM ("HHMMSS", with a fraction when there is one).
    pub fn tm(&self) -> String {
        self.to_dicom_da_tm().1
    }

    /// DICOM DT string.
    pub fn to_dicom_dt(&self) -> String {
        let (da, tm) = self.to_dicom_da_tm();
        format!("{da}{tm}")
    }
}

impl fmt::Display for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d, h, mi, s) = self.parts();
        if (s - s.round()).abs() < 1e-6 {
            write!(
                f,
                "{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{:02}",
                s.round() as i64
            )
        } else {
            write!(f, "{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:09.6}")
        }
    }
}

impl Serialize for DateTime {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dicom_forms_and_differences() {
        let a = DateTime::from_dicom_da_tm("20260301", "0815").unwrap();
        let b = DateTime::from_dicom_dt("20260304081500.000000+0100").unwrap();
        assert_eq!(b.hours_since(&a), 72.0);
        assert_eq!(a.to_string(), "2026-03-01T08:15:00");
        // Across a leap day: 2024-02-28 12:00 -> 2024-03-01 12:00 is 48 h.
        let c = DateTime::from_dicom_da_tm("20240228", "120000").unwrap();
        let d = DateTime::parse_iso("2024-03-01T12:00:00").unwrap();
        assert_eq!(d.hours_since(&c), 48.0);
        assert_eq!(d.to_dicom_da_tm(), ("20240301".into(), "120000".into()));
        assert_eq!(DateTime::from_dicom_da_tm("20241301", "00"), None);
        assert_eq!(DateTime::from_dicom_da_tm("2024xx01", "00"), None);
        let e = DateTime::from_dicom_da_tm("19991231", "235959.5").unwrap();
        assert_eq!(e.to_dicom_dt(), "19991231235959.500000");
        // Old forms with separators; a DT without a time is midnight.
        assert_eq!(
            DateTime::from_dicom_da_tm("2026.03.01", "08:15:00"),
            Some(a)
        );
        assert_eq!(
            DateTime::from_dicom_dt("20260301").map(|v| v.to_string()),
            Some("2026-03-01T00:00:00".into())
        );
        assert_eq!(DateTime::from_dicom_dt("20260301081500-0500"), Some(a));
    }

    /// Issue 20 finding 8: values with multi-byte characters were sliced by byte
    /// index (a panic on the ingest thread); they are refused now.
    #[test]
    fn non_ascii_dicom_date_times_are_refused_not_panics() {
        for (da, tm) in [
            ("20260é1", "0815"),
            ("20260301", "0é15"),
            ("2026030é", "0815"),
            ("20260301", "08é5"),
            ("2026é0301", "081500"),
            ("20260301", "0é"),
            ("é", ""),
            ("20260301", "081500.é"),
            ("20260301", "08150é.5"),
        ] {
            assert_eq!(DateTime::from_dicom_da_tm(da, tm), None, "{da} {tm}");
        }
        for dt in [
            "2026030é1",
            "2026030é",
            "20260301é815",
            "2026030108150é",
            "202603010815+0é00",
            "ééééééééé",
        ] {
            assert_eq!(DateTime::from_dicom_dt(dt), None, "{dt}");
        }
    }
}
