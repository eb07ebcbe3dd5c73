#!/usr/bin/env python3
"""Reference fixtures for the Rust Mask R-CNN (tests/it/seg_parity.rs).

Builds a torchvision Mask R-CNN with torchvision's module layout and state-dict
names, seeded weights drawn from few values (sparse ternary, stored as fp16 so
the gzipped file stays small and both sides use the same numbers), runs it on
two inputs and saves weights, inputs and outputs (FPN features, RPN proposals,
boxes, labels, scores, masks) as safetensors under tests/data/seg/. Also saves
a RoIAlign / RoI max pooling fixture straight from torchvision.ops.

Run: python train/make_fixture.py [--box-pool 28]   (versions in train/requirements-fixture.txt;
fixtures committed were made with torch 2.15.0, torchvision 0.29.2, CPU).
CI does not run this: the outputs are committed.
"""
import gzip
import os
import sys

import torch
import torchvision
from safetensors.torch import load, save, save_file
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.resnet import BasicBlock, ResNet
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import misc as misc_ops

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "seg")
FPN_CH = 32
REP = 64
NUM_CLASSES = 3
SIZE = 128  # transform min_size = max_size; inputs are 112 so the resize path runs

# Mirrors tests/data/seg/model.toml.
CFG = dict(
    rpn_pre_nms_top_n_test=1000,
    rpn_post_nms_top_n_test=50,
    box_score_thresh=0.3,
    box_nms_thresh=0.5,
    box_detections_per_img=10,
)


def build(box_pool=7):
    body = ResNet(BasicBlock, [1, 1, 1, 1], norm_layer=misc_ops.FrozenBatchNorm2d)
    backbone = BackboneWithFPN(
        body,
        return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
        in_channels_list=[64, 128, 256, 512],
        out_channels=FPN_CH,
    )
    model = MaskRCNN(
        backbone,
        num_classes=None,
        min_size=SIZE,
        max_size=SIZE,
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], box_pool, 2),
        box_head=TwoMLPHead(FPN_CH * box_pool * box_pool, REP),
        box_predictor=FastRCNNPredictor(REP, NUM_CLASSES),
        mask_head=MaskRCNNHeads(FPN_CH, [FPN_CH] * 4, 1),
        mask_predictor=MaskRCNNPredictor(FPN_CH, FPN_CH, NUM_CLASSES),
        **CFG,
    )
    return model.eval()


def fill_weights(model, g, box_pool=7):
    sd = model.state_dict()
    new = {}
    for k, v in sd.items():
        if not v.is_floating_point():
            new[k] = v
            continue
        if k.endswith("running_var"):
            t = torch.tensor([0.5, 1.0, 2.0])[torch.randint(0, 3, v.shape, generator=g)]
        elif k.endswith("running_mean") or (k.endswith(".bias") and v.dim() == 1):
            t = torch.tensor([-0.1, 0.0, 0.1])[torch.randint(0, 3, v.shape, generator=g)]
        elif v.dim() == 1:  # BN gamma
            t = torch.tensor([0.5, 1.0])[torch.randint(0, 2, v.shape, generator=g)]
        else:
            fan_in = v[0].numel() if "conv5_mask" not in k else v.shape[0] * v[0, 0].numel()
            p = 0.2  # fraction of non-zeros: sparse ternary compresses well
            if box_pool != 7 and k.endswith("fc6.weight"):
                p = 0.05  # the 28x28 fc6 is large: sparser still
            s = (2.0 / fan_in / p) ** 0.5
            sign = torch.randint(0, 2, v.shape, generator=g) * 2 - 1
            nz = (torch.rand(v.shape, generator=g) < p).float()
            t = s * sign * nz
        new[k] = t.to(torch.float16).to(torch.float32)
    # Non-trivial detections: favour the organ classes, and push mask logits
    # away from 0.5 so the thresholded masks do not hinge on rounding.
    new["roi_heads.box_predictor.cls_score.bias"] = torch.tensor([0.0, 1.5, 1.0])
    new["roi_heads.mask_predictor.mask_fcn_logits.weight"] *= 8
    # Where a RoI's mask features are all zero the logit is the bias: keep it
    # off 0 so that such masks are not 0.5 everywhere (a tie at the threshold).
    new["roi_heads.mask_predictor.mask_fcn_logits.bias"] = torch.tensor([-1.0, -1.0, -1.0])
    model.load_state_dict(new)
    return {k: v.to(torch.float16).contiguous() for k, v in new.items() if v.is_floating_point()}


def inputs(g):
    n, h, w = 2, 112, 112
    x = torch.rand((n, 3, h, w), generator=g) * 0.3
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    # A few bright blobs so the images have structure.
    for b in range(n):
        for _ in range(3):
            cy, cx = torch.randint(15, h - 15, (2,), generator=g).tolist()
            r = float(torch.randint(6, 20, (1,), generator=g))
            blob = (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r).float()
            x[b] += 0.6 * blob[None]
    return x.clamp(0, 1)


def ops_fixture(g):
    f = torch.randn((2, 4, 20, 24), generator=g)
    rois = torch.tensor(
        [
            [0, 1.3, 2.2, 15.7, 11.1],
            [1, -3.0, -2.0, 30.0, 25.0],
            [0, 10.0, 10.0, 10.4, 10.2],
            [1, 22.5, 17.5, 40.0, 40.0],
            [0, 0.0, 0.0, 95.0, 79.0],
        ]
    )
    out = {"features": f, "rois": rois}
    for sr in (2, 0):
        for al in (False, True):
            out[f"align_s{sr}_{int(al)}"] = torchvision.ops.roi_align(f, rois, 7, 0.5, sr, al)
    out["pool28"] = torchvision.ops.roi_pool(f, rois, 28, 0.5)
    out["pool7_s1"] = torchvision.ops.roi_pool(f, rois, 7, 1.0)
    return out


def main():
    # --box-pool 28: the paper's 28x28 read as the box head's RoIAlign size;
    # written to tests/data/seg/box28/ (same inputs; the tensors that differ
    # from the main fixture's weights). Run after the main fixture.
    box_pool = int(sys.argv[sys.argv.index("--box-pool") + 1]) if "--box-pool" in sys.argv else 7
    out_dir = OUT if box_pool == 7 else os.path.join(OUT, f"box{box_pool}")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(1234)
    model = build(box_pool)
    weights = fill_weights(model, g, box_pool)
    if box_pool != 7:
        # Same weights as the main fixture wherever the shapes agree (so only
        # the differing tensors are stored), a new fc6, a damped classifier.
        with gzip.open(os.path.join(OUT, "weights.safetensors.gz"), "rb") as fh:
            base = load(fh.read())
        merged = {k: base[k] if k in base and base[k].shape == v.shape else v for k, v in weights.items()}
        merged["roi_heads.box_predictor.cls_score.weight"] = (
            base["roi_heads.box_predictor.cls_score.weight"].float() * 0.1
        ).half()
        model.load_state_dict({k: v.float() for k, v in merged.items()})
        weights = {k: v for k, v in merged.items() if k not in base or not torch.equal(base[k], v)}
    x = inputs(g)
    with torch.no_grad():
        imgs = list(x)
        original = [tuple(i.shape[-2:]) for i in imgs]
        images, _ = model.transform(imgs)
        feats = model.backbone(images.tensors)
        props, _ = model.rpn(images, feats)
        dets, _ = model.roi_heads(feats, props, images.image_sizes)
        dets = model.transform.postprocess(dets, images.image_sizes, original)
        ref = model(imgs)  # the plain model call gives the same
    for a, b in zip(dets, ref):
        assert torch.equal(a["boxes"], b["boxes"])
    out = {"input": x.contiguous()}
    for k, v in feats.items():
        out[f"features.{k}"] = v.contiguous()
    for i, p in enumerate(props):
        out[f"proposals.{i}"] = p.contiguous()
    for i, d in enumerate(dets):
        out[f"boxes.{i}"] = d["boxes"].contiguous()
        out[f"labels.{i}"] = d["labels"].contiguous()
        out[f"scores.{i}"] = d["scores"].contiguous()
        out[f"masks.{i}"] = d["masks"].contiguous()
        print(f"image {i}: {len(d['boxes'])} detections, labels {d['labels'].tolist()}, "
              f"scores {[round(s, 3) for s in d['scores'].tolist()]}, {len(props[i])} proposals")
    if box_pool != 7:
        # Keeps this fixture small: the features are checked by the main one.
        out = {k: v for k, v in out.items() if not k.startswith("features.")}
    os.makedirs(out_dir, exist_ok=True)
    wname = "weights.safetensors.gz" if box_pool == 7 else "weights_override.safetensors.gz"
    with gzip.open(os.path.join(out_dir, wname), "wb", compresslevel=9) as fh:
        fh.write(save(weights))
    with gzip.open(os.path.join(out_dir, "reference.safetensors.gz"), "wb", compresslevel=9) as fh:
        fh.write(save(out))
    if box_pool == 7:
        save_file(ops_fixture(g), os.path.join(OUT, "roi_ops.safetensors"))
    for f in sorted(os.listdir(out_dir)):
        print(f, os.path.getsize(os.path.join(out_dir, f)))
    print("torch", torch.__version__, "torchvision", torchvision.__version__, file=sys.stderr)


if __name__ == "__main__":
    main()
