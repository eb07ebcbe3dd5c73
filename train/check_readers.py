#!/usr/bin/env python3
"""Self-check of the KiTS19 / LiTS readers without the real data: writes one
phantom patient the way those datasets store it (KiTS19 slice-first with a
permuted affine, kidney 1 + tumour 2; LiTS .nii, liver 1 + tumour 2) and
checks that the readers give back the phantom's CT, kidney left/right labels
and liver mask in the training orientation.

  organdose phantom --out /tmp/ph --seed 100 --count 1 --small --format nifti
  python train/check_readers.py /tmp/ph/PH100-001 /tmp/fake_datasets
"""
import os
import sys

import nibabel as nib
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from organdose_train import data as D  # noqa: E402


def main():
    pdir, out = sys.argv[1], sys.argv[2]
    ct, lab, aff = D.read_phantom(pdir, reorient=False)
    ras = aff.copy()
    ras[:2] *= -1
    kdir = os.path.join(out, "kits", "case_00000")
    os.makedirs(kdir, exist_ok=True)
    seg = np.isin(lab, [D.KIDNEY_LEFT, D.KIDNEY_RIGHT]).astype(np.uint8)
    seg[lab == D.KIDNEY_RIGHT] = 2  # one kidney as "tumour": must merge back
    perm = ras[:, [2, 1, 0, 3]]  # axes stored (k, j, i)
    nib.save(nib.Nifti1Image(np.transpose(ct, (2, 1, 0)).astype(np.int16), perm),
             os.path.join(kdir, "imaging.nii.gz"))
    nib.save(nib.Nifti1Image(np.transpose(seg, (2, 1, 0)), perm), os.path.join(kdir, "segmentation.nii.gz"))
    (pid, arg), = D.find_cases("kits", os.path.join(out, "kits"))
    c, l, a = D.read_kits(arg)
    kid = np.where(np.isin(lab, [D.KIDNEY_LEFT, D.KIDNEY_RIGHT]), lab, 0)
    assert np.array_equal(c, ct) and np.allclose(a, aff), "KiTS19: CT or geometry differs"
    assert np.array_equal(l, kid), "KiTS19: kidney labels or left/right differ"
    ldir = os.path.join(out, "lits")
    os.makedirs(ldir, exist_ok=True)
    ls = (lab == D.LIVER).astype(np.uint8)
    ls[lab == D.TUMOUR] = 2
    nib.save(nib.Nifti1Image(ct.astype(np.int16), ras), os.path.join(ldir, "volume-3.nii"))
    nib.save(nib.Nifti1Image(ls, ras), os.path.join(ldir, "segmentation-3.nii"))
    (pid2, arg2), = D.find_cases("lits", ldir)
    c, l, _ = D.read_lits(arg2)
    assert np.array_equal(c, ct), "LiTS: CT differs"
    assert np.array_equal(l == D.LIVER, np.isin(lab, [D.LIVER, D.TUMOUR])), "LiTS: liver differs"
    print(f"ok: {pid} and {pid2} read back as the phantom")


if __name__ == "__main__":
    main()
