#!/usr/bin/env python3
"""torchvision side of the segmentation bench, and the bench models.

For each (depth, input size) it builds torchvision's Mask R-CNN with the
project's settings (3 classes, 100 post-NMS proposals, 5 detections, 256-channel
FPN, torchvision's default heads), random weights, saves them with a model.toml
under OUT/r{depth}_{size}/ for the Rust bench (cargo run --release --example
seg_bench), and times eager inference with torch.set_num_threads(THREADS).
Prints one line per config: depth size ms_per_slice peak_rss_mb.

Usage: python bench/torchvision_bench.py OUT [THREADS] [BATCH] [REPS] [CONFIGS]
CONFIGS: comma-separated DEPTHxSIZE[xBOXPOOL], default 18x256,18x512,50x256,50x512.

Trained model: python bench/torchvision_bench.py OUT THREADS BATCH REPS model:DIR CT.nii.gz
loads DIR (model.toml + safetensors, as train/train.py exports) and times it on
BATCH real axial slices through the middle of the CT's kidneys (2.5D input, the
Rust driver's preprocessing), written to OUT/input.f32 for the Rust side.
Versions: train/requirements-fixture.txt.
"""
import os
import resource
import sys
import time

import torch
from safetensors.torch import save_file
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign

TOML = """weights = "model.safetensors"
classes = ["background", "liver", "kidney"]
[input]
size = {size}
hu_window = [-100.0, 200.0]
[transform]
min_size = {size}
max_size = {size}
[backbone]
depth = {depth}
[rpn]
pre_nms_top_n = 1000
post_nms_top_n = 100
nms_thresh = 0.7
score_thresh = 0.0
min_size = 0.001
[roi_heads]
box_roi_pool = "align"
box_roi_pool_size = {pool}
mask_roi_pool_size = 14
sampling_ratio = 2
score_thresh = 0.05
nms_thresh = 0.5
detections_per_img = 5
bbox_reg_weights = [10.0, 10.0, 5.0, 5.0]
"""


def build(depth, size, pool=7):
    backbone = resnet_fpn_backbone(backbone_name=f"resnet{depth}", weights=None, trainable_layers=0)
    extra = {}
    if pool != 7:
        # The paper's "28x28 RoI pooling" read as the box head's pool size.
        extra = dict(
            box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], pool, 2),
            box_head=TwoMLPHead(256 * pool * pool, 1024),
        )
    return MaskRCNN(
        backbone,
        num_classes=3,
        min_size=size,
        max_size=size,
        rpn_pre_nms_top_n_test=1000,
        rpn_post_nms_top_n_test=100,
        box_score_thresh=0.05,
        box_detections_per_img=5,
        **extra,
    ).eval()


@torch.no_grad()
def time_and_report(m, x, reps, name):
    """One warm-up, then the fastest of `reps` passes per slice (the machine is
    shared: slower repetitions saw other load), detections and peak RSS."""
    m(x)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        r = m(x)
        times.append((time.perf_counter() - t0) / len(x))
    ndet = sum(len(o["boxes"]) for o in r) / len(x)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"torchvision {name}: {min(times) * 1e3:.0f} ms/slice (min of {reps}; "
          f"median {sorted(times)[len(times) // 2] * 1e3:.0f}), {ndet:.1f} det/slice, "
          f"peak RSS {rss:.0f} MB", flush=True)
    return times, ndet


def trained(out, threads, batch, reps, mdir, ct_path):
    """The shipped (or any exported) model on real slices."""
    import tomllib
    import numpy as np
    from safetensors.torch import load_file
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "train"))
    from organdose_train import data as D
    from organdose_train import model as M
    torch.set_num_threads(threads)
    with open(os.path.join(mdir, "model.toml"), "rb") as f:
        cfg = tomllib.load(f)
    sd = load_file(os.path.join(mdir, cfg.get("weights", "model.safetensors")))
    sd = {k: v.float() for k, v in sd.items()}
    fpn = sd["backbone.fpn.inner_blocks.0.0.weight"].shape[0]
    rep = sd["roi_heads.box_head.fc6.weight"].shape[0]
    mch = sd["roi_heads.mask_head.0.0.weight"].shape[0]
    m = M.build(cfg, fpn, rep, mch)
    missing, unexpected = m.load_state_dict(sd, strict=False)
    if [k for k in missing if not k.endswith("num_batches_tracked")] or unexpected:
        sys.exit(f"{mdir}: state dict mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    m.eval()
    ct, _ = D.load_nifti(ct_path)
    win = D.window(ct, cfg["input"]["hu_window"])
    k0 = ct.shape[2] // 2 - batch // 2
    size = cfg["input"]["size"]
    x = [D.slice_input(win, "axial", k0 + i, size) for i in range(batch)]
    os.makedirs(out, exist_ok=True)
    torch.stack(x).numpy().astype(np.float32).tofile(os.path.join(out, "input.f32"))
    times, ndet = time_and_report(m, x, reps, mdir)
    # What `organdose bench --torchvision OUT` compares its forward pass with.
    import json
    import torchvision
    with open(os.path.join(out, "torchvision.json"), "w") as fh:
        json.dump({
            "model": os.path.abspath(mdir),
            "threads": threads,
            "batch": batch,
            "size": size,
            "reps": reps,
            "ms_per_slice_min": min(times) * 1e3,
            "ms_per_slice_median": sorted(times)[len(times) // 2] * 1e3,
            "det_per_slice": ndet,
            "torch_version": f"torch {torch.__version__}, torchvision {torchvision.__version__}",
        }, fh, indent=1)


def main():
    out = sys.argv[1]
    if len(sys.argv) > 6 and sys.argv[5].startswith("model:"):
        return trained(out, int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                       sys.argv[5][len("model:"):], sys.argv[6])
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    reps = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    configs = [(18, 256, 7), (18, 512, 7), (50, 256, 7), (50, 512, 7)]
    if len(sys.argv) > 5:
        # e.g. 18x256,50x512x28 (depth x size [x box pool size])
        configs = [tuple(int(v) for v in (c + "x7").split("x")[:3]) for c in sys.argv[5].split(",")]
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    for depth, size, pool in configs:
        m = build(depth, size, pool)
        d = os.path.join(out, f"r{depth}_{size}" + ("" if pool == 7 else f"_box{pool}"))
        os.makedirs(d, exist_ok=True)
        sd = {k: v.contiguous() for k, v in m.state_dict().items() if v.is_floating_point()}
        save_file(sd, os.path.join(d, "model.safetensors"))
        with open(os.path.join(d, "model.toml"), "w") as fh:
            fh.write(TOML.format(size=size, depth=depth, pool=pool))
        x = [torch.rand(3, size, size) for _ in range(batch)]
        time_and_report(m, x, reps, os.path.basename(d))


if __name__ == "__main__":
    main()
