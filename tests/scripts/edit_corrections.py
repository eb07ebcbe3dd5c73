#!/usr/bin/env python3
"""A physicist's correction, made the way a viewer makes it, and its truth
computed here, independently of organdose (tests/it/corrections.rs).

Usage:
  edit_corrections.py rtstruct IN.dcm OUT.dcm CT_DIR [--rename OLD=NEW]...
                      [--unknown-series]
  edit_corrections.py seg IN.dcm OUT.dcm CT_DIR [--fractional]

rtstruct: organdose's RT Structure Set edited with pydicom: the left kidney's
  contours shrunk 5 mm towards their centroid on every slice, the contours of
  one slice (the kidney's middle one) deleted; new SOP instance and series,
  Manufacturer, OperatorsName, StructureSetLabel/Date/Time as an editing tool
  writes them; ROIs renamed as asked. --unknown-series makes it refer to a
  series, frame of reference and images nobody has.
  Truth: the edited contours rasterised on the CT's slices with
  matplotlib.path.Path (pixel centres inside, even-odd over the contours of a
  slice), each contour on the slice nearest its points.
seg: organdose's SEG read with highdicom; the left kidney eroded by 5 mm in
  plane on every slice and one slice deleted; written anew with highdicom
  (binary, or fractional with 0.9 inside and 0.3 on the eroded rim, which is
  below one half and so outside). Truth: the voxels of the written mask.

Prints one JSON object: the left kidney's voxels, volume (mL) and mass (g, at
1.06 g/mL), the voxels before the edit, and the new SOP instance UID.
"""
import json
import sys
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

DENSITY_G_PER_ML = 1.06  # organdose's kidney density (README, the paper)
SHRINK_MM = 5.0


def ct_slices(ct_dir):
    ds = [pydicom.dcmread(p) for p in sorted(Path(ct_dir).iterdir()) if p.is_file()]
    row = np.array(ds[0].ImageOrientationPatient[:3], float)
    col = np.array(ds[0].ImageOrientationPatient[3:], float)
    normal = np.cross(row, col)
    ds.sort(key=lambda d: float(np.dot(np.array(d.ImagePositionPatient, float), normal)))
    z = np.array([np.dot(np.array(d.ImagePositionPatient, float), normal) for d in ds])
    return ds, row, col, normal, z


def voxel_ml(ds, z):
    dr, dc = (float(v) for v in ds[0].PixelSpacing)
    dz = float(np.median(np.diff(z))) if len(z) > 1 else float(ds[0].SliceThickness)
    return dr * dc * dz / 1000.0


def result(voxels, before, ml_per_voxel, sop, extra=None):
    out = {
        "kidney_left_voxels": int(voxels),
        "kidney_left_voxels_before": int(before),
        "kidney_left_ml": voxels * ml_per_voxel,
        "kidney_left_g": voxels * ml_per_voxel * DENSITY_G_PER_ML,
        "sop_instance_uid": sop,
    }
    out.update(extra or {})
    print(json.dumps(out))


def rasterise(contours, ds, row, col, normal, z):
    """Voxels inside the contours (list of (N, 3) arrays) on the CT's slices."""
    from matplotlib.path import Path as MplPath

    rows, cols = int(ds[0].Rows), int(ds[0].Columns)
    dr, dc = (float(v) for v in ds[0].PixelSpacing)
    vv, uu = np.mgrid[0:rows, 0:cols]
    centres = np.column_stack([uu.ravel(), vv.ravel()]).astype(float)
    masks = {}
    for pts in contours:
        k = int(np.argmin(np.abs(z - float(np.mean(pts @ normal)))))
        ipp = np.array(ds[k].ImagePositionPatient, float)
        u = (pts - ipp) @ row / dc
        v = (pts - ipp) @ col / dr
        inside = MplPath(np.column_stack([u, v])).contains_points(centres)
        m = masks.setdefault(k, np.zeros(rows * cols, bool))
        m ^= inside  # even-odd: a contour inside another is a hole
    return sum(int(m.sum()) for m in masks.values())


def shrink(pts, mm):
    """Every point moved `mm` towards the contour's centroid (the mean of its
    points; at most onto it)."""
    c = pts.mean(axis=0)
    d = c - pts
    n = np.linalg.norm(d, axis=1, keepdims=True)
    step = np.where(n > mm, mm / np.maximum(n, 1e-12), 1.0)
    return pts + d * step


def edit_rtstruct(src, dst, ct_dir, renames, unknown):
    ds_ct, row, col, normal, z = ct_slices(ct_dir)
    rs = pydicom.dcmread(src)
    numbers = {int(r.ROINumber): r.ROIName for r in rs.StructureSetROISequence}
    left = [n for n, name in numbers.items() if name == "Kidney_L"][0]
    before_contours, after_contours = [], []
    for rc in rs.ROIContourSequence:
        if int(rc.ReferencedROINumber) != left:
            continue
        items = list(rc.ContourSequence)
        pts_of = [np.array(c.ContourData, float).reshape(-1, 3) for c in items]
        before_contours = pts_of
        zs = sorted({round(float(np.mean(p @ normal)), 3) for p in pts_of})
        deleted = zs[len(zs) // 2]
        kept = []
        for c, p in zip(items, pts_of):
            if round(float(np.mean(p @ normal)), 3) == deleted:
                continue
            q = shrink(p, SHRINK_MM)
            c.ContourData = [f"{x:.4f}" for x in q.ravel()]
            c.NumberOfContourPoints = len(q)
            kept.append(c)
            after_contours.append(q)
        rc.ContourSequence = pydicom.Sequence(kept)
    for r in rs.StructureSetROISequence:
        if r.ROIName in renames:
            r.ROIName = renames[r.ROIName]
    for o in rs.RTROIObservationsSequence:
        if "ROIObservationLabel" in o and o.ROIObservationLabel in renames:
            o.ROIObservationLabel = renames[o.ROIObservationLabel]
    if unknown:
        frame = generate_uid()
        series = generate_uid()
        for f in rs.ReferencedFrameOfReferenceSequence:
            f.FrameOfReferenceUID = frame
            for st in f.RTReferencedStudySequence:
                for se in st.RTReferencedSeriesSequence:
                    se.SeriesInstanceUID = series
                    for im in se.ContourImageSequence:
                        im.ReferencedSOPInstanceUID = generate_uid()
        for r in rs.StructureSetROISequence:
            r.ReferencedFrameOfReferenceUID = frame
        for rc in rs.ROIContourSequence:
            for c in rc.ContourSequence:
                for im in c.ContourImageSequence:
                    im.ReferencedSOPInstanceUID = generate_uid()
        rs.FrameOfReferenceUID = frame
    sop = generate_uid()
    rs.SOPInstanceUID = sop
    rs.file_meta.MediaStorageSOPInstanceUID = sop
    rs.SeriesInstanceUID = generate_uid()
    rs.Manufacturer = "pydicom edit (organdose test)"
    rs.OperatorsName = "Physicist^Test"
    rs.StructureSetLabel = "CORRECTED"
    rs.StructureSetDate = "20200101"
    rs.StructureSetTime = "101500"
    rs.save_as(dst)
    ml = voxel_ml(ds_ct, z)
    result(
        rasterise(after_contours, ds_ct, row, col, normal, z),
        rasterise(before_contours, ds_ct, row, col, normal, z),
        ml,
        sop,
        {"unknown_series": rs.ReferencedFrameOfReferenceSequence[0]
         .RTReferencedStudySequence[0].RTReferencedSeriesSequence[0].SeriesInstanceUID},
    )


def erode(m, radius_px):
    """In-plane erosion of a 2D mask by a disk (pixel units, per axis)."""
    ry, rx = radius_px
    out = m.copy()
    for dy in range(-int(np.ceil(ry)), int(np.ceil(ry)) + 1):
        for dx in range(-int(np.ceil(rx)), int(np.ceil(rx)) + 1):
            if (dy / ry) ** 2 + (dx / rx) ** 2 > 1.0:
                continue
            shifted = np.zeros_like(m)
            ys = slice(max(dy, 0), m.shape[0] + min(dy, 0))
            yd = slice(max(-dy, 0), m.shape[0] + min(-dy, 0))
            xs = slice(max(dx, 0), m.shape[1] + min(dx, 0))
            xd = slice(max(-dx, 0), m.shape[1] + min(-dx, 0))
            shifted[yd, xd] = m[ys, xs]
            out &= shifted
    return out


def edit_seg(src, dst, ct_dir, fractional):
    # highdicom 0.22 names np.float_ when it writes a SEG, which numpy 2 (pinned
    # beside it) removed: the alias it meant.
    if not hasattr(np, "float_"):
        np.float_ = np.float64
    import highdicom as hd

    ds_ct, row, col, normal, z = ct_slices(ct_dir)
    seg = hd.seg.segread(src)
    uids = [d.SOPInstanceUID for d in ds_ct]
    numbers = list(seg.segment_numbers)
    arr = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids,
        segment_numbers=numbers,
        ignore_spatial_locations=True,
        assert_missing_frames_are_empty=True,
    ).astype(bool)  # (slices, rows, cols, segments)
    labels = [seg.get_segment_description(n).segment_label for n in numbers]
    left = labels.index("Kidney_L")
    kidney = arr[..., left]
    before = int(kidney.sum())
    dr, dc = (float(v) for v in ds_ct[0].PixelSpacing)
    edited = np.stack([erode(s, (SHRINK_MM / dr, SHRINK_MM / dc)) for s in kidney])
    ks = np.nonzero(edited.any(axis=(1, 2)))[0]
    edited[ks[len(ks) // 2]] = False
    if fractional:
        values = np.where(edited, 0.9, np.where(kidney, 0.3, 0.0))
        pix = arr.astype(np.float32)
        pix[..., left] = values
        kind = hd.seg.SegmentationTypeValues.FRACTIONAL
    else:
        pix = arr.copy()
        pix[..., left] = edited
        kind = hd.seg.SegmentationTypeValues.BINARY
    descriptions = [seg.get_segment_description(n) for n in numbers]
    sop = generate_uid()
    out = hd.seg.Segmentation(
        source_images=ds_ct,
        pixel_array=pix,
        segmentation_type=kind,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=77,
        sop_instance_uid=sop,
        instance_number=1,
        manufacturer="highdicom edit (organdose test)",
        manufacturer_model_name="edit_corrections.py",
        software_versions=hd.__version__,
        device_serial_number="1",
        content_creator_name="Physicist^Test",
        max_fractional_value=255,
        omit_empty_frames=True,
    )
    out.save_as(dst)
    result(int(edited.sum()), before, voxel_ml(ds_ct, z), sop)


def main(argv):
    what, src, dst, ct_dir = argv[1:5]
    rest = argv[5:]
    if what == "rtstruct":
        renames = dict(a.split("=", 1) for a, flag in zip(rest[1:], rest) if flag == "--rename")
        edit_rtstruct(src, dst, ct_dir, renames, "--unknown-series" in rest)
    elif what == "seg":
        edit_seg(src, dst, ct_dir, "--fractional" in rest)
    else:
        sys.exit(f"unknown command {what}")


if __name__ == "__main__":
    main(sys.argv)
