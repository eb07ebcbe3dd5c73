"""Dataset readers and the 2.5D slicing that crates/seg/src/driver.rs uses.

Every volume becomes (ct_hu float32 [i, j, k], organ labels uint8 [i, j, k],
LPS affine) with the organ labels of crates/core/src/organs.rs: 1 liver, 2 kidney_left,
3 kidney_right, 4 spleen, 5 tumour.
"""
import glob
import os

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

LIVER, KIDNEY_LEFT, KIDNEY_RIGHT, SPLEEN, TUMOUR = 1, 2, 3, 4, 5
# Planes as in driver::Plane::axes: (slice axis, image column axis, image row axis).
PLANES = {"axial": (2, 0, 1), "coronal": (1, 0, 2), "sagittal": (0, 1, 2)}
# Dataset readers reorient to this voxel order (nibabel codes: axis i grows
# toward the patient's Left, j toward Posterior, k toward Superior), the order
# of an axial DICOM series and of organdose's phantoms.
TARGET_AXCODES = ("L", "P", "S")


def load_nifti(path, reorient=True):
    """Voxels in file order (as organdose's reader) or reoriented to
    TARGET_AXCODES; returns (float32 array [i, j, k], LPS affine)."""
    img = nib.load(path)
    slope, inter = img.dataobj.slope, img.dataobj.inter
    if slope == 1 and inter == 0:
        # Unscaled: stored values as f32 (exact for the integer types CT uses),
        # without a float64 copy of a large volume.
        data = np.asarray(img.dataobj).astype(np.float32)
    else:
        # scl_slope / scl_inter in f64, then f32: what read_frame does.
        data = np.asarray(img.get_fdata(dtype=np.float64), dtype=np.float32)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    affine = img.affine
    if reorient:
        o = nib.orientations
        tr = o.ornt_transform(o.io_orientation(affine), o.axcodes2ornt(TARGET_AXCODES))
        affine = affine @ o.inv_ornt_aff(tr, data.shape)
        data = o.apply_orientation(data, tr)
    lps = affine.copy()
    lps[:2] *= -1.0
    return np.ascontiguousarray(data), lps


def patient_x(affine_lps, shape):
    """Patient x (mm, LPS) of every voxel index i, j, k: broadcastable arrays."""
    i, j, k = (np.arange(n, dtype=np.float64) for n in shape)
    a = affine_lps[0]
    return a[0] * i[:, None, None] + a[1] * j[None, :, None] + a[2] * k[None, None, :] + a[3]


def split_kidneys(kidney, ct, affine_lps):
    """Kidney voxels -> KIDNEY_LEFT / KIDNEY_RIGHT by patient x against the
    body's mean x (voxels above -500 HU), as driver::to_organ_labels does
    (LPS: larger x is the patient's left). Voxel-wise, not per component."""
    x = patient_x(affine_lps, ct.shape)
    body = ct > -500.0
    mid = float((x * body).sum() / max(body.sum(), 1)) if body.any() else float(x.mean())
    out = np.zeros(ct.shape, np.uint8)
    out[kidney & (x > mid)] = KIDNEY_LEFT
    out[kidney & ~(x > mid)] = KIDNEY_RIGHT
    return out


def read_phantom(pdir, reorient=True):
    """organdose phantom --format nifti: DIR/<pid>/ct.nii.gz + truth/labels_ct.nii.gz."""
    ct, aff = load_nifti(os.path.join(pdir, "ct.nii.gz"), reorient)
    lab, _ = load_nifti(os.path.join(pdir, "truth", "labels_ct.nii.gz"), reorient)
    return ct, np.rint(lab).astype(np.uint8), aff


def read_phantom_ldct(arg, reorient=True):
    """One visit of a phantom patient: tp<k>_ldct.nii.gz + truth/labels_ldct_tp<k>.nii.gz
    (the SPECT/CT's low-dose, non-contrast CT)."""
    pdir, k = arg
    ct, aff = load_nifti(os.path.join(pdir, f"tp{k}_ldct.nii.gz"), reorient)
    lab, _ = load_nifti(os.path.join(pdir, "truth", f"labels_ldct_tp{k}.nii.gz"), reorient)
    return ct, np.rint(lab).astype(np.uint8), aff


def read_kits(cdir, reorient=True):
    """KiTS19 case_XXXXX: 1 kidney, 2 tumour (merged into kidney), split left/right."""
    ct, aff = load_nifti(os.path.join(cdir, "imaging.nii.gz"), reorient)
    seg, _ = load_nifti(os.path.join(cdir, "segmentation.nii.gz"), reorient)
    return ct, split_kidneys(np.rint(seg) > 0, ct, aff), aff


def read_lits(vol_path, reorient=True):
    """LiTS volume-N.nii: 1 liver, 2 tumour (merged into liver)."""
    seg_path = os.path.join(os.path.dirname(vol_path),
                            os.path.basename(vol_path).replace("volume-", "segmentation-"))
    ct, aff = load_nifti(vol_path, reorient)
    seg, _ = load_nifti(seg_path, reorient)
    return ct, np.where(np.rint(seg) > 0, LIVER, 0).astype(np.uint8), aff


def find_cases(kind, root):
    """[(patient id, reader argument)] of one dataset folder."""
    if kind == "phantom":
        dirs = sorted(d for d in glob.glob(os.path.join(root, "*"))
                      if os.path.isfile(os.path.join(d, "truth", "labels_ct.nii.gz")))
        return [(f"phantom:{os.path.basename(d)}", d) for d in dirs]
    if kind == "phantom-ldct":
        out = []
        for d in sorted(glob.glob(os.path.join(root, "*"))):
            for f in sorted(glob.glob(os.path.join(d, "tp*_ldct.nii.gz"))):
                k = os.path.basename(f)[2:].split("_")[0]
                if os.path.isfile(os.path.join(d, "truth", f"labels_ldct_tp{k}.nii.gz")):
                    # "~" joins a visit to its patient: splits keep a patient's scans together.
                    out.append((f"phantom:{os.path.basename(d)}~tp{k}", (d, k)))
        return out
    if kind == "kits":
        dirs = sorted(d for d in glob.glob(os.path.join(root, "case_*"))
                      if os.path.isfile(os.path.join(d, "segmentation.nii.gz")))
        return [(f"kits:{os.path.basename(d)}", d) for d in dirs]
    if kind == "lits":
        vols = sorted(glob.glob(os.path.join(root, "**", "volume-*.nii*"), recursive=True))
        return [(f"lits:{os.path.basename(v).split('.')[0]}", v) for v in vols]
    raise ValueError(f"unknown dataset kind {kind!r} (phantom, kits, lits)")


READERS = {"phantom": read_phantom, "phantom-ldct": read_phantom_ldct, "kits": read_kits,
           "lits": read_lits}


def window(ct, hu_window):
    """driver::window: HU -> [0, 1] through the window, clamped (float32)."""
    lo, hi = np.float32(hu_window[0]), np.float32(hu_window[1])
    return np.clip((ct.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def plane_image(vol, plane, t):
    """Slice t of a plane as an image [row v, column u] (driver's axes)."""
    sa, ua, va = PLANES[plane]
    img = np.take(vol, t, axis=sa)  # remaining axes keep their order: (ua, va)
    assert ua < va
    return img.T


def resize(img, size):
    """Bilinear, align_corners=False: transform::resize_bilinear."""
    x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None]
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)[0, 0]


def slice_input(win, plane, t, size):
    """driver::slice_input: slices t-1, t, t+1 (edges replicated) -> (3, size, size)."""
    last = win.shape[PLANES[plane][0]] - 1
    return torch.stack([resize(plane_image(win, plane, tt), size)
                        for tt in (max(t - 1, 0), t, min(t + 1, last))])


# --- Input in millimetres: crates/seg/src/slicing.rs, float32 arithmetic in the same order ---

F32 = np.float32
BODY_HU = -500.0
BODY_MARGIN_MM = F32(10.0)
TILE_STEP = F32(0.75)


def spacing_of(affine):
    """Voxel spacing (mm) along i, j, k from an affine."""
    return [float(np.linalg.norm(affine[:3, a])) for a in range(3)]


def axis_tiles(lo, hi, canvas_mm):
    """slicing::axis_tiles: left edges of the windows covering [lo, hi]."""
    lo, hi, canvas_mm = F32(lo), F32(hi), F32(canvas_mm)
    extent = F32(hi - lo)
    if extent <= canvas_mm:
        return [F32(F32((lo + hi) * F32(0.5)) - F32(canvas_mm * F32(0.5)))]
    n = int(np.ceil(F32(F32(extent - canvas_mm) / F32(TILE_STEP * canvas_mm)))) + 1
    step = F32(F32(extent - canvas_mm) / F32(n - 1))
    return [F32(lo + F32(F32(i) * step)) for i in range(n)]


def body_box(ct):
    """slicing::body_box: [(min, max)] index per axis of voxels > -500 HU, or None."""
    body = ct > BODY_HU
    if not body.any():
        return None
    out = []
    for a in range(3):
        has = body.any(axis=tuple(b for b in range(3) if b != a))
        idx = np.nonzero(has)[0]
        out.append((int(idx[0]), int(idx[-1])))
    return out


def axis_range_mm(body, shape, spacing, axis):
    """slicing::axis_range_mm."""
    a, b = body[axis] if body is not None else (0, shape[axis] - 1)
    sp = F32(spacing[axis])
    return (F32(F32(F32(a) * sp) - BODY_MARGIN_MM), F32(F32(F32(b) * sp) + BODY_MARGIN_MM))


def plane_tiles(size, pixel_mm, u_range, v_range):
    """slicing::plane_tiles: [(u0, v0)], v outer."""
    e = F32(F32(size) * F32(pixel_mm))
    us = axis_tiles(u_range[0], u_range[1], e)
    vs = axis_tiles(v_range[0], v_range[1], e)
    return [(u0, v0) for v0 in vs for u0 in us]


def canvas_taps(n, spacing, origin, pixel_mm, size):
    """slicing::canvas_taps as arrays (valid, i0, i1, l0, l1)."""
    x = np.arange(size, dtype=F32)
    mm = F32(origin) + (x + F32(0.5)) * F32(pixel_mm)
    src = mm / F32(spacing)
    last = F32(n - 1)
    valid = (src >= F32(-0.5)) & (src <= last + F32(0.5))
    s = np.clip(src, F32(0.0), last)
    i0 = np.minimum(np.floor(s).astype(np.int64), n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    l1 = (s - i0.astype(F32)).astype(F32)
    return valid, i0, i1, (F32(1.0) - l1).astype(F32), l1


def slice_taps(t, n, spacing, offset_mm):
    """slicing::slice_taps."""
    last = F32(n - 1)
    s = min(max(F32(F32(t) + F32(F32(offset_mm) / F32(spacing))), F32(0.0)), last)
    i0 = min(int(np.floor(s)), n - 1)
    i1 = min(i0 + 1, n - 1)
    l1 = F32(s - F32(i0))
    return i0, i1, F32(F32(1.0) - l1), l1


def _bilinear(img, tu, tv):
    """img [v, u] sampled on a canvas: rows from tv, columns from tu; 0 outside."""
    vu, u0, u1, lu0, lu1 = tu
    vv, v0, v1, lv0, lv1 = tv
    r0, r1 = img[v0], img[v1]
    t0 = r0[:, u0] * lu0[None, :] + r0[:, u1] * lu1[None, :]
    t1 = r1[:, u0] * lu0[None, :] + r1[:, u1] * lu1[None, :]
    out = t0 * lv0[:, None] + t1 * lv1[:, None]
    out[~vv, :] = 0.0
    out[:, ~vu] = 0.0
    return out.astype(F32)


def mm_taps(shape, spacing, plane, tile, size, pixel_mm):
    sa, ua, va = PLANES[plane]
    return (canvas_taps(shape[ua], spacing[ua], tile[0], pixel_mm, size),
            canvas_taps(shape[va], spacing[va], tile[1], pixel_mm, size))


def mm_slice_input(win, spacing, plane, t, tile, size, pixel_mm, neighbor_mm):
    """PlaneSampler::input: channels at -neighbor_mm, 0, +neighbor_mm along the
    slice normal, each resampled to `size` px of `pixel_mm` from tile (u0, v0)."""
    sa, ua, va = PLANES[plane]
    tu, tv = mm_taps(win.shape, spacing, plane, tile, size, pixel_mm)
    chans = []
    for off in (-neighbor_mm, 0.0, neighbor_mm):
        k0, k1, w0, w1 = slice_taps(t, win.shape[sa], spacing[sa], off)
        a = _bilinear(plane_image(win, plane, k0), tu, tv)
        if w1 == 0.0:
            chans.append(a)
        else:
            b = _bilinear(plane_image(win, plane, k1), tu, tv)
            chans.append((a * w0 + b * w1).astype(F32))
    return torch.from_numpy(np.stack(chans))


def mm_slice_target(labels, spacing, plane, t, tile, size, pixel_mm, class_of, min_pixels=4):
    """slice_target on the millimetre canvas: each organ's mask of slice t
    sampled like the centre channel, thresholded at 0.5."""
    tu, tv = mm_taps(labels.shape, spacing, plane, tile, size, pixel_mm)
    lab = plane_image(labels, plane, t)
    return _targets(lab, class_of, size, min_pixels,
                    lambda m: torch.from_numpy(_bilinear(m, tu, tv) >= 0.5))


def slice_target(labels, plane, t, size, class_of, min_pixels=4):
    """Per-instance targets of one slice (stretched input): see _targets."""
    lab = plane_image(labels, plane, t)
    return _targets(lab, class_of, size, min_pixels, lambda m: resize(m, size) >= 0.5)


def _targets(lab, class_of, size, min_pixels, sample):
    """Per-instance targets of one slice: one instance per organ label present
    (so the two kidneys are two instances of class "kidney"). Masks are the
    organ's slice resampled like the input and thresholded at 0.5."""
    boxes, cls, masks = [], [], []
    for organ in np.unique(lab):
        c = class_of.get(int(organ), 0)
        if c == 0:
            continue
        m = sample((lab == organ).astype(np.float32))
        if int(m.sum()) < min_pixels:
            continue
        ys, xs = torch.nonzero(m, as_tuple=True)
        boxes.append([xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1])
        cls.append(c)
        masks.append(m)
    if not boxes:
        return {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64),
                "masks": torch.zeros((0, size, size), dtype=torch.uint8)}
    return {"boxes": torch.tensor(boxes, dtype=torch.float32),
            "labels": torch.tensor(cls, dtype=torch.int64),
            "masks": torch.stack(masks).to(torch.uint8)}


def class_map(classes):
    """Organ label -> model class index, for model classes named as in
    driver::class_targets ("kidney" takes both kidneys; tumour voxels of the
    phantom count as liver when the model has no tumour class: they sit in it)."""
    names = {"liver": [LIVER], "kidney_left": [KIDNEY_LEFT], "kidney_right": [KIDNEY_RIGHT],
             "kidney": [KIDNEY_LEFT, KIDNEY_RIGHT], "spleen": [SPLEEN], "tumour": [TUMOUR]}
    out = {}
    for ci, n in enumerate(classes):
        if ci == 0:
            continue
        if n not in names:
            raise ValueError(f"class {n!r}: not an organdose organ name nor 'kidney'")
        for organ in names[n]:
            out[organ] = ci
    if "tumour" not in classes and LIVER in out:
        out[TUMOUR] = out[LIVER]
    return out


class Volume:
    """One patient ready for slicing: windowed CT and organ labels."""

    def __init__(self, pid, ct, labels, hu_window, affine=None, hu_jitter=None):
        """`hu_jitter` (scale, shift HU): an intensity augmentation of the
        whole volume before the window."""
        self.pid = pid
        if hu_jitter is not None:
            a, b = hu_jitter
            ct = ct.astype(np.float32) * np.float32(a) + np.float32(b)
        self.win = window(ct, hu_window)
        self.labels = labels
        self.spacing = spacing_of(affine) if affine is not None else [1.0, 1.0, 1.0]
        self.body = body_box(ct)

    def crop(self, plane, size, pixel_mm, rng=None):
        """A canvas tile (u0, v0) of `plane`: centred on the body's range where
        the canvas covers it, else a random window inside the range (centred
        without rng). With rng, a random shift of up to 15 % of the canvas."""
        sa, ua, va = PLANES[plane]
        e = F32(F32(size) * F32(pixel_mm))
        out = []
        for ax in (ua, va):
            lo, hi = axis_range_mm(self.body, self.win.shape, self.spacing, ax)
            if hi - lo <= e or rng is None:
                c = (lo + hi) * 0.5 - e * 0.5
                if rng is not None:
                    c += rng.uniform(-0.15, 0.15) * e
            else:
                c = rng.uniform(lo, hi - e)
            out.append(F32(c))
        return tuple(out)

    def slices(self, planes, class_of, empty_fraction, rng, focus=(), other_fraction=1.0):
        """(plane, t) to train on: every slice with a labelled organ, plus a
        random `empty_fraction` of the others as negatives. With `focus`
        (model class indices), slices holding none of those classes but other
        organs are kept with probability `other_fraction` only: a fine-tune
        then spends its time where the model is weak (small kidneys)."""
        wanted = np.isin(self.labels, list(class_of))
        focused = np.isin(self.labels, [o for o, c in class_of.items() if c in focus]) if focus else None
        out = []
        for p in planes:
            sa = PLANES[p][0]
            other = tuple(a for a in range(3) if a != sa)
            has = wanted.any(axis=other)
            has_focus = focused.any(axis=other) if focus else has
            for t in range(self.labels.shape[sa]):
                if has_focus[t]:
                    out.append((p, t))
                elif has[t]:
                    if rng.random() < other_fraction:
                        out.append((p, t))
                elif rng.random() < empty_fraction:
                    out.append((p, t))
        return out


def split_patients(ids, val_fraction, folds, fold, seed):
    """Patient-level split: (train ids, val ids). With folds > 1, fold `fold`
    of a seeded permutation is the validation set. Scans of one patient
    (ids equal up to "~") stay on one side."""
    scans = sorted(ids)
    ids = sorted({i.split("~")[0] for i in scans})
    perm = list(np.random.default_rng(seed).permutation(len(ids)))
    ids = [ids[i] for i in perm]
    if folds > 1:
        val = set(ids[fold::folds])
    else:
        n_val = int(round(len(ids) * val_fraction)) if len(ids) > 1 else 0
        val = set(ids[:n_val])
    return ([i for i in scans if i.split("~")[0] not in val],
            [i for i in scans if i.split("~")[0] in val])
