//! `[segment]` section of the configuration: which model, where it runs and
//! how the planes are driven (see `config/default.toml` for each key). The
//! model's own structure is in `weights/<model>/model.toml` ([`super::config`]).

use super::driver::{DriverOptions, Planes};
use super::engine::DeviceKind;
use super::fusion::FuseRule;
use super::slicing::CanvasFit;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentConfig {
    pub weights: std::path::PathBuf,
    /// Where the network runs ("cpu" or "cuda"); `--device` overrides it.
    #[serde(default)]
    pub device: DeviceKind,
    pub planes: Planes,
    pub batch_size: usize,
    /// Forward passes at once on the CPU (0: one per thread of the pool).
    pub parallel_batches: usize,
    pub max_fill_gap_slices: usize,
    /// Coronal and sagittal passes only within the axial pass's organ extent
    /// plus this margin (mm); a negative value runs every slice.
    pub other_planes_margin_mm: f64,
    /// Slices closer than this (mm) run every k-th, probabilities
    /// interpolated between (0: every slice).
    pub slice_step_mm: f64,
    /// The same for the coronal and sagittal passes.
    pub other_planes_slice_step_mm: f64,
    /// `planes = "auto"`: how the planes' probabilities are joined.
    pub fusion: FuseRule,
    /// `planes = "auto"`: the probability threshold of the fusion.
    pub fusion_threshold: f32,
    /// `planes = "auto"`: close each organ's enclosed holes.
    pub fill_holes: bool,
    /// `planes = "auto"`, a cycle's low-dose CTs: follow the diagnostic CT
    /// (`seg::follow`) or run the full pass on each.
    pub low_dose_ct: LowDoseCt,
    /// Redraw each kidney with the model folder's finer kidney stage
    /// (`seg::refine`), where the folder has one.
    pub kidney_refine: bool,
    /// Millimetre canvases fitted to each plane's extent, sides from
    /// `canvas_min_px` to `canvas_max_px` pixels (multiples of 32); 0: the
    /// model's square canvas, tiled where the body is wider.
    pub canvas_max_px: usize,
    pub canvas_min_px: usize,
}

/// How a cycle's low-dose CTs are segmented (`segment.low_dose_ct`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LowDoseCt {
    /// The axial pass, and the diagnostic CT's masks moved onto it where they
    /// agree with it (`seg::follow`); the full pass where they do not.
    Follow,
    /// Every plane the geometry allows, as the diagnostic CT.
    Full,
    /// Every plane, the axial pass only where the diagnostic CT's organs are
    /// on this CT (the two registered from their images, `seg::follow::
    /// segment_bounded`); the full pass where that is doubtful.
    Bounded,
}

impl SegmentConfig {
    pub fn driver_options(&self) -> DriverOptions {
        DriverOptions {
            planes: self.planes,
            batch_size: self.batch_size,
            parallel_batches: match self.parallel_batches {
                0 => rayon::current_num_threads(),
                n => n,
            },
            max_fill_gap: self.max_fill_gap_slices,
            other_planes_margin_mm: (self.other_planes_margin_mm >= 0.0)
                .then_some(self.other_planes_margin_mm),
            slice_step_mm: self.slice_step_mm,
            other_planes_slice_step_mm: self.other_planes_slice_step_mm,
            fusion: self.fusion,
            fusion_threshold: self.fusion_threshold,
            fill_holes: self.fill_holes,
            refine_kidneys: self.kidney_refine,
            canvas_fit: (self.canvas_max_px > 0).then_some(CanvasFit {
                min_px: self.canvas_min_px,
                max_px: self.canvas_max_px,
            }),
        }
    }
}
