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
}
