//! What a DICOM series is to organdose, decided in one place for `study`
//! (`organdose run`, `dose`) and for the appliance's cycle grouping, so both
//! read the same export the same way:
//!
//! - a quantitative SPECT: Modality NM or PT with values in Bq/mL (Units BQML,
//!   or a Real World Value Mapping in Bq/ml), not decay-corrected to the
//!   injection (DecayCorrection NONE or START: the activity at the scan);
//! - a low-dose CT of a SPECT/CT session: a CT sharing the SPECT's
//!   FrameOfReferenceUID; when either has none (anonymised exports blank it),
//!   a CT without contrast agent of the same patient and station acquired
//!   within [`SESSION_WINDOW_H`] of the SPECT;
//! - a diagnostic CT: any other CT (one with ContrastBolusAgent preferred; of a
//!   patient's CTs of several cycles, the latest before the cycle's injection).

use crate::dicom::DicomHeader;
use crate::time::DateTime;

/// How far apart a SPECT and its attenuation CT may be acquired, hours, when
/// they are paired without a FrameOfReferenceUID: a SPECT/CT session (CT, then
/// one or two SPECT beds of 15-30 min) lasts well under this, and a diagnostic
/// CT on the same day is a different visit.
pub(crate) const SESSION_WINDOW_H: f64 = 1.5;

/// What one series is.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    /// NM or PT in Bq/mL: a SPECT time point.
    QuantitativeSpect,
    /// NM or PT in other units (counts, projections): not used.
    NotQuantitative { unit: String },
    /// In Bq/mL but not usable as it is (the reason names the attribute).
    Unusable { why: String },
    /// A CT: low-dose or diagnostic, decided by [`pair_sessions`].
    Ct,
    /// A modality organdose does not use.
    Unused { modality: String },
}

/// The role of the series whose first file is `h`.
pub fn role(h: &DicomHeader) -> Role {
    match h.modality.as_str() {
        "NM" | "PT" => match h.value_unit().as_str() {
            "Bq/mL" if h.decay_correction.as_deref() == Some("ADMIN") => Role::Unusable {
                why: "DecayCorrection (0054,1102) ADMIN: the values are corrected to the injection time, the dosimetry needs the activity at the scan; reconstruct without decay correction (NONE) or to the scan start (START)".into(),
            },
            "Bq/mL" => Role::QuantitativeSpect,
            u => Role::NotQuantitative { unit: u.to_string() },
        },
        "CT" => Role::Ct,
        m => Role::Unused {
            modality: if m.is_empty() {
                "(none)".into()
            } else {
                m.to_string()
            },
        },
    }
}

/// Which CT belongs to which SPECT session.
#[derive(Debug, Clone, Default)]
pub struct Sessions {
    /// Per SPECT (in the order given), the index of its low-dose CT.
    pub ldct: Vec<Option<usize>>,
    /// Indexes of the CTs that are no SPECT's low-dose CT: diagnostic CTs.
    pub diagnostic: Vec<usize>,
    /// How a pairing was made when it was not by FrameOfReferenceUID.
    pub notes: Vec<String>,
}

fn hours_apart(a: &DicomHeader, b: &DicomHeader) -> Option<f64> {
    Some(a.acquisition?.hours_since(&b.acquisition?).abs())
}

/// Pairs each SPECT with the CT of its session (see the module comment);
/// `spects` and `cts` are the first files of their series.
pub fn pair_sessions(spects: &[&DicomHeader], cts: &[&DicomHeader]) -> Sessions {
    let mut out = Sessions::default();
    let mut used = vec![false; cts.len()];
    for s in spects {
        let closest = |ok: &dyn Fn(&DicomHeader) -> bool| {
            cts.iter()
                .enumerate()
                .filter(|(_, c)| c.patient_id == s.patient_id && ok(c))
                .min_by(|a, b| {
                    let da = hours_apart(a.1, s).unwrap_or(f64::MAX);
                    let db = hours_apart(b.1, s).unwrap_or(f64::MAX);
                    da.total_cmp(&db)
                })
                .map(|(k, _)| k)
        };
        let by_for = if s.frame_of_reference_uid.is_empty() {
            None
        } else {
            closest(&|c| c.frame_of_reference_uid == s.frame_of_reference_uid)
        };
        let pick = by_for.or_else(|| {
            let k = closest(&|c| {
                (s.frame_of_reference_uid.is_empty() || c.frame_of_reference_uid.is_empty())
                    && c.contrast_agent.is_none()
                    && (s.station_name.is_empty()
                        || c.station_name.is_empty()
                        || s.station_name == c.station_name)
                    && hours_apart(c, s).is_some_and(|h| h <= SESSION_WINDOW_H)
            })?;
            out.notes.push(format!(
                "{} (SPECT) and {} (CT) have no common FrameOfReferenceUID: paired as one SPECT/CT session by patient, station and acquisition time ({:.0} min apart)",
                s.path.display(),
                cts[k].path.display(),
                hours_apart(cts[k], s).unwrap_or(0.0) * 60.0
            ));
            Some(k)
        });
        if let Some(k) = pick {
            used[k] = true;
        }
        out.ldct.push(pick);
    }
    out.diagnostic = (0..cts.len()).filter(|&k| !used[k]).collect();
    out
}

/// The diagnostic CT among `candidates`: one with a contrast agent first, then
/// (given the injection) the one acquired last on or before the injection day,
/// then the one with the most files (slices). A patient's CTs of several
/// treatment cycles (restaging CTs weeks apart) all reach every cycle of the
/// appliance (a CT of no SPECT session belongs to the patient, not to one
/// cycle): each cycle's own is the latest before its injection, not whichever
/// has the most slices. Days, not seconds, so two reconstructions of one scan
/// still go by their slices.
pub(crate) fn pick_diagnostic(
    candidates: &[(&DicomHeader, usize)],
    injection: Option<&DateTime>,
) -> Option<usize> {
    let timing = |h: &DicomHeader| -> i64 {
        match (h.acquisition, injection) {
            (Some(a), Some(inj)) => {
                // Whole days before the injection (a CT of the injection day is 0).
                let days = (inj.hours_since(&a) / 24.0).floor() as i64;
                if days >= 0 {
                    -days
                } else {
                    // After the injection: below any CT before it.
                    -1_000_000 + days
                }
            }
            // Unknown: after every dated CT, all alike (the old order).
            _ => -2_000_000,
        }
    };
    candidates
        .iter()
        .enumerate()
        .max_by_key(|(_, (h, files))| (h.contrast_agent.is_some(), timing(h), *files))
        .map(|(k, _)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(modality: &str, pid: &str, for_uid: &str, acq: &str) -> DicomHeader {
        DicomHeader {
            modality: modality.into(),
            patient_id: pid.into(),
            frame_of_reference_uid: for_uid.into(),
            acquisition: DateTime::parse_iso(acq),
            path: format!("{modality}-{acq}").into(),
            ..Default::default()
        }
    }

    #[test]
    fn roles_from_modality_and_units() {
        let mut nm = h("NM", "P", "", "2026-03-01T08:00:00");
        nm.units = Some("BQML".into());
        assert_eq!(role(&nm), Role::QuantitativeSpect);
        // PT in Bq/mL is a quantitative SPECT stored as PT.
        let mut pt = nm.clone();
        pt.modality = "PT".into();
        assert_eq!(role(&pt), Role::QuantitativeSpect);
        pt.decay_correction = Some("START".into());
        assert_eq!(role(&pt), Role::QuantitativeSpect);
        pt.decay_correction = Some("ADMIN".into());
        assert!(matches!(role(&pt), Role::Unusable { why } if why.contains("(0054,1102)")));
        // Only a Real World Value Mapping in Bq/ml, no Units.
        let mut rw = h("NM", "P", "", "2026-03-01T08:00:00");
        rw.real_world = Some((0.5, 0.0, "Bq/ml".into()));
        assert_eq!(role(&rw), Role::QuantitativeSpect);
        let mut counts = nm.clone();
        counts.units = Some("CNTS".into());
        assert_eq!(
            role(&counts),
            Role::NotQuantitative {
                unit: "CNTS".into()
            }
        );
        assert_eq!(
            role(&h("SR", "P", "", "")),
            Role::Unused {
                modality: "SR".into()
            }
        );
        assert_eq!(role(&h("CT", "P", "", "")), Role::Ct);
    }

    #[test]
    fn frame_of_reference_pairs_first_then_time_when_it_is_blank() {
        let s24 = h("NM", "P", "F24", "2026-03-02T08:00:00");
        let s0 = h("NM", "P", "", "2026-03-01T08:30:00");
        let ct24 = h("CT", "P", "F24", "2026-03-02T07:55:00");
        // Blank frame of reference, same session by time.
        let ct0 = h("CT", "P", "", "2026-03-01T08:20:00");
        let mut diag = h("CT", "P", "", "2026-03-01T07:30:00");
        diag.contrast_agent = Some("Iomeprol".into());
        // Another patient's CT at the same time is never paired.
        let other = h("CT", "Q", "", "2026-03-01T08:29:00");
        let ses = pair_sessions(&[&s24, &s0], &[&ct24, &ct0, &diag, &other]);
        assert_eq!(ses.ldct, vec![Some(0), Some(1)]);
        assert_eq!(ses.diagnostic, vec![2, 3]);
        assert_eq!(ses.notes.len(), 1, "{:?}", ses.notes);
        // Too far apart: no session.
        let late = h("NM", "P", "", "2026-03-01T11:00:00");
        let ses = pair_sessions(&[&late], &[&ct0]);
        assert_eq!(ses.ldct, vec![None]);
        assert_eq!(ses.diagnostic, vec![0]);
        // A different station is a different scanner.
        let mut a = s0.clone();
        a.station_name = "SPECTCT1".into();
        let mut b = ct0.clone();
        b.station_name = "CT2".into();
        assert_eq!(pair_sessions(&[&a], &[&b]).ldct, vec![None]);
    }

    #[test]
    fn diagnostic_prefers_contrast_then_slices() {
        let plain = h("CT", "P", "", "");
        let mut contrast = plain.clone();
        contrast.contrast_agent = Some("Iomeprol".into());
        assert_eq!(
            pick_diagnostic(&[(&plain, 300), (&contrast, 100)], None),
            Some(1)
        );
        assert_eq!(
            pick_diagnostic(&[(&plain, 300), (&plain, 400)], None),
            Some(1)
        );
        assert_eq!(pick_diagnostic(&[], None), None);
    }

    #[test]
    fn diagnostic_of_a_cycle_is_its_latest_ct_before_the_injection() {
        // Restaging CTs of a course: 3 weeks before cycle 1, 2 weeks before
        // cycle 2 (8 weeks later), one after cycle 2.
        let mut c1 = h("CT", "P", "", "2026-02-08T10:00:00");
        c1.contrast_agent = Some("Iomeprol".into());
        let mut c2 = c1.clone();
        c2.acquisition = DateTime::parse_iso("2026-04-12T10:00:00");
        let mut c3 = c1.clone();
        c3.acquisition = DateTime::parse_iso("2026-05-20T10:00:00");
        let cands = [(&c1, 400), (&c2, 100), (&c3, 500)];
        let inj1 = DateTime::parse_iso("2026-03-01T08:00:00").unwrap();
        let inj2 = DateTime::parse_iso("2026-04-26T08:00:00").unwrap();
        assert_eq!(pick_diagnostic(&cands, Some(&inj1)), Some(0));
        assert_eq!(pick_diagnostic(&cands, Some(&inj2)), Some(1));
        // A CT after the injection, even of the same day, ranks below one before it.
        let mut same_day = c1.clone();
        same_day.acquisition = DateTime::parse_iso("2026-03-01T09:00:00");
        assert_eq!(
            pick_diagnostic(&[(&c1, 400), (&same_day, 100)], Some(&inj1)),
            Some(0)
        );
        // Contrast still comes first.
        let mut plain = c2.clone();
        plain.contrast_agent = None;
        assert_eq!(
            pick_diagnostic(&[(&c1, 400), (&plain, 100)], Some(&inj2)),
            Some(0)
        );
    }
}
