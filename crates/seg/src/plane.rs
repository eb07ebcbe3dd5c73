//! The plain types of the segmentation that its lower modules share: the
//! slicing planes and what each model class becomes. `fusion`, `slicing` and
//! `driver` all use them; here, below all three, they need not import the
//! driver (which imports them).

use crate::error::{Error, Result};
use crate::organs;

/// A slicing direction, in voxel index space (i, j, k).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plane {
    Axial,
    Coronal,
    Sagittal,
}

impl Plane {
    /// (slice axis, image column axis, image row axis).
    pub fn axes(self) -> (usize, usize, usize) {
        match self {
            Plane::Axial => (2, 0, 1),
            Plane::Coronal => (1, 0, 2),
            Plane::Sagittal => (0, 1, 2),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Plane::Axial => "axial",
            Plane::Coronal => "coronal",
            Plane::Sagittal => "sagittal",
        }
    }
}

/// What each model class becomes in the output label map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassTarget {
    Organ(u8),
    /// One class for both kidneys: split by patient x.
    Kidney,
}

pub fn class_targets(classes: &[String]) -> Result<Vec<Option<ClassTarget>>> {
    classes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            if i == 0 {
                return Ok(None);
            }
            if n == "kidney" {
                return Ok(Some(ClassTarget::Kidney));
            }
            organs::label(n)
                .map(|l| Some(ClassTarget::Organ(l)))
                .ok_or_else(|| {
                    Error::input(format!(
                        "model class {n:?} is not an organ organdose knows (nor \"kidney\")"
                    ))
                })
        })
        .collect()
}
