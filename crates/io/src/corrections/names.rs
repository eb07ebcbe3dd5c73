//! ROI and segment names onto organdose's organs ([`crate::organs`]).
//!
//! Names are what a person typed or a viewer's template gave: "Kidney L",
//! "L Kidney", "Left kidney", "Kidney_L", "kidney left", "LKidney",
//! "Niere links", "LIVER", "Leber", "Milz". They are matched case-insensitively
//! after splitting on spaces, '_', '-', '.', '(' and ')': an organ word and, for a
//! kidney, one side word, nothing else. A name with more in it ("Kidney L PRV",
//! "Liver - GTV", "Kidneys") is not the organ and is left out (listed as ignored):
//! replacing an organ with a margin structure would change its dose silently.

use crate::organs;

const LIVER: &[&str] = &["liver", "leber", "hepar", "foie"];
const SPLEEN: &[&str] = &["spleen", "milz", "lien"];
const KIDNEY: &[&str] = &["kidney", "niere", "ren", "rein"];
const TUMOUR: &[&str] = &["tumour", "tumor"];
const LEFT: &[&str] = &[
    "l", "lt", "left", "links", "li", "sin", "sinister", "gauche",
];
const RIGHT: &[&str] = &["r", "rt", "right", "rechts", "re", "dx", "dexter", "droit"];

fn side(word: &str) -> Option<u8> {
    if LEFT.contains(&word) {
        Some(organs::KIDNEY_LEFT)
    } else if RIGHT.contains(&word) {
        Some(organs::KIDNEY_RIGHT)
    } else {
        None
    }
}

/// A kidney written as one word: "lkidney", "kidneyl", "kidneyleft", "leftkidney",
/// "nierelinks".
fn compact_kidney(word: &str) -> Option<u8> {
    KIDNEY.iter().find_map(|k| {
        if let Some(rest) = word.strip_prefix(k) {
            side(rest)
        } else if let Some(rest) = word.strip_suffix(k) {
            side(rest)
        } else {
            None
        }
    })
}

/// The organ label of a ROI name, or None when it is not one of organdose's organs.
pub fn organ_of(name: &str) -> Option<u8> {
    let lower = name.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| c.is_whitespace() || "_-.()[],/".contains(c))
        .filter(|w| !w.is_empty())
        .collect();
    match words.as_slice() {
        [w] if LIVER.contains(w) => Some(organs::LIVER),
        [w] if SPLEEN.contains(w) => Some(organs::SPLEEN),
        [w] if TUMOUR.contains(w) => Some(organs::TUMOUR),
        [w] => compact_kidney(w),
        [a, b] if KIDNEY.contains(a) => side(b),
        [a, b] if KIDNEY.contains(b) => side(a),
        _ => None,
    }
}

/// Words that make a ROI a lesion ("Lesion 1", "GTV liver", "Met 2", "Tumor").
const LESION: &[&str] = &[
    "lesion",
    "lesions",
    "les",
    "tumour",
    "tumor",
    "tumours",
    "tumors",
    "gtv",
    "met",
    "mets",
    "metastasis",
    "metastases",
    "node",
    "nodes",
    "nodule",
    "ln",
    "target",
    "hotspot",
    "focus",
];
/// Planning margins: never a lesion's own outline.
const MARGIN: &[&str] = &[
    "ptv",
    "ctv",
    "itv",
    "prv",
    "ring",
    "shell",
    "margin",
    "avoid",
    "opt",
    "expansion",
];
/// Structures that are not lesions (and organs organdose does not dose).
const NOT_LESION: &[&str] = &[
    "body",
    "external",
    "outline",
    "skin",
    "couch",
    "table",
    "patient",
    "spine",
    "spinal",
    "cord",
    "bone",
    "bones",
    "marrow",
    "lung",
    "lungs",
    "heart",
    "aorta",
    "bowel",
    "stomach",
    "bladder",
    "pancreas",
    "gallbladder",
    "vertebra",
    "kidneys",
    "organ",
    "organs",
    "liver",
    "leber",
    "hepar",
    "foie",
    "spleen",
    "milz",
    "lien",
    "kidney",
    "niere",
    "ren",
    "rein",
    "nieren",
    "background",
    "air",
];

/// Whether a ROI that is not one of organdose's organs ([`organ_of`]) is a lesion:
/// its name has a lesion word ("Lesion 2", "GTV liver", "Met1") and no planning
/// margin ("PTV", "PRV", "ring"); or it has no word of a known other structure
/// ("L1", "Segment_1", "Hot spot 3" are lesions; "Body", "External", "Kidneys",
/// "Spinal Cord", "PTV liver" are not). Taking a body outline or a margin as a lesion
/// would give it a wrong dose without a word; a ROI left out is listed as ignored.
pub fn is_lesion(name: &str) -> bool {
    if organ_of(name).is_some() {
        return false;
    }
    let lower = name.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| c.is_whitespace() || "_-.()[],/:#".contains(c))
        .map(|w| w.trim_end_matches(|c: char| c.is_ascii_digit()))
        .filter(|w| !w.is_empty())
        .collect();
    if words.is_empty() || words.iter().any(|w| MARGIN.contains(w)) {
        return false;
    }
    words.iter().any(|w| LESION.contains(w)) || !words.iter().any(|w| NOT_LESION.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usual_names_of_both_kidneys_liver_and_spleen() {
        for n in [
            "Kidney L",
            "L Kidney",
            "Left kidney",
            "Kidney_L",
            "kidney left",
            "Niere links",
            "LKidney",
            "KIDNEY_LEFT",
            "Kidney (L)",
            "Kidney-Lt",
            "kidney_left",
        ] {
            assert_eq!(organ_of(n), Some(organs::KIDNEY_LEFT), "{n}");
        }
        for n in [
            "Kidney R",
            "R Kidney",
            "Right kidney",
            "Kidney_R",
            "kidney right",
            "Niere rechts",
            "RKidney",
            "kidney_right",
        ] {
            assert_eq!(organ_of(n), Some(organs::KIDNEY_RIGHT), "{n}");
        }
        for n in ["LIVER", "Liver", "Leber", "liver"] {
            assert_eq!(organ_of(n), Some(organs::LIVER), "{n}");
        }
        for n in ["Spleen", "Milz", "SPLEEN"] {
            assert_eq!(organ_of(n), Some(organs::SPLEEN), "{n}");
        }
        assert_eq!(organ_of("Tumour"), Some(organs::TUMOUR));
    }

    #[test]
    fn margins_pairs_and_other_structures_are_not_organs() {
        for n in [
            "Kidneys",
            "Kidney",
            "Kidney L PRV",
            "Liver - GTV",
            "Body",
            "External",
            "Spinal Cord",
            "",
            "PTV liver",
            "Kidney L R",
        ] {
            assert_eq!(organ_of(n), None, "{n}");
        }
    }

    #[test]
    fn lesions_are_the_rois_that_name_no_other_structure() {
        for n in [
            "Lesion 1",
            "lesion_2",
            "GTV liver",
            "Liver - GTV",
            "Met1",
            "L1",
            "Segment_1",
            "Hot spot 3",
            "LN 4",
        ] {
            assert!(is_lesion(n), "{n}");
        }
        for n in [
            "Body",
            "External",
            "Kidneys",
            "Kidney",
            "Kidney L PRV",
            "PTV liver",
            "Spinal Cord",
            "",
            "Liver",
            "Tumour",
            "GTV ring",
            "Bladder",
        ] {
            assert!(!is_lesion(n), "{n}");
        }
    }
}
