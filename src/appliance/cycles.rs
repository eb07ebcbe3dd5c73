//! Groups complete series into therapy cycles: one patient (PatientID) and one
//! injection (RadiopharmaceuticalStartDateTime). A CT joins the cycle of the SPECT
//! that shares its FrameOfReferenceUID (same SPECT/CT session); a CT of no SPECT
//! session is a diagnostic CT and joins every cycle of its patient.

use crate::io::dicom::DicomSeries;
use std::collections::BTreeMap;

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

/// Cycles, plus series that cannot belong to any (with the reason).
pub fn group_cycles(ready: &[DicomSeries]) -> (Vec<CycleInput>, Vec<(DicomSeries, String)>) {
    let mut cycles: BTreeMap<(String, String), CycleInput> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut for_to_cycle: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut cts = Vec::new();
    for s in ready {
        let Some(h) = s.files.first() else { continue };
        match h.modality.as_str() {
            "NM" | "PT" => {
                let start = h
                    .radiopharmaceutical
                    .as_ref()
                    .and_then(|r| r.start_datetime);
                let Some(start) = start else {
                    problems.push((
                        s.clone(),
                        "SPECT without RadiopharmaceuticalStartDateTime: cannot tell its therapy cycle"
                            .to_string(),
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
                });
                c.series.push(s.clone());
                c.timepoints += 1;
                if !h.frame_of_reference_uid.is_empty() {
                    for_to_cycle.insert(h.frame_of_reference_uid.clone(), key);
                }
            }
            "CT" => cts.push(s),
            m => problems.push((s.clone(), format!("modality {m} is not used by organdose"))),
        }
    }
    for s in cts {
        let Some(h) = s.files.first() else { continue };
        if let Some(key) = for_to_cycle.get(&h.frame_of_reference_uid) {
            if let Some(c) = cycles.get_mut(key) {
                c.series.push(s.clone());
            }
            continue;
        }
        // Diagnostic CT: every cycle of the patient (none yet: it waits).
        for ((pid, _), c) in cycles.iter_mut() {
            if *pid == h.patient_id {
                c.series.push(s.clone());
            }
        }
    }
    (cycles.into_values().collect(), problems)
}
