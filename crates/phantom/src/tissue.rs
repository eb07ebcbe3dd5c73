//! Tissue classes of the phantom (`truth/tissue_ct.nii.gz`) and their
//! reference HU. Below `anatomy` and `real_anatomy`, which both paint them.

/// Tissue classes of `truth/tissue_ct.nii.gz` (value = discriminant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Tissue {
    Air = 0,
    Skin = 1,
    Fat = 2,
    Muscle = 3,
    VisceralFat = 4,
    Liver = 5,
    Spleen = 6,
    KidneyCortex = 7,
    KidneyMedulla = 8,
    RenalPelvis = 9,
    RenalSinusFat = 10,
    Aorta = 11,
    VenaCava = 12,
    BoneCortical = 13,
    BoneCancellous = 14,
    Disc = 15,
    Csf = 16,
    StomachWall = 17,
    GiFluid = 18,
    Gas = 19,
    Stool = 20,
    BowelWall = 21,
    Gallbladder = 22,
    Pancreas = 23,
    Tumour = 24,
    Lung = 25,
    Heart = 26,
}

/// Names of the tissue classes, index = value (documented in truth.json).
pub(crate) const TISSUE_NAMES: &[&str] = &[
    "air",
    "skin",
    "subcutaneous_fat",
    "muscle",
    "visceral_fat",
    "liver",
    "spleen",
    "kidney_cortex",
    "kidney_medulla",
    "renal_pelvis",
    "renal_sinus_fat",
    "aorta",
    "vena_cava",
    "bone_cortical",
    "bone_cancellous",
    "intervertebral_disc",
    "csf",
    "stomach_wall",
    "gi_fluid",
    "gas",
    "stool",
    "bowel_wall",
    "gallbladder",
    "pancreas",
    "tumour",
    "lung",
    "heart",
];

impl Tissue {
    /// Mean HU without and with intravenous contrast (portal-venous phase).
    /// Typical literature values for abdominal CT, rounded. A fixed reference
    /// only: the phantom's CT images take their HU from `ct_appearance`, drawn
    /// per patient and contrast phase.
    pub fn hu(self, contrast: bool) -> f32 {
        use Tissue::*;
        let (plain, enhanced) = match self {
            Air => (-1000.0, -1000.0),
            Skin => (30.0, 40.0),
            Fat => (-105.0, -105.0),
            Muscle => (48.0, 60.0),
            VisceralFat => (-95.0, -95.0),
            Liver => (58.0, 115.0),
            Spleen => (48.0, 125.0),
            KidneyCortex => (35.0, 185.0),
            KidneyMedulla => (30.0, 130.0),
            RenalPelvis => (8.0, 8.0),
            RenalSinusFat => (-80.0, -80.0),
            Aorta => (42.0, 190.0),
            VenaCava => (40.0, 150.0),
            BoneCortical => (850.0, 850.0),
            BoneCancellous => (230.0, 235.0),
            Disc => (85.0, 90.0),
            Csf => (12.0, 12.0),
            StomachWall => (40.0, 95.0),
            GiFluid => (12.0, 12.0),
            Gas => (-960.0, -960.0),
            Stool => (-120.0, -120.0),
            BowelWall => (40.0, 90.0),
            Gallbladder => (6.0, 6.0),
            Pancreas => (42.0, 105.0),
            Tumour => (42.0, 80.0),
            Lung => (-860.0, -860.0),
            Heart => (40.0, 160.0),
        };
        if contrast {
            enhanced
        } else {
            plain
        }
    }

    /// Relative concentration of non-organ ("remainder") activity in this tissue:
    /// blood pool highest, fat, gas and lung low.
    pub(crate) fn remainder_weight(self) -> f32 {
        use Tissue::*;
        match self {
            Air | Gas | Csf => 0.0,
            Lung => 0.15,
            Fat | VisceralFat | RenalSinusFat => 0.25,
            BoneCortical => 0.3,
            Aorta | VenaCava | Heart => 4.0,
            Gallbladder | GiFluid | Stool => 0.4,
            _ => 1.0,
        }
    }
}
