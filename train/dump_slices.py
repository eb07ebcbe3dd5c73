#!/usr/bin/env python3
"""Parity fixture for tests/it/train_parity.rs: the training code's 2.5D input
(organdose_train.data.slice_input) for a few slices of a small phantom CT.

  organdose phantom --out /tmp/par --seed 7 --count 1 --small --format nifti
  python train/dump_slices.py /tmp/par/<pid>/ct.nii.gz tests/data/train/slices.safetensors

The Rust test writes the same phantom with the same writer and compares
organdose::seg::driver::slice_input on it against these tensors.
"""
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from organdose_train import data as D  # noqa: E402

SIZE = 48
HU = [-100.0, 200.0]
# A coarse canvas (48 px of 7 mm = 336 mm) on which the small phantom needs a few tiles.
MM_PIXEL = 7.0
MM_NEIGHBOR = 2.5


def main():
    src, out = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    ct, _ = D.load_nifti(src, reorient=True)
    raw, _ = D.load_nifti(src, reorient=False)
    # The phantom is written in the training orientation: reorienting is a no-op.
    assert (ct == raw).all(), "phantom NIfTI is not in L, P, S voxel order"
    win = D.window(ct, HU)
    t = {}
    dims = ct.shape
    picks = [("axial", 0), ("axial", dims[2] // 2), ("coronal", dims[1] // 2),
             ("sagittal", dims[0] // 3)]
    for plane, s in picks:
        t[f"{plane}.{s}"] = D.slice_input(win, plane, s, SIZE).contiguous()
    # The millimetre canvas (crates/seg/src/slicing.rs): every tile of each pick, on
    # the body's range, as the driver tiles a plane.
    _, aff = D.load_nifti(src, reorient=True)
    sp = D.spacing_of(aff)
    body = D.body_box(ct)
    for plane, s in picks:
        _, ua, va = D.PLANES[plane]
        tiles = D.plane_tiles(SIZE, MM_PIXEL, D.axis_range_mm(body, dims, sp, ua),
                              D.axis_range_mm(body, dims, sp, va))
        for i, tile in enumerate(tiles):
            t[f"mm.{plane}.{s}.{i}"] = D.mm_slice_input(win, sp, plane, s, tile, SIZE, MM_PIXEL,
                                                       MM_NEIGHBOR).contiguous()
            t[f"tile.{plane}.{s}.{i}"] = torch.tensor([float(tile[0]), float(tile[1])], dtype=torch.float32)
    t["dims"] = torch.tensor(list(dims), dtype=torch.int64)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    save_file(t, out, metadata={"size": str(SIZE), "hu_window": f"{HU[0]},{HU[1]}",
                                "pixel_mm": str(MM_PIXEL), "neighbor_mm": str(MM_NEIGHBOR),
                                "source": os.path.basename(src)})
    print({k: tuple(v.shape) for k, v in t.items()}, os.path.getsize(out), "bytes")


if __name__ == "__main__":
    main()
