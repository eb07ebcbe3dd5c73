#!/usr/bin/env python3
"""Read organdose's DICOM outputs back with pydicom (and highdicom for SEG) and
compare them with the truth they were made from. Prints one JSON object; the
Rust test (tests/it/dicom_out.rs) decides pass or fail.

Usage:
  check_dicom_out.py seg      SEG.dcm      CT_DIR TRUTH_PREFIX
  check_dicom_out.py rtstruct RTSTRUCT.dcm CT_DIR TRUTH_PREFIX
  check_dicom_out.py rtdose   RTDOSE.dcm          TRUTH_PREFIX

TRUTH_PREFIX.json holds the grid (dims, spacing, origin, direction: LPS mm, index
i fastest) and TRUTH_PREFIX.raw the values (u8 labels, or f32 Gy for rtdose).
Everything is placed by the geometry stored in the objects (positions,
orientations, spacings), never by array order.
"""
import json
import sys
from pathlib import Path

import numpy as np
import pydicom

# Organ label of a coded segment / ROI: (type code, laterality modifier or None).
CODES = {
    ("10200004", None): 1,
    ("64033007", "7771000"): 2,
    ("64033007", "24028007"): 3,
    ("78961009", None): 4,
    ("108369006", None): 5,
}


def load_truth(prefix, dtype):
    g = json.loads(Path(prefix + ".json").read_text())
    dims = g["dims"]
    data = np.fromfile(prefix + ".raw", dtype=dtype)
    vol = data.reshape(dims[2], dims[1], dims[0])  # [k, j, i]
    m = np.zeros((3, 3))
    for a in range(3):
        m[:, a] = np.array(g["direction"][a]) * g["spacing"][a]
    return vol, m, np.array(g["origin"], dtype=float)


def to_index(points, m, origin):
    """Patient points (N, 3) to truth indices (N, 3) as floats (i, j, k)."""
    return np.linalg.solve(m, (points - origin).T).T


def place(points, m, origin, shape):
    """Integer truth indices of points that fall on voxel centres; the largest
    distance from a voxel centre (index units) tells whether they did."""
    idx = to_index(points, m, origin)
    r = np.rint(idx)
    off = float(np.abs(idx - r).max()) if len(idx) else 0.0
    r = r.astype(int)
    ok = (r >= 0).all(1) & (r[:, 0] < shape[2]) & (r[:, 1] < shape[1]) & (r[:, 2] < shape[0])
    return r, ok, off


def code_of(item):
    t = item.get("SegmentedPropertyTypeCodeSequence") or item.get("RTROIIdentificationCodeSequence")
    t = t[0]
    mod = None
    if "SegmentedPropertyTypeModifierCodeSequence" in t:
        mod = t.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue
    return CODES.get((t.CodeValue, mod))


def plane_points(ipp, row, col, ps, rows, cols):
    v, u = np.mgrid[0:rows, 0:cols]
    pts = (ipp[None, None, :] + u[..., None] * ps[1] * row[None, None, :]
           + v[..., None] * ps[0] * col[None, None, :])
    return pts.reshape(-1, 3)


def ct_planes(ct_dir):
    planes = {}
    for f in sorted(Path(ct_dir).rglob("*.dcm")):
        d = pydicom.dcmread(f, stop_before_pixels=True)
        iop = np.array(d.ImageOrientationPatient, dtype=float)
        planes[d.SOPInstanceUID] = dict(
            ipp=np.array(d.ImagePositionPatient, dtype=float),
            row=iop[:3], col=iop[3:],
            ps=np.array(d.PixelSpacing, dtype=float),
            rows=int(d.Rows), cols=int(d.Columns),
            series=d.SeriesInstanceUID, study=d.StudyInstanceUID,
            frame=d.FrameOfReferenceUID, patient=str(d.PatientID),
        )
    return planes


def centroid_mm(mask, m, origin):
    k, j, i = np.nonzero(mask)
    if len(i) == 0:
        return None
    idx = np.stack([i, j, k], 1).astype(float).mean(0)
    return (m @ idx + origin).tolist()


def check_seg(path, ct_dir, prefix):
    truth, m, origin = load_truth(prefix, np.uint8)
    planes = ct_planes(ct_dir)
    ds = pydicom.dcmread(path)
    px = ds.pixel_array.reshape(int(ds.NumberOfFrames), ds.Rows, ds.Columns)
    sh = ds.SharedFunctionalGroupsSequence[0]
    iop = np.array(sh.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
    ps = np.array(sh.PixelMeasuresSequence[0].PixelSpacing, dtype=float)
    seg_label = {int(s.SegmentNumber): code_of(s) for s in ds.SegmentSequence}
    placed = {lab: np.zeros_like(truth, dtype=bool) for lab in seg_label.values()}
    worst_off, outside, empty, ref_bad = 0.0, 0, 0, 0
    for f, fg in enumerate(ds.PerFrameFunctionalGroupsSequence):
        segnum = int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        ipp = np.array(fg.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        src = fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        p = planes.get(src)
        if p is None or np.abs(p["ipp"] - ipp).max() > 1e-3:
            ref_bad += 1
        frame = px[f].astype(bool)
        if not frame.any():
            empty += 1
        pts = plane_points(ipp, iop[:3], iop[3:], ps, ds.Rows, ds.Columns)
        r, ok, off = place(pts, m, origin, truth.shape)
        worst_off = max(worst_off, off)
        on = frame.reshape(-1)
        outside += int((on & ~ok).sum())
        sel = on & ok
        placed[seg_label[segnum]][r[sel, 2], r[sel, 1], r[sel, 0]] = True
    out = dict(frames=int(ds.NumberOfFrames), empty_frames=empty, frames_bad_reference=ref_bad,
               worst_offset_index=worst_off, pixels_outside_truth=outside, segments={})
    for lab, vol in placed.items():
        t = truth == lab
        out["segments"][str(lab)] = dict(
            mismatch=int((vol != t).sum()), voxels=int(vol.sum()), truth_voxels=int(t.sum()),
            centroid_mm=centroid_mm(vol, m, origin))
    # highdicom: the same voxels looked up by source instance (references, not geometry).
    import highdicom as hd
    seg = hd.seg.segread(path)
    uids = list(planes.keys())
    nums = sorted(seg_label)
    arr = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=nums, ignore_spatial_locations=True,
        assert_missing_frames_are_empty=True)
    hd_mismatch = {}
    for s_i, num in enumerate(nums):
        lab = seg_label[num]
        bad = 0
        for u_i, uid in enumerate(uids):
            p = planes[uid]
            pts = plane_points(p["ipp"], p["row"], p["col"], p["ps"], p["rows"], p["cols"])
            r, ok, _ = place(pts, m, origin, truth.shape)
            t = np.zeros(len(pts), dtype=bool)
            t[ok] = truth[r[ok, 2], r[ok, 1], r[ok, 0]] == lab
            bad += int((arr[u_i, :, :, s_i].reshape(-1).astype(bool) != t).sum())
        hd_mismatch[str(lab)] = bad
    out["highdicom_mismatch"] = hd_mismatch
    out["highdicom_segments"] = len(nums)
    return out


def even_odd(contours, rows, cols):
    """Pixel centres inside the contours by the even-odd rule (only the contours'
    bounding box is tested: everything outside it is outside)."""
    inside_full = np.zeros((rows, cols), dtype=bool)
    allc = np.concatenate(contours)
    u0 = max(0, int(np.floor(allc[:, 0].min())))
    u1 = min(cols, int(np.ceil(allc[:, 0].max())) + 1)
    v0 = max(0, int(np.floor(allc[:, 1].min())))
    v1 = min(rows, int(np.ceil(allc[:, 1].max())) + 1)
    if u1 <= u0 or v1 <= v0:
        return inside_full
    v, u = np.mgrid[v0:v1, u0:u1].astype(float)
    inside = np.zeros(v.shape, dtype=bool)
    for c in contours:
        x, y = c[:, 0], c[:, 1]
        x2, y2 = np.roll(x, -1), np.roll(y, -1)
        for a in range(len(x)):
            if y[a] == y2[a]:
                continue
            cross = (y[a] > v) != (y2[a] > v)
            xc = x[a] + (v - y[a]) * (x2[a] - x[a]) / (y2[a] - y[a])
            inside ^= cross & (u < xc)
    inside_full[v0:v1, u0:u1] = inside
    return inside_full


def check_rtstruct(path, ct_dir, prefix):
    truth, m, origin = load_truth(prefix, np.uint8)
    planes = ct_planes(ct_dir)
    p0 = next(iter(planes.values()))
    ds = pydicom.dcmread(path)
    fr = ds.ReferencedFrameOfReferenceSequence[0]
    st = fr.RTReferencedStudySequence[0]
    se = st.RTReferencedSeriesSequence[0]
    listed = {c.ReferencedSOPInstanceUID for c in se.ContourImageSequence}
    out = dict(
        frame_ok=fr.FrameOfReferenceUID == p0["frame"],
        study_ok=st.ReferencedSOPInstanceUID == p0["study"] and ds.StudyInstanceUID == p0["study"],
        series_ok=se.SeriesInstanceUID == p0["series"],
        patient_ok=str(ds.PatientID) == p0["patient"],
        all_images_referenced=listed == set(planes.keys()),
        rois={},
    )
    label_of = {int(o.ReferencedROINumber): code_of(o) for o in ds.RTROIObservationsSequence}
    names = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    worst_plane = 0.0
    for rc in ds.ROIContourSequence:
        num = int(rc.ReferencedROINumber)
        lab = label_of[num]
        by_image = {}
        for c in rc.ContourSequence:
            uid = c.ContourImageSequence[0].ReferencedSOPInstanceUID
            pts = np.array(c.ContourData, dtype=float).reshape(-1, 3)
            assert len(pts) == int(c.NumberOfContourPoints)
            p = planes[uid]
            d = pts - p["ipp"]
            normal = np.cross(p["row"], p["col"])
            worst_plane = max(worst_plane, float(np.abs(d @ normal).max()))
            uv = np.stack([d @ p["row"] / p["ps"][1], d @ p["col"] / p["ps"][0]], 1)
            by_image.setdefault(uid, []).append(uv)
        vol = np.zeros_like(truth, dtype=bool)
        for uid, cs in by_image.items():
            p = planes[uid]
            mask = even_odd(cs, p["rows"], p["cols"]).reshape(-1)
            pts = plane_points(p["ipp"], p["row"], p["col"], p["ps"], p["rows"], p["cols"])
            r, ok, _ = place(pts, m, origin, truth.shape)
            sel = mask & ok
            vol[r[sel, 2], r[sel, 1], r[sel, 0]] = True
        t = truth == lab
        inter = int((vol & t).sum())
        dice = 2.0 * inter / max(1, int(vol.sum()) + int(t.sum()))
        ca, cb = centroid_mm(vol, m, origin), centroid_mm(t, m, origin)
        dist = float(np.linalg.norm(np.array(ca) - np.array(cb))) if ca and cb else None
        out["rois"][str(lab)] = dict(name=names[num], dice=dice, centroid_mm=ca,
                                     centroid_distance_mm=dist, contours=len(rc.ContourSequence),
                                     color=[int(x) for x in rc.ROIDisplayColor])
    out["worst_off_plane_mm"] = worst_plane
    return out


def check_rtdose(path, prefix):
    truth, m, origin = load_truth(prefix, np.float32)
    ds = pydicom.dcmread(path)
    scale = float(ds.DoseGridScaling)
    nf = int(ds.NumberOfFrames)
    dose = ds.pixel_array.reshape(nf, ds.Rows, ds.Columns).astype(np.float64) * scale
    iop = np.array(ds.ImageOrientationPatient, dtype=float)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    ipp = np.array(ds.ImagePositionPatient, dtype=float)
    ps = np.array(ds.PixelSpacing, dtype=float)
    offs = np.array(ds.GridFrameOffsetVector, dtype=float)
    placed = np.full(truth.shape, np.nan)
    worst_off = 0.0
    for f in range(nf):
        pts = plane_points(ipp + offs[f] * normal, row, col, ps, ds.Rows, ds.Columns)
        r, ok, off = place(pts, m, origin, truth.shape)
        worst_off = max(worst_off, off)
        vals = dose[f].reshape(-1)
        placed[r[ok, 2], r[ok, 1], r[ok, 0]] = vals[ok]
    missing = int(np.isnan(placed).sum())
    err = np.abs(np.nan_to_num(placed) - truth.astype(np.float64))
    # DVHs (RT DVH module): the mean dose recomputed from the cumulative DVHData
    # pairs (bin width, volume at or above the bin's lower edge), against the
    # stated DVHMeanDose.
    dvhs = []
    for it in ds.get("DVHSequence", []):
        d = np.array(it.DVHData, dtype=float).reshape(-1, 2)
        w, v = d[:, 0], d[:, 1]
        lower = np.concatenate([[0.0], np.cumsum(w)[:-1]])
        diff = v - np.concatenate([v[1:], [0.0]])
        mean = float((diff * (lower + w / 2)).sum() / v[0]) if v[0] > 0 else None
        dvhs.append(dict(roi=int(it.DVHReferencedROISequence[0].ReferencedROINumber),
                         type=str(it.DVHType), volume_cm3=float(v[0]), mean_from_data=mean,
                         mean_stated=float(it.DVHMeanDose), bin_width=float(w[0])))
    ref_ss = None
    if "ReferencedStructureSetSequence" in ds:
        ref_ss = str(ds.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID)
    return dict(dvhs=dvhs, referenced_structure_set=ref_ss,
                scaling=scale, frames=nf, missing_voxels=missing, worst_offset_index=worst_off,
                max_abs_err_gy=float(err.max()), max_dose_gy=float(truth.max()),
                units=str(ds.DoseUnits), summation=str(ds.DoseSummationType),
                frame_of_reference=str(ds.FrameOfReferenceUID))


def main():
    mode = sys.argv[1]
    if mode == "seg":
        out = check_seg(sys.argv[2], sys.argv[3], sys.argv[4])
    elif mode == "rtstruct":
        out = check_rtstruct(sys.argv[2], sys.argv[3], sys.argv[4])
    elif mode == "rtdose":
        out = check_rtdose(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown mode {mode}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
