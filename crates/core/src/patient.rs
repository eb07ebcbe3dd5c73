//! Who a result belongs to, as the DICOM headers say: what decides whether two
//! therapy cycles are one patient's (the treatment history, issue 37).

use serde::{Deserialize, Serialize};

/// Patient ID with its issuer, birth date and sex (DICOM PatientID (0010,0020),
/// IssuerOfPatientID (0010,0021), PatientBirthDate (0010,0030), PatientSex
/// (0010,0040)); empty where the export does not give it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientIdentity {
    pub id: String,
    #[serde(default)]
    pub issuer: String,
    /// YYYYMMDD as DICOM writes it.
    #[serde(default)]
    pub birth_date: String,
    /// M, F or O.
    #[serde(default)]
    pub sex: String,
}

impl PatientIdentity {
    /// Only an ID (files that give nothing else).
    pub fn with_id(id: &str) -> Self {
        PatientIdentity {
            id: id.trim().to_string(),
            ..Default::default()
        }
    }

    /// Why `other` is not the same patient (None: the same). The ID and, where
    /// both give one, the issuer decide; a birth date or sex that differ
    /// where both are given mean a mix-up at the console (two patients under
    /// one ID), so the cycles are not merged either. An attribute one side
    /// leaves empty is not held against it: older exports and anonymisers
    /// drop them.
    pub fn differs(&self, other: &PatientIdentity) -> Option<String> {
        let t = |s: &str| s.trim().to_string();
        if t(&self.id) != t(&other.id) {
            return Some(format!(
                "Patient ID '{}' is not '{}'",
                other.id.trim(),
                self.id.trim()
            ));
        }
        let mut why = Vec::new();
        for (what, a, b) in [
            ("issuer of the Patient ID", &self.issuer, &other.issuer),
            ("birth date", &self.birth_date, &other.birth_date),
            ("sex", &self.sex, &other.sex),
        ] {
            let (a, b) = (t(a), t(b));
            if !a.is_empty() && !b.is_empty() && !a.eq_ignore_ascii_case(&b) {
                why.push(format!("{what} '{b}' is not '{a}'"));
            }
        }
        (!why.is_empty()).then(|| why.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str, issuer: &str, birth: &str, sex: &str) -> PatientIdentity {
        PatientIdentity {
            id: id.into(),
            issuer: issuer.into(),
            birth_date: birth.into(),
            sex: sex.into(),
        }
    }

    #[test]
    fn same_id_and_attributes_or_missing_ones_are_the_same_patient() {
        let a = p("P1", "HOSP", "19580312", "F");
        assert_eq!(a.differs(&a.clone()), None);
        assert_eq!(a.differs(&p(" P1 ", "", "", "")), None);
        assert_eq!(a.differs(&p("P1", "hosp", "19580312", "f")), None);
    }

    #[test]
    fn another_issuer_birth_date_or_sex_is_another_patient() {
        let a = p("P1", "HOSP", "19580312", "F");
        assert!(a
            .differs(&p("P2", "HOSP", "19580312", "F"))
            .unwrap()
            .contains("'P2'"));
        let w = a.differs(&p("P1", "OTHER", "19580312", "F")).unwrap();
        assert!(w.contains("issuer"), "{w}");
        let w = a.differs(&p("P1", "HOSP", "19600101", "M")).unwrap();
        assert!(
            w.contains("birth date '19600101'") && w.contains("sex 'M'"),
            "{w}"
        );
    }
}
