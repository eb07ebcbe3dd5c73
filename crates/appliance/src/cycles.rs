//! Groups complete series into therapy cycles: one patient (PatientID) and one
//! injection (RadiopharmaceuticalStartDateTime). A CT joins the cycle of the SPECT
//! whose session it belongs to ([`crate::classify::pair_sessions`]: the same
//! FrameOfReferenceUID, or without one the same patient, station and time); a
//! CT of no SPECT session is a diagnostic CT and joins every cycle of its patient.

use crate::classify::{self, Role};
use crate::io::corrections::References;
use crate::io::dicom::DicomSeries;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Everything known so far about one cycle.
#[derive(Debug, Clone)]
pub struct CycleInput {
    /// File-name-safe id: `<patient>_<injection YYYYMMDDTHHMMSS>`.
    pub id: String,
    pub patient_id: String,
    pub injection: String,
    pub series: Vec<DicomSeries>,
    /// Number of SPECT time points present.
    pub timepoints: usize,
    /// Said in the summary's warnings (why a result is held from final).
    pub notes: Vec<String>,
    /// A physicist's corrected RT Structure Sets / SEGs that refer to one of the
    /// cycle's CTs (issue 36): they replace the masks of their organs.
    pub corrections: Vec<PathBuf>,
}

/// A correction file found in the export folder, with what it refers to.
#[derive(Debug, Clone)]
pub(crate) struct CorrectionFile {
    pub path: PathBuf,
    /// "RT Structure Set" or "SEG".
    pub kind: &'static str,
    pub refs: References,
}

/// Attaches each correction to every cycle one of whose CTs it refers to (by
/// Series Instance UID, else frame of reference and SOP instances); returns
/// the corrections no cycle knows, with the reason (they are quarantined).
pub(crate) fn attach_corrections(
    cycles: &mut [CycleInput],
    corrections: &[CorrectionFile],
) -> Vec<(PathBuf, String)> {
    let mut unknown = Vec::new();
    for corr in corrections {
        let mut matched = false;
        for c in cycles.iter_mut() {
            let names_a_ct = c.series.iter().any(|s| {
                let Some(h) = s.files.first() else {
                    return false;
                };
                if classify::role(h) != Role::Ct {
                    return false;
                }
                let sops: Vec<String> =
                    s.files.iter().map(|f| f.sop_instance_uid.clone()).collect();
                corr.refs.name(&s.uid, &h.frame_of_reference_uid, &sops)
            });
            if names_a_ct {
                matched = true;
                if !c.corrections.contains(&corr.path) {
                    c.corrections.push(corr.path.clone());
                }
            }
        }
        if !matched {
            unknown.push((
                corr.path.clone(),
                format!(
                    "{}: corrected {} refers to {}, which is no CT of a therapy cycle this box knows; nothing was recomputed",
                    corr.path.display(),
                    corr.kind,
                    corr.refs.describe()
                ),
            ));
        }
    }
    unknown
}

fn safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Cycles, plus series that cannot belong to any (with the reason). What a
/// series is, and which CT belongs to which SPECT session, is decided by
/// [`crate::classify`], as `organdose run` decides it.
pub(crate) fn group_cycles(ready: &[DicomSeries]) -> (Vec<CycleInput>, Vec<(DicomSeries, String)>) {
    let mut cycles: BTreeMap<(String, String), CycleInput> = BTreeMap::new();
    let mut problems = Vec::new();
    // SPECTs with their cycle key, and CTs, by first file.
    let mut spects: Vec<(&DicomSeries, (String, String))> = Vec::new();
    let mut cts: Vec<&DicomSeries> = Vec::new();
    for s in ready {
        let Some(h) = s.files.first() else { continue };
        match classify::role(h) {
            Role::QuantitativeSpect => {
                let start = h
                    .radiopharmaceutical
                    .as_ref()
                    .and_then(|r| r.start_datetime);
                let Some(start) = start else {
                    problems.push((
                        s.clone(),
                        format!(
                            "{}: SPECT without RadiopharmaceuticalStartDateTime (0018,1078) or StartTime (0018,1072) in the RadiopharmaceuticalInformationSequence: cannot tell its therapy cycle",
                            h.path.display()
                        ),
                    ));
                    continue;
                };
                let inj = start.to_dicom_dt();
                let key = (h.patient_id.clone(), inj.clone());
                let id = format!(
                    "{}_{}T{}",
                    safe(&h.patient_id),
                    inj.get(0..8).unwrap_or_default(),
                    inj.get(8..14).unwrap_or_default()
                );
                let c = cycles.entry(key.clone()).or_insert_with(|| CycleInput {
                    id,
                    patient_id: h.patient_id.clone(),
                    injection: start.to_string(),
                    series: Vec::new(),
                    timepoints: 0,
                    notes: Vec::new(),
                    corrections: Vec::new(),
                });
                c.series.push(s.clone());
                c.timepoints += 1;
                spects.push((s, key));
            }
            Role::NotQuantitative { unit } => problems.push((
                s.clone(),
                format!(
                    "{}: {} series in {unit}, not Bq/mL (Units BQML or a Real World Value Mapping in Bq/ml): not a quantitative reconstruction; export the quantitative SPECT",
                    h.path.display(),
                    h.modality
                ),
            )),
            Role::Unusable { why } => {
                problems.push((s.clone(), format!("{}: {why}", h.path.display())))
            }
            Role::Ct => cts.push(s),
            Role::Unused { modality } => problems.push((
                s.clone(),
                format!("modality {modality} is not used by organdose"),
            )),
        }
    }
    let spect_heads: Vec<_> = spects.iter().filter_map(|(s, _)| s.files.first()).collect();
    let ct_heads: Vec<_> = cts.iter().filter_map(|s| s.files.first()).collect();
    let sessions = classify::pair_sessions(&spect_heads, &ct_heads);
    for ((_, key), ldct) in spects.iter().zip(&sessions.ldct) {
        if let (Some(k), Some(c)) = (ldct, cycles.get_mut(key)) {
            if !c.series.iter().any(|x| x.uid == cts[*k].uid) {
                c.series.push(cts[*k].clone());
            }
        }
    }
    for &k in &sessions.diagnostic {
        let s = cts[k];
        let Some(h) = s.files.first() else { continue };
        // Diagnostic CT: every cycle of the patient (none yet: it waits).
        for ((pid, _), c) in cycles.iter_mut() {
            if *pid == h.patient_id {
                c.series.push(s.clone());
            }
        }
    }
    (cycles.into_values().collect(), problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::dicom::DicomHeader;

    fn series(uid: &str, modality: &str, frame: &str, sops: &[&str]) -> DicomSeries {
        DicomSeries {
            uid: uid.into(),
            files: sops
                .iter()
                .map(|s| DicomHeader {
                    modality: modality.into(),
                    patient_id: "P1".into(),
                    series_uid: uid.into(),
                    frame_of_reference_uid: frame.into(),
                    sop_instance_uid: s.to_string(),
                    ..Default::default()
                })
                .collect(),
            identity: None,
            unreadable: Vec::new(),
        }
    }

    fn cycle(id: &str, series: Vec<DicomSeries>) -> CycleInput {
        CycleInput {
            id: id.into(),
            patient_id: "P1".into(),
            injection: String::new(),
            series,
            timepoints: 1,
            notes: Vec::new(),
            corrections: Vec::new(),
        }
    }

    #[test]
    fn a_correction_joins_the_cycle_of_its_ct_and_an_unknown_one_is_named() {
        let mut cycles = vec![
            cycle(
                "A",
                vec![
                    series("ct-a", "CT", "F-A", &["a1", "a2"]),
                    series("nm-a", "NM", "F-A", &["n1"]),
                ],
            ),
            cycle("B", vec![series("ct-b", "CT", "F-B", &["b1"])]),
        ];
        let by_series = CorrectionFile {
            path: "x/by_series.dcm".into(),
            kind: "RT Structure Set",
            refs: References {
                series_uids: vec!["ct-b".into()],
                ..Default::default()
            },
        };
        // Frame of reference plus one of the CT's instances (no series UID).
        let by_frame = CorrectionFile {
            path: "x/by_frame.dcm".into(),
            kind: "SEG",
            refs: References {
                frame_of_reference_uids: vec!["F-A".into()],
                sop_instance_uids: ["a2".to_string()].into_iter().collect(),
                ..Default::default()
            },
        };
        // The SPECT's series is no CT: a correction on it has nothing to replace.
        let on_spect = CorrectionFile {
            path: "x/on_spect.dcm".into(),
            kind: "SEG",
            refs: References {
                series_uids: vec!["nm-a".into()],
                ..Default::default()
            },
        };
        let unknown = attach_corrections(&mut cycles, &[by_series, by_frame, on_spect.clone()]);
        assert_eq!(cycles[0].corrections, vec![PathBuf::from("x/by_frame.dcm")]);
        assert_eq!(
            cycles[1].corrections,
            vec![PathBuf::from("x/by_series.dcm")]
        );
        assert_eq!(unknown.len(), 1);
        assert_eq!(unknown[0].0, on_spect.path);
        assert!(unknown[0].1.contains("series nm-a"), "{}", unknown[0].1);
    }
}
