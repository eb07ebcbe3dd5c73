#!/usr/bin/env python3
"""Train organdose's 2.5D Mask R-CNN with torchvision; export a model folder
(model.safetensors + model.toml + manifest.json) that `organdose segment
--weights DIR` loads. See train/README.md.

  python train/train.py --data phantom:DIR [--data kits:DIR] [--data lits:DIR] --out weights/NAME
"""
import argparse
import datetime
import hashlib
import json
import os
import sys
import time

import numpy as np
import torch
import torchvision
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from organdose_train import data as D  # noqa: E402
from organdose_train import model as M  # noqa: E402


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", action="append", required=True,
                   help="KIND:DIR, KIND one of phantom, phantom-ldct, kits, lits (repeatable)")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--classes", default="liver,kidney,spleen",
                   help="model classes after background (organ names or 'kidney')")
    p.add_argument("--planes", default="axial,coronal,sagittal")
    p.add_argument("--size", type=int, default=256, help="input.size (slices resampled to size x size)")
    p.add_argument("--pixel-mm", type=float, default=1.6,
                   help="input.pixel_mm: slices resampled to this pixel size on the size x size canvas "
                        "(padded or tiled); 0: stretched to size x size (models before 2026-12)")
    p.add_argument("--neighbor-mm", type=float, default=2.5,
                   help="input.neighbor_mm: distance of the two neighbour channels along the slice normal")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="intensity, scale, rotation, blur, resolution and noise augmentation")
    p.add_argument("--zoom", default="0.75,1.33",
                   help="LO,HI: range of the augmentation zoom (log-uniform); >1 enlarges the organs")
    p.add_argument("--zoom-p", type=float, default=0.5,
                   help="share of slices rotated and zoomed by the augmentation")
    p.add_argument("--depth", type=int, default=50, choices=sorted(M.DEPTHS))
    p.add_argument("--layers", default=None, help="blocks per stage, e.g. 1,1,1,1 (overrides --depth)")
    p.add_argument("--block", default="basic", choices=["basic", "bottleneck"])
    p.add_argument("--fpn-channels", type=int, default=256)
    p.add_argument("--representation", type=int, default=1024, help="box head width")
    p.add_argument("--mask-channels", type=int, default=256)
    p.add_argument("--box-pool", type=int, default=7)
    p.add_argument("--init", default=None,
                   help="exported model folder to start from (continue training; same architecture)")
    p.add_argument("--pretrained", default=None,
                   help="torchvision ResNet state dict (.pth/.safetensors) for backbone.body")
    # The paper's schedule: heads only, 50 epochs, lr 1e-3; then all layers at lr 1e-4.
    p.add_argument("--heads-epochs", type=int, default=50)
    p.add_argument("--heads-lr", type=float, default=1e-3)
    p.add_argument("--all-epochs", type=int, default=100)
    p.add_argument("--all-lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"],
                   help="sgd (the paper: momentum 0.9, weight decay 1e-4) or adamw (converges faster from scratch)")
    p.add_argument("--warmup-steps", type=int, default=0, help="linear learning-rate warm-up at the start of each stage")
    p.add_argument("--lr-drop-at", type=float, default=0.0,
                   help="with --max-time-min: divide the learning rate by 10 after this share of the time (0: never)")
    p.add_argument("--rois-per-image", type=int, default=512,
                   help="RoIs sampled per image for the box and mask losses (torchvision: 512); training only")
    p.add_argument("--max-slices-per-epoch", type=int, default=0, help="0: all")
    p.add_argument("--empty-fraction", type=float, default=0.05, help="share of organ-free slices kept")
    p.add_argument("--focus-classes", default="",
                   help="comma-separated model classes (e.g. kidney): slices without them but with other organs "
                        "are kept at --focus-other-fraction only (fine-tuning on a weak class)")
    p.add_argument("--focus-other-fraction", type=float, default=1.0)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--folds", type=int, default=1, help="k-fold: patients in k folds")
    p.add_argument("--fold", type=int, default=0, help="which fold validates")
    p.add_argument("--max-time-min", type=float, default=0, help="stop after this many minutes (0: no limit)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workers", type=int, default=0,
                   help="data-loading processes (0: load in the training process); use them with a GPU")
    p.add_argument("--shuffle-buffer", type=int, default=0,
                   help="slices each loader holds and draws from at random, mixing volumes (0: one volume at a time)")
    p.add_argument("--fp16", action="store_true", help="store weights as fp16")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args()


# Augmentation zoom (lo, hi, share of slices) of steps 1-7: see augment.
ZOOM = (0.75, 1.33, 0.5)


class Progress:
    """A one-line progress bar on stderr."""

    def __init__(self, total, label):
        self.total, self.label, self.n, self.t0 = max(total, 1), label, 0, time.time()

    def update(self, n, text=""):
        self.n += n
        f = self.n / self.total
        el = time.time() - self.t0
        eta = el / f - el if f > 0 else 0
        bar = "#" * int(30 * f)
        sys.stderr.write(f"\r{self.label} [{bar:<30}] {self.n}/{self.total} {el:.0f}s<{eta:.0f}s {text}   ")
        sys.stderr.flush()

    def close(self):
        sys.stderr.write("\n")


def load_cases(specs):
    cases = []
    for s in specs:
        kind, _, root = s.partition(":")
        found = D.find_cases(kind, root)
        if not found:
            sys.exit(f"no {kind} cases under {root}")
        cases += [(pid, kind, arg) for pid, arg in found]
    return cases


class SliceStream(torch.utils.data.IterableDataset):
    """(image, target) samples: volumes in random order, each loaded once,
    its slices shuffled (a volume cache would not fit real datasets). With
    DataLoader workers each worker takes every n-th volume of the same
    permutation; a shuffle buffer mixes slices of several volumes."""

    def __init__(self, cases, cfg, planes, class_of, args, limit):
        self.cases, self.cfg, self.planes, self.class_of = cases, cfg, planes, class_of
        self.empty_fraction, self.buffer = args.empty_fraction, args.shuffle_buffer
        self.focus, self.other_fraction = args.focus, args.focus_other_fraction
        self.per_vol = limit // len(cases) + 1 if limit else 0
        self.seed = args.seed
        self.augment = args.augment
        self.zoom = zoom_of(args)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        order = np.random.default_rng(self.seed).permutation(len(self.cases))[wid::nw]
        rng = np.random.default_rng([self.seed, wid])
        size = self.cfg["input"]["size"]
        buf = []
        for vi in order:
            pid, kind, arg = self.cases[vi]
            ct, lab, aff = D.READERS[kind](arg)
            jit = (rng.uniform(0.93, 1.07), rng.uniform(-15.0, 15.0)) if self.augment else None
            vol = D.Volume(pid, ct, lab, self.cfg["input"]["hu_window"], aff, jit)
            del ct
            sl = vol.slices(self.planes, self.class_of, self.empty_fraction, rng, self.focus, self.other_fraction)
            rng.shuffle(sl)
            if self.per_vol:
                sl = sl[:self.per_vol]
            for p, t in sl:
                sample = make_sample(vol, p, t, self.cfg, self.class_of, rng if self.augment else None,
                                     zoom=self.zoom)
                if self.buffer <= 0:
                    yield sample
                    continue
                buf.append(sample)
                if len(buf) >= self.buffer:
                    yield buf.pop(int(rng.integers(len(buf))))
        rng.shuffle(buf)
        yield from buf


def zoom_of(args):
    """(lo, hi, p) of --zoom and --zoom-p, checked."""
    try:
        lo, hi = (float(v) for v in args.zoom.split(","))
    except ValueError:
        sys.exit(f"--zoom {args.zoom!r}: expected LO,HI, e.g. 0.75,1.33")
    if not (0.0 < lo <= hi) or not (0.0 <= args.zoom_p <= 1.0):
        sys.exit(f"--zoom {args.zoom} --zoom-p {args.zoom_p}: need 0 < LO <= HI and 0 <= p <= 1")
    return lo, hi, args.zoom_p


def make_sample(vol, p, t, cfg, class_of, rng=None, min_pixels=4, zoom=ZOOM):
    """(input, target) of slice t of plane p, as the Rust driver builds its
    input (stretched, or on the millimetre canvas when the config has
    pixel_mm); with rng, augmented (see augment)."""
    inp = cfg["input"]
    size = inp["size"]
    if "pixel_mm" not in inp:
        x = D.slice_input(vol.win, p, t, size)
        y = D.slice_target(vol.labels, p, t, size, class_of, min_pixels)
    else:
        px = inp["pixel_mm"]
        if rng is not None:
            # Scale jitter: the body sizes of real patients vary by more than this.
            px = px * float(np.exp(rng.uniform(-0.12, 0.12)))
        tile = vol.crop(p, size, px, rng)
        x = D.mm_slice_input(vol.win, vol.spacing, p, t, tile, size, px, inp.get("neighbor_mm", 2.5))
        y = D.mm_slice_target(vol.labels, vol.spacing, p, t, tile, size, px, class_of, min_pixels)
    if rng is not None:
        x, y = augment(x, y, rng, min_pixels, zoom)
    return x, y


def augment(x, y, rng, min_pixels=4, zoom=ZOOM):
    """Small rotation and zoom (image and masks), intensity, blur, lower
    resolution, noise: what separates one scanner's images and one patient's
    size from another's. Boxes follow the masks."""
    import torchvision.transforms.functional as TF
    masks = y["masks"]
    lo, hi, share = zoom
    if rng.random() < share:
        # Rotation and zoom in one affine: patients' organs differ in size by
        # +-25 %, and a slice whose pixel size is only guessed (8-bit exports)
        # reaches the network off scale; the real-CT evaluation showed the
        # model failing on kidneys 20 % smaller than it was trained on.
        ang = float(rng.uniform(-10.0, 10.0))
        z = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        x = TF.affine(x, ang, [0, 0], z, [0.0, 0.0], interpolation=TF.InterpolationMode.BILINEAR)
        if len(masks):
            masks = TF.affine(masks, ang, [0, 0], z, [0.0, 0.0],
                              interpolation=TF.InterpolationMode.NEAREST)
    if rng.random() < 0.5:
        # Scanner calibration and contrast timing: +-20 HU offset, +-10 %
        # contrast, on the [-100, 200] HU window (300 HU span).
        # Fat and air below the window stay below it.
        shifted = (x - 0.5) * float(rng.uniform(0.9, 1.1)) + 0.5 + float(rng.uniform(-20.0, 20.0)) / 300.0
        x = torch.where(x > 0.0, shifted, x)
    if rng.random() < 0.25:
        x = TF.gaussian_blur(x, 5, float(rng.uniform(0.4, 1.2)))
    if rng.random() < 0.2:
        s = x.shape[-1]
        f = float(rng.uniform(0.4, 0.75))
        lo = torch.nn.functional.interpolate(x[None], scale_factor=f, mode="bilinear", align_corners=False)
        x = torch.nn.functional.interpolate(lo, size=(s, s), mode="bilinear", align_corners=False)[0]
    if rng.random() < 0.5:
        x = x + torch.randn_like(x) * float(rng.uniform(0.0, 0.05))
    x = x.clamp(0.0, 1.0).contiguous()
    keep, boxes = [], []
    for i, m in enumerate(masks):
        if int(m.sum()) < min_pixels:
            continue
        ys, xs = torch.nonzero(m, as_tuple=True)
        boxes.append([xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1])
        keep.append(i)
    if not keep:
        return x, {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64),
                   "masks": torch.zeros((0,) + tuple(x.shape[-2:]), dtype=torch.uint8)}
    return x, {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": y["labels"][keep],
               "masks": masks[keep].contiguous()}


def as_lists(batch):
    return [b[0] for b in batch], [b[1] for b in batch]


def batches(stream, args, epoch_seed):
    stream.seed = epoch_seed
    return torch.utils.data.DataLoader(stream, batch_size=args.batch_size, num_workers=args.workers,
                                       collate_fn=as_lists, prefetch_factor=4 if args.workers else None)


def _count_case(job):
    (pid, kind, arg), planes, class_of, empty_fraction, focus, other_fraction, seed = job
    ct, lab, _ = D.READERS[kind](arg)
    return len(D.Volume(pid, ct, lab, [-100.0, 200.0]).slices(planes, class_of, empty_fraction,
                                                             np.random.default_rng(seed), focus, other_fraction))


def count_slices(cases, planes, class_of, args, limit):
    jobs = [(c, planes, class_of, args.empty_fraction, args.focus, args.focus_other_fraction, [args.seed, i])
            for i, c in enumerate(cases)]
    if args.workers > 1:
        import multiprocessing
        with multiprocessing.Pool(args.workers) as pool:
            counts = pool.map(_count_case, jobs)
    else:
        counts = [_count_case(j) for j in jobs]
    n = sum(counts)
    return min(n, (limit // len(cases) + 1) * len(cases)) if limit else n


@torch.no_grad()
def validate(model, cases, cfg, planes, class_of, args, device):
    """Slice-level Dice per class on the validation patients (every slice with
    an organ, at input size, masks >= 0.5 after the config's score threshold):
    a quick check; `organdose eval` gives the 3-D, voted numbers."""
    model.eval()
    nc = len(cfg["classes"])
    inter, psum, tsum = np.zeros(nc), np.zeros(nc), np.zeros(nc)
    size = cfg["input"]["size"]
    rng = np.random.default_rng(0)
    for pid, kind, arg in cases:
        ct, lab, aff = D.READERS[kind](arg)
        vol = D.Volume(pid, ct, lab, cfg["input"]["hu_window"], aff)
        sl = vol.slices(planes, class_of, 0.0, rng)
        for b in range(0, len(sl), 16):  # batched: one slice per call starves a GPU
            chunk = sl[b:b + 16]
            samples = [make_sample(vol, p, t, cfg, class_of, None, min_pixels=1) for p, t in chunk]
            outs = model([x.to(device) for x, _ in samples])
            for (_, tg), out in zip(samples, outs):
                for c in range(1, nc):
                    pm = torch.zeros((size, size), dtype=torch.bool)
                    for m, l in zip(out["masks"], out["labels"]):
                        if int(l) == c:
                            pm |= m[0].cpu() >= 0.5
                    tm = torch.zeros((size, size), dtype=torch.bool)
                    for m, l in zip(tg["masks"], tg["labels"]):
                        if int(l) == c:
                            tm |= m.bool()
                    inter[c] += (pm & tm).sum().item()
                    psum[c] += pm.sum().item()
                    tsum[c] += tm.sum().item()
    model.train()
    return {cfg["classes"][c]: (float(2 * inter[c] / (psum[c] + tsum[c])) if psum[c] + tsum[c] else None)
            for c in range(1, nc)}


def set_stage(model, heads_only):
    """Heads only = everything but backbone.body (FPN, RPN, RoI heads), as
    the paper's Matterport 'heads'."""
    for n, p in model.named_parameters():
        p.requires_grad = not (heads_only and n.startswith("backbone.body."))


def main():
    args = parse()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    classes = ["background"] + [c for c in args.classes.split(",") if c]
    layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    cfg = M.default_config(classes, args.size, args.depth, layers, args.block)
    cfg["roi_heads"]["box_roi_pool_size"] = args.box_pool
    if args.pixel_mm > 0:
        cfg["input"]["pixel_mm"] = args.pixel_mm
        cfg["input"]["neighbor_mm"] = args.neighbor_mm
    class_of = D.class_map(classes)
    focus = [c for c in args.focus_classes.split(",") if c]
    if any(c not in classes[1:] for c in focus):
        sys.exit(f"--focus-classes {args.focus_classes}: not among the model classes {classes[1:]}")
    args.focus = tuple(classes.index(c) for c in focus)
    planes = [p for p in args.planes.split(",") if p]
    cases = load_cases(args.data)
    train_ids, val_ids = D.split_patients([c[0] for c in cases], args.val_fraction,
                                          args.folds, args.fold, args.seed)
    train_cases = [c for c in cases if c[0] in train_ids]
    val_cases = [c for c in cases if c[0] in val_ids]
    print(f"{len(train_cases)} training patients, {len(val_cases)} validation patients", file=sys.stderr)
    model = M.build(cfg, args.fpn_channels, args.representation, args.mask_channels,
                    frozen_bn=args.pretrained is not None)
    model.roi_heads.fg_bg_sampler.batch_size_per_image = args.rois_per_image
    if args.init:
        from safetensors.torch import load_file
        sd = {k: v.float() for k, v in load_file(os.path.join(args.init, cfg["weights"])).items()}
        missing, unexpected = model.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            sys.exit(f"--init {args.init}: architecture differs (missing {missing[:3]}, unexpected {unexpected[:3]})")
        print(f"continuing from {args.init}", file=sys.stderr)
    if args.pretrained:
        if args.pretrained.endswith(".safetensors"):
            from safetensors.torch import load_file
            sd = load_file(args.pretrained)
        else:
            sd = torch.load(args.pretrained, map_location="cpu")
        missing, _ = model.backbone.body.load_state_dict(
            {k: v for k, v in sd.items() if not k.startswith("fc.")}, strict=False)
        print(f"pretrained backbone loaded ({len(missing)} missing keys)", file=sys.stderr)
    model.to(args.device).train()
    os.makedirs(args.out, exist_ok=True)
    log = open(os.path.join(args.out, "loss_log.csv"), "w")
    log.write("stage,epoch,step,lr,loss,loss_classifier,loss_box_reg,loss_mask,loss_objectness,loss_rpn_box_reg\n")
    n_per_epoch = count_slices(train_cases, planes, class_of, args, args.max_slices_per_epoch)
    stream = SliceStream(train_cases, cfg, planes, class_of, args, args.max_slices_per_epoch)
    t_start = time.time()
    history, epochs_done, stopped = [], {"heads": 0, "all": 0}, False
    for stage, n_ep, lr in (("heads", args.heads_epochs, args.heads_lr), ("all", args.all_epochs, args.all_lr)):
        if n_ep <= 0 or stopped:
            continue
        set_stage(model, stage == "heads")
        params = [p for p in model.parameters() if p.requires_grad]
        if args.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
        else:
            opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
        stage_step = 0
        for ep in range(n_ep):
            bar = Progress(n_per_epoch, f"{stage} {ep + 1}/{n_ep}")
            losses = []
            epoch_seed = int(rng.integers(2**31))
            for step, (imgs, tgts) in enumerate(batches(stream, args, epoch_seed)):
                imgs = [i.to(args.device) for i in imgs]
                tgts = [{k: v.to(args.device) for k, v in t.items()} for t in tgts]
                ld = model(imgs, tgts)
                loss = sum(ld.values())
                cur = lr * min(1.0, (stage_step + 1) / args.warmup_steps) if args.warmup_steps else lr
                if args.lr_drop_at and args.max_time_min and \
                        time.time() - t_start > args.lr_drop_at * 60 * args.max_time_min:
                    cur *= 0.1
                for g in opt.param_groups:
                    g["lr"] = cur
                stage_step += 1
                if not torch.isfinite(loss):
                    sys.exit(f"loss is {loss.item()} at {stage} epoch {ep + 1} step {step}: lower the learning rate")
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
                log.write(f"{stage},{ep + 1},{step},{cur:.3g},{loss.item():.5f}," + ",".join(
                    f"{ld[k].item():.5f}" for k in ("loss_classifier", "loss_box_reg", "loss_mask",
                                                     "loss_objectness", "loss_rpn_box_reg")) + "\n")
                bar.update(len(imgs), f"loss {np.mean(losses[-20:]):.4f}")
                if args.max_time_min and time.time() - t_start > 60 * args.max_time_min:
                    stopped = True
                    break
            bar.close()
            log.flush()
            epochs_done[stage] = ep + 1
            history.append({"stage": stage, "epoch": ep + 1, "mean_loss": float(np.mean(losses)) if losses else None})
            if stopped:
                print(f"time limit reached ({args.max_time_min} min)", file=sys.stderr)
                break
    log.close()
    dice = validate(model, val_cases, cfg, planes, class_of, args, args.device) if val_cases else {}
    print(f"validation Dice (slices, input size): {json.dumps(dice)}", file=sys.stderr)
    export(model, cfg, args, train_ids, val_ids, epochs_done, history, dice, stopped)


def export(model, cfg, args, train_ids, val_ids, epochs_done, history, dice, stopped):
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
          if v.is_floating_point()}
    if args.fp16:
        sd = {k: v.half() for k, v in sd.items()}
    wpath = os.path.join(args.out, cfg["weights"])
    save_file(sd, wpath)
    sha = hashlib.sha256(open(wpath, "rb").read()).hexdigest()
    with open(os.path.join(args.out, "model.toml"), "w") as f:
        f.write(M.to_toml(cfg, f"Trained by train/train.py on {', '.join(args.data)}; see manifest.json."))
    manifest = {
        "weights": cfg["weights"], "sha256": sha, "bytes": os.path.getsize(wpath),
        "dtype": "float16" if args.fp16 else "float32",
        "classes": cfg["classes"], "input_size": cfg["input"]["size"], "hu_window": cfg["input"]["hu_window"],
        "planes": args.planes.split(","),
        "data": {"sources": args.data, "train_patients": sorted(train_ids), "val_patients": sorted(val_ids),
                 "folds": args.folds, "fold": args.fold, "seed": args.seed},
        "epochs": {"heads": epochs_done["heads"], "all": epochs_done["all"],
                   "heads_lr": args.heads_lr, "all_lr": args.all_lr, "batch_size": args.batch_size,
                   "optimizer": args.optimizer, "warmup_steps": args.warmup_steps, "lr_drop_at": args.lr_drop_at,
                   "rois_per_image": args.rois_per_image, "max_time_min": args.max_time_min,
                   "focus_classes": args.focus_classes, "focus_other_fraction": args.focus_other_fraction,
                   "stopped_by_time_limit": stopped, "history": history},
        "augment": {"zoom": list(zoom_of(args)[:2]), "zoom_p": args.zoom_p},
        "model": {"backbone": cfg["backbone"], "fpn_channels": args.fpn_channels,
                  "representation": args.representation, "mask_channels": args.mask_channels,
                  "pretrained_backbone": args.pretrained, "init": args.init},
        "validation_dice_slices": dice,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "torchvision": torchvision.__version__,
        "not_for_clinical_use": True,
    }
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    print(f"wrote {args.out}: {os.path.basename(wpath)} ({manifest['bytes']} bytes, sha256 {sha[:12]}...), "
          "model.toml, manifest.json, loss_log.csv", file=sys.stderr)


if __name__ == "__main__":
    main()
