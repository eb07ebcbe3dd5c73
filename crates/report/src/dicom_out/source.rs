//! What a derived object needs to know about the images it is made from: each
//! instance's own plane (position, orientation, spacing) and UIDs, and the patient
//! and study attributes to copy. Read again from the files' headers, so the
//! geometry of every output comes from each slice's own header, never from the
//! order of an array.

use crate::error::{Error, Result};
use crate::io::dicom::DicomSeries;
use crate::volume::{cross, dot, Vec3, Volume};
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use std::path::PathBuf;

/// One image instance (a CT slice, or a multi-frame NM object).
#[derive(Debug, Clone)]
pub struct Instance {
    pub path: PathBuf,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    /// Centre of the first transmitted pixel, LPS mm.
    pub position: Vec3,
    /// Direction of increasing column index (along a row), LPS.
    pub row_dir: Vec3,
    /// Direction of increasing row index (down a column), LPS.
    pub col_dir: Vec3,
    /// PixelSpacing as stored: (between rows, between columns), mm.
    pub pixel_spacing: [f64; 2],
    pub rows: usize,
    pub columns: usize,
    pub slice_thickness: Option<f64>,
}

impl Instance {
    /// Patient position of the centre of pixel (column `u`, row `v`); fractional
    /// values give positions between pixel centres (contour vertices).
    pub(crate) fn pixel_to_patient(&self, u: f64, v: f64) -> Vec3 {
        let (dr, dc) = (self.pixel_spacing[0], self.pixel_spacing[1]);
        let mut p = self.position;
        for a in 0..3 {
            p[a] += u * dc * self.row_dir[a] + v * dr * self.col_dir[a];
        }
        p
    }

    pub fn normal(&self) -> Vec3 {
        cross(self.row_dir, self.col_dir)
    }

    /// The label map sampled at this plane's pixel centres (nearest voxel; 0 outside
    /// the map), row by row: the mask as the viewer of this slice sees it.
    pub(crate) fn sample_labels(&self, labels: &Volume<u8>) -> Vec<u8> {
        let g = &labels.geom;
        let [nx, ny, nz] = g.dims;
        let mut out = vec![0u8; self.rows * self.columns];
        if let Some((i0, du, dv)) = self.on_voxel_centres(g) {
            // The usual case (the mask on this series' own grid): every pixel
            // centre is a voxel centre, stepped through in whole voxels; the same
            // voxels the general rule below rounds to.
            let n = [nx as i64, ny as i64, nz as i64];
            for v in 0..self.rows as i64 {
                for u in 0..self.columns as i64 {
                    let r: [i64; 3] = std::array::from_fn(|a| i0[a] + u * du[a] + v * dv[a]);
                    if (0..3).all(|a| r[a] >= 0 && r[a] < n[a]) {
                        out[u as usize + self.columns * v as usize] =
                            labels.data[g.linear(r[0] as usize, r[1] as usize, r[2] as usize)];
                    }
                }
            }
            return out;
        }
        self.sample_each(labels, out)
    }

    /// [`Instance::sample_labels`] pixel by pixel: each centre carried into the
    /// map and rounded to the nearest voxel.
    fn sample_each(&self, labels: &Volume<u8>, mut out: Vec<u8>) -> Vec<u8> {
        let g = &labels.geom;
        let [nx, ny, nz] = g.dims;
        for v in 0..self.rows {
            for u in 0..self.columns {
                let idx = g.patient_to_index(self.pixel_to_patient(u as f64, v as f64));
                let r = idx.map(|x| x.round());
                if r.iter()
                    .zip([nx, ny, nz])
                    .all(|(&x, n)| x >= 0.0 && x < n as f64)
                {
                    out[u + self.columns * v] =
                        labels.data[g.linear(r[0] as usize, r[1] as usize, r[2] as usize)];
                }
            }
        }
        out
    }
}

impl Instance {
    /// When this plane's pixel centres fall on voxel centres of `g` (to 1e-4
    /// of a voxel at the first pixel, its two neighbours and the three other
    /// corners; the map is affine): the voxel index of pixel (0, 0) and the
    /// whole-voxel steps along a row and down a column.
    fn on_voxel_centres(
        &self,
        g: &crate::volume::Geometry,
    ) -> Option<([i64; 3], [i64; 3], [i64; 3])> {
        let at = |u: f64, v: f64| g.patient_to_index(self.pixel_to_patient(u, v));
        let whole = |x: Vec3| -> Option<[i64; 3]> {
            let r = x.map(f64::round);
            (0..3)
                .all(|a| (x[a] - r[a]).abs() < 1e-4)
                .then(|| r.map(|c| c as i64))
        };
        let i0 = whole(at(0.0, 0.0))?;
        let i1 = whole(at(1.0, 0.0))?;
        let j1 = whole(at(0.0, 1.0))?;
        let du: [i64; 3] = std::array::from_fn(|a| i1[a] - i0[a]);
        let dv: [i64; 3] = std::array::from_fn(|a| j1[a] - i0[a]);
        let (cu, cv) = (self.columns.saturating_sub(1), self.rows.saturating_sub(1));
        // The ends of the first row and column and the far corner: with these
        // whole too, no pixel in between is further than 1e-3 of a voxel from
        // the voxel centre it is stepped to.
        for (u, v) in [(cu, 0), (0, cv), (cu, cv)] {
            let c = whole(at(u as f64, v as f64))?;
            if (0..3).any(|a| c[a] != i0[a] + u as i64 * du[a] + v as i64 * dv[a]) {
                return None;
            }
        }
        Some((i0, du, dv))
    }
}

/// A source series as the derived objects reference it.
#[derive(Debug, Clone)]
pub struct SourceSeries {
    pub series_uid: String,
    pub study_uid: String,
    pub frame_of_reference_uid: String,
    pub modality: String,
    /// Sorted along the slice normal (ascending).
    pub instances: Vec<Instance>,
    /// Patient and study attributes of the first instance, copied into every
    /// object derived from this series.
    pub patient_study: InMemDicomObject,
}

/// Patient, patient-study and general-study attributes copied unchanged, so a PACS
/// files the derived object under the same patient and study as its images.
const COPIED: &[Tag] = &[
    tags::SPECIFIC_CHARACTER_SET,
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::ISSUER_OF_PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::PATIENT_AGE,
    tags::PATIENT_SIZE,
    tags::PATIENT_WEIGHT,
    tags::STUDY_INSTANCE_UID,
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::STUDY_ID,
    tags::ACCESSION_NUMBER,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::STUDY_DESCRIPTION,
];

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|v| v.trim().trim_end_matches('\0').trim().to_string())
        .filter(|v| !v.is_empty())
}

fn floats(obj: &InMemDicomObject, tag: Tag, n: usize) -> Option<Vec<f64>> {
    obj.get(tag)
        .and_then(|e| e.to_multi_float64().ok())
        .filter(|v| v.len() >= n && v.iter().all(|x| x.is_finite()))
}

fn int(obj: &InMemDicomObject, tag: Tag) -> Option<usize> {
    obj.get(tag)
        .and_then(|e| e.to_int::<i64>().ok())
        .filter(|&v| v > 0)
        .map(|v| v as usize)
}

/// Plane attributes at the top level, or (NM) in the Detector Information Sequence.
fn plane_attr(obj: &InMemDicomObject, tag: Tag, n: usize) -> Option<Vec<f64>> {
    floats(obj, tag, n).or_else(|| {
        obj.get(tags::DETECTOR_INFORMATION_SEQUENCE)
            .and_then(|e| e.items())
            .and_then(|i| i.first())
            .and_then(|d| floats(d, tag, n))
    })
}

impl SourceSeries {
    /// As [`SourceSeries::read`], from the headers the study already holds (each
    /// file's own plane and UIDs, as its header gave them when the study was
    /// read), opening only the first file for the patient and study attributes.
    /// Enhanced multi-frame objects and headers without a plane are read again.
    pub fn from_series(series: &DicomSeries) -> Result<Self> {
        let planar = |h: &&crate::io::dicom::DicomHeader| {
            !h.enhanced
                && h.frames <= 1
                && h.position.is_some()
                && h.orientation.is_some()
                && h.pixel_spacing.is_some()
                && h.rows > 0
                && h.columns > 0
                && !h.sop_instance_uid.is_empty()
                && !h.sop_class_uid.is_empty()
        };
        let Some(h0) = series.files.first() else {
            return Err(Error::series(&series.uid, "no files"));
        };
        if !series.files.iter().all(|h| planar(&h)) {
            return Self::read(series);
        }
        let file = OpenFileOptions::new()
            .read_until(tags::PIXEL_DATA)
            .open_file(&h0.path)
            .map_err(|e| Error::dicom_from(&h0.path, "", e))?;
        let obj: &InMemDicomObject = &file;
        let mut patient_study = InMemDicomObject::new_empty();
        for &t in COPIED {
            if let Some(e) = obj.get(t) {
                patient_study.put(e.clone());
            }
        }
        let mut instances = Vec::with_capacity(series.files.len());
        for h in &series.files {
            let (Some(ipp), Some(iop), Some(ps)) = (h.position, h.orientation, h.pixel_spacing)
            else {
                return Self::read(series);
            };
            instances.push(Instance {
                path: h.path.clone(),
                sop_class_uid: h.sop_class_uid.trim().to_string(),
                sop_instance_uid: h.sop_instance_uid.clone(),
                position: ipp,
                row_dir: [iop[0], iop[1], iop[2]],
                col_dir: [iop[3], iop[4], iop[5]],
                pixel_spacing: ps,
                rows: h.rows,
                columns: h.columns,
                slice_thickness: h.slice_thickness,
            });
        }
        Self::finish(series, instances, patient_study)
    }

    /// Reads every file's header of `series` (pixel data not read).
    pub fn read(series: &DicomSeries) -> Result<Self> {
        let err = |m: String| Error::series(&series.uid, m);
        let mut instances = Vec::with_capacity(series.files.len());
        let mut first: Option<InMemDicomObject> = None;
        for h in &series.files {
            let file = OpenFileOptions::new()
                .read_until(tags::PIXEL_DATA)
                .open_file(&h.path)
                .map_err(|e| Error::dicom_from(&h.path, "", e))?;
            let obj: &InMemDicomObject = &file;
            let missing = |what: &str| Error::dicom(&h.path, format!("no {what}"));
            let iop = plane_attr(obj, tags::IMAGE_ORIENTATION_PATIENT, 6)
                .ok_or_else(|| missing("ImageOrientationPatient"))?;
            let ipp = plane_attr(obj, tags::IMAGE_POSITION_PATIENT, 3)
                .ok_or_else(|| missing("ImagePositionPatient"))?;
            let ps = floats(obj, tags::PIXEL_SPACING, 2).ok_or_else(|| missing("PixelSpacing"))?;
            instances.push(Instance {
                path: h.path.clone(),
                sop_class_uid: text(obj, tags::SOP_CLASS_UID)
                    .ok_or_else(|| missing("SOPClassUID"))?,
                sop_instance_uid: text(obj, tags::SOP_INSTANCE_UID)
                    .ok_or_else(|| missing("SOPInstanceUID"))?,
                position: [ipp[0], ipp[1], ipp[2]],
                row_dir: [iop[0], iop[1], iop[2]],
                col_dir: [iop[3], iop[4], iop[5]],
                pixel_spacing: [ps[0], ps[1]],
                rows: int(obj, tags::ROWS).ok_or_else(|| missing("Rows"))?,
                columns: int(obj, tags::COLUMNS).ok_or_else(|| missing("Columns"))?,
                slice_thickness: floats(obj, tags::SLICE_THICKNESS, 1).map(|v| v[0]),
            });
            if first.is_none() {
                let mut keep = InMemDicomObject::new_empty();
                for &t in COPIED {
                    if let Some(e) = obj.get(t) {
                        keep.put(e.clone());
                    }
                }
                first = Some(keep);
            }
        }
        let patient_study = first.ok_or_else(|| err("no files".into()))?;
        Self::finish(series, instances, patient_study)
    }

    /// Sorts the instances along the normal and checks the series' UIDs.
    fn finish(
        series: &DicomSeries,
        mut instances: Vec<Instance>,
        patient_study: InMemDicomObject,
    ) -> Result<Self> {
        let err = |m: String| Error::series(&series.uid, m);
        let i0 = instances
            .first()
            .ok_or_else(|| err("no files".into()))?
            .clone();
        let normal = i0.normal();
        instances.sort_by(|a, b| dot(a.position, normal).total_cmp(&dot(b.position, normal)));
        let h0 = &series.files[0];
        if h0.study_uid.is_empty() {
            return Err(err("no StudyInstanceUID".into()));
        }
        if h0.frame_of_reference_uid.is_empty() {
            return Err(err(
                "no FrameOfReferenceUID: derived objects could not be placed on the images".into(),
            ));
        }
        Ok(SourceSeries {
            series_uid: series.uid.clone(),
            study_uid: h0.study_uid.clone(),
            frame_of_reference_uid: h0.frame_of_reference_uid.clone(),
            modality: h0.modality.clone(),
            instances,
            patient_study,
        })
    }

    /// A patient attribute as text (for the report), "" when absent.
    pub(crate) fn attr(&self, tag: Tag) -> String {
        text(&self.patient_study, tag).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    fn instance(position: Vec3, row_dir: Vec3, col_dir: Vec3, spacing: [f64; 2]) -> Instance {
        Instance {
            path: PathBuf::new(),
            sop_class_uid: String::new(),
            sop_instance_uid: String::new(),
            position,
            row_dir,
            col_dir,
            pixel_spacing: spacing,
            rows: 20,
            columns: 24,
            slice_thickness: None,
        }
    }

    #[test]
    fn stepping_through_voxels_gives_what_rounding_each_pixel_gives() {
        // A rotated, flipped grid and labels that differ voxel by voxel.
        let dirs = [[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]];
        let mut g = Geometry::new([24, 12, 20], [0.8, 3.0, 1.5], [30.0, -40.0, 12.0]);
        g.direction = dirs;
        let data: Vec<u8> = (0..g.len()).map(|i| (i * 7 % 251) as u8).collect();
        let labels = Volume::new(g.clone(), data).unwrap();
        for k in 0..12 {
            // Slices of the grid itself (columns along x, rows along z),
            // walking the grid backwards and running off its end.
            let p = g.index_to_patient([0.0, k as f64, 0.0]);
            let on = instance(p, dirs[0], dirs[2], [1.5, 0.8]);
            assert!(on.on_voxel_centres(&g).is_some(), "slice {k}");
            let back = instance(
                g.index_to_patient([23.0, k as f64, 19.0]),
                dirs[0].map(|c| -c),
                dirs[2].map(|c| -c),
                [1.5, 0.8],
            );
            let off_end = instance(
                g.index_to_patient([-3.0, k as f64, 5.0]),
                dirs[0],
                dirs[2],
                [1.5, 0.8],
            );
            for i in [&on, &back, &off_end] {
                assert_eq!(
                    i.sample_labels(&labels),
                    i.sample_each(&labels, vec![0; i.rows * i.columns])
                );
            }
        }
        // Half a voxel off, or another pixel size: pixel by pixel.
        let half = instance(
            g.index_to_patient([0.5, 3.0, 0.0]),
            dirs[0],
            dirs[2],
            [1.5, 0.8],
        );
        assert!(half.on_voxel_centres(&g).is_none());
        let coarse = instance(
            g.index_to_patient([0.0, 3.0, 0.0]),
            dirs[0],
            dirs[2],
            [1.5, 1.0],
        );
        assert!(coarse.on_voxel_centres(&g).is_none());
    }
}
