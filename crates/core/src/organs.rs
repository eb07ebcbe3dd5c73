//! Organ label values shared by every label map organdose reads or writes
//! (truth maps, segmentation output, dosimetry input). 0 is background.

/// (label value, name). Names are the keys used in `truth.json` and `dose_summary.json`.
pub const ORGANS: &[(u8, &str)] = &[
    (1, "liver"),
    (2, "kidney_left"),
    (3, "kidney_right"),
    (4, "spleen"),
    (5, "tumour"),
];

pub const LIVER: u8 = 1;
pub const KIDNEY_LEFT: u8 = 2;
pub const KIDNEY_RIGHT: u8 = 3;
pub const SPLEEN: u8 = 4;
pub const TUMOUR: u8 = 5;

/// Name of a label value, if it is an organ organdose knows.
pub fn name(label: u8) -> Option<&'static str> {
    ORGANS.iter().find(|(l, _)| *l == label).map(|(_, n)| *n)
}

/// Label value of an organ name.
pub fn label(name: &str) -> Option<u8> {
    ORGANS.iter().find(|(_, n)| *n == name).map(|(l, _)| *l)
}

/// Tissue density in g/cm3 used for organ masses unless configured otherwise.
/// Kidney: 1.06 g/cm3 (the paper, after ICRP 89). Liver 1.06 and spleen 1.06
/// likewise (ICRP 89 soft tissue values used in OLINDA-style dosimetry).
pub fn default_density_g_per_ml(_label: u8) -> f64 {
    1.06
}
