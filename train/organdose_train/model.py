"""torchvision Mask R-CNN built from organdose's model config (the dict
below mirrors crates/kernels/src/config.rs ModelConfig) and the model.toml writer.
Same construction as train/make_fixture.py, with the widths as options."""
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import misc as misc_ops

DEPTHS = {18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]),
          50: ("bottleneck", [3, 4, 6, 3]), 101: ("bottleneck", [3, 4, 23, 3])}


def default_config(classes, size=256, depth=50, layers=None, block=None):
    cfg = {
        "weights": "model.safetensors",
        "classes": list(classes),
        "input": {"size": size, "hu_window": [-100.0, 200.0]},
        "transform": {"min_size": size, "max_size": size, "image_mean": [0.485, 0.456, 0.406],
                      "image_std": [0.229, 0.224, 0.225], "size_divisible": 32},
        "backbone": {"depth": depth} if layers is None else {"block": block, "layers": layers},
        "anchors": {"sizes": [32.0, 64.0, 128.0, 256.0, 512.0], "aspect_ratios": [0.5, 1.0, 2.0]},
        "rpn": {"pre_nms_top_n": 1000, "post_nms_top_n": 100, "nms_thresh": 0.7,
                "score_thresh": 0.0, "min_size": 0.001},
        "roi_heads": {"box_roi_pool": "align", "box_roi_pool_size": 7, "mask_roi_pool_size": 14,
                      "sampling_ratio": 2, "score_thresh": 0.9, "nms_thresh": 0.5,
                      "detections_per_img": 5, "bbox_reg_weights": [10.0, 10.0, 5.0, 5.0],
                      # organdose's paste that inverts the training targets (config.rs MaskPaste)
                      "mask_paste": "exact"},
    }
    return cfg


def resolve_backbone(b):
    if "layers" in b:
        return b["block"], list(b["layers"])
    return DEPTHS[b["depth"]]


def build(cfg, fpn_channels=256, representation=1024, mask_channels=256, frozen_bn=False):
    """MaskRCNN with torchvision's module names. frozen_bn: FrozenBatchNorm2d
    (for a pretrained backbone, as torchvision does); otherwise BatchNorm2d,
    whose running statistics organdose folds at load (eps 1e-5 in both)."""
    block, layers = resolve_backbone(cfg["backbone"])
    norm = misc_ops.FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
    body = ResNet(BasicBlock if block == "basic" else Bottleneck, layers, norm_layer=norm)
    exp = 1 if block == "basic" else 4
    backbone = BackboneWithFPN(
        body, return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
        in_channels_list=[64 * exp, 128 * exp, 256 * exp, 512 * exp], out_channels=fpn_channels)
    r, a, rpn, t = cfg["roi_heads"], cfg["anchors"], cfg["rpn"], cfg["transform"]
    if r["box_roi_pool"] != "align":
        raise ValueError("training supports box_roi_pool = 'align' only")
    nc = len(cfg["classes"])
    bp, mp = r["box_roi_pool_size"], r["mask_roi_pool_size"]
    feats = ["0", "1", "2", "3"]
    model = MaskRCNN(
        backbone, num_classes=None,
        min_size=t["min_size"], max_size=t["max_size"],
        image_mean=t["image_mean"], image_std=t["image_std"],
        rpn_anchor_generator=AnchorGenerator(tuple((s,) for s in a["sizes"]),
                                             (tuple(a["aspect_ratios"]),) * len(a["sizes"])),
        rpn_pre_nms_top_n_test=rpn["pre_nms_top_n"], rpn_post_nms_top_n_test=rpn["post_nms_top_n"],
        rpn_nms_thresh=rpn["nms_thresh"], rpn_score_thresh=rpn["score_thresh"],
        box_roi_pool=MultiScaleRoIAlign(feats, bp, r["sampling_ratio"]),
        box_head=TwoMLPHead(fpn_channels * bp * bp, representation),
        box_predictor=FastRCNNPredictor(representation, nc),
        box_score_thresh=r["score_thresh"], box_nms_thresh=r["nms_thresh"],
        box_detections_per_img=r["detections_per_img"], bbox_reg_weights=r["bbox_reg_weights"],
        mask_roi_pool=MultiScaleRoIAlign(feats, mp, r["sampling_ratio"]),
        mask_head=MaskRCNNHeads(fpn_channels, [mask_channels] * 4, 1),
        mask_predictor=MaskRCNNPredictor(mask_channels, mask_channels, nc),
    )
    model.transform.size_divisible = t["size_divisible"]
    return model


def _val(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, int):
        return str(v)
    return "[" + ", ".join(_val(x) for x in v) + "]"


def to_toml(cfg, header=""):
    """model.toml text (flat tables only, which is all ModelConfig has)."""
    lines = [f"# {h}" for h in header.splitlines()]
    for k, v in cfg.items():
        if not isinstance(v, dict):
            lines.append(f"{k} = {_val(v)}")
    for k, v in cfg.items():
        if isinstance(v, dict):
            lines += ["", f"[{k}]"] + [f"{kk} = {_val(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"
