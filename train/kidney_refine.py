#!/usr/bin/env python3
"""The finer kidney stage (issue 35, item 1): a small U-Net that redraws each
kidney mask of the Mask R-CNN at 0.8 mm, one axial slice at a time.

Input per slice, on a square crop around one kidney (the crop's geometry is
`crates/seg/src/refine.rs`'s, mirrored here): the CT through the HU window at
the slice and `neighbor_mm` above and below (three channels, as the Mask
R-CNN's 2.5D input) and the coarse mask of that kidney at the slice (fourth
channel), all sampled bilinearly at `pixel_mm`. Output: the kidney's logit per
pixel.

    python train/kidney_refine.py prepare --data DIR [--data DIR ...] --out cache.npz
    python train/kidney_refine.py train --cache cache.npz --out weights/kidney --minutes 30
    python train/kidney_refine.py fixture --weights weights/kidney --out tests/data/seg/refine

`prepare` reads patients written by `organdose phantom --format nifti`, each
with the coarse masks `seg_<scan>.nii.gz` that `organdose segment <scan>.nii.gz
-o seg_<scan>.nii.gz` wrote (the network's own output, so the stage learns
the network's errors), and the truth labels. Never the labelled real cases.
"""

import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# The crop (crates/seg/src/refine.rs reads these from model.toml).
PIXEL_MM = 0.8
NEIGHBOR_MM = 2.5
HU_WINDOW = (-150.0, 250.0)
MARGIN_MM = 16.0
Z_MARGIN_MM = 8.0
MIN_SIZE = 96
MAX_SIZE = 256
MULTIPLE = 16
WIDTHS = (16, 32, 64, 64)
WEIGHTS = "kidney_refine.safetensors"

KIDNEY_LEFT, KIDNEY_RIGHT = 2, 3


def crop_geometry(mask, spacing):
    """Centre (voxel i, j), crop size in pixels and slice range [k0, k1) of one
    kidney's coarse mask; None when empty."""
    idx = np.nonzero(mask)
    if idx[0].size == 0:
        return None
    i0, i1 = idx[0].min(), idx[0].max()
    j0, j1 = idx[1].min(), idx[1].max()
    k0, k1 = idx[2].min(), idx[2].max()
    ci, cj = (i0 + i1) / 2.0, (j0 + j1) / 2.0
    ext = max((i1 - i0 + 1) * spacing[0], (j1 - j0 + 1) * spacing[1]) + 2 * MARGIN_MM
    size = int(math.ceil(ext / PIXEL_MM / MULTIPLE)) * MULTIPLE
    size = min(max(size, MIN_SIZE), MAX_SIZE)
    zm = int(math.ceil(Z_MARGIN_MM / spacing[2]))
    nz = mask.shape[2]
    return (ci, cj), size, (max(0, k0 - zm), min(nz, k1 + zm + 1))


def pixel_coords(centre, size, spacing):
    """Voxel coordinates (i of each column, j of each row) of the crop's pixels."""
    off = (np.arange(size) - (size - 1) / 2.0) * PIXEL_MM
    return centre[0] + off / spacing[0], centre[1] + off / spacing[1]


def bilinear(img, ii, jj):
    """img[i, j] at columns ii (i) and rows jj (j), edges clamped; [rows, cols]."""
    ni, nj = img.shape
    ii = np.clip(ii, 0, ni - 1)
    jj = np.clip(jj, 0, nj - 1)
    i0 = np.floor(ii).astype(np.int64)
    j0 = np.floor(jj).astype(np.int64)
    i1 = np.minimum(i0 + 1, ni - 1)
    j1 = np.minimum(j0 + 1, nj - 1)
    fi = (ii - i0)[None, :]
    fj = (jj - j0)[:, None]
    a = img[i0[None, :], j0[:, None]]
    b = img[i1[None, :], j0[:, None]]
    c = img[i0[None, :], j1[:, None]]
    d = img[i1[None, :], j1[:, None]]
    return (a * (1 - fi) + b * fi) * (1 - fj) + (c * (1 - fi) + d * fi) * fj


def slice_at(vol, z):
    """vol[:, :, z] with z fractional, linear between slices, clamped."""
    nz = vol.shape[2]
    z = min(max(z, 0.0), nz - 1.0)
    k0 = int(math.floor(z))
    k1 = min(k0 + 1, nz - 1)
    f = z - k0
    if f == 0.0 or k1 == k0:
        return vol[:, :, k0]
    return vol[:, :, k0] * (1 - f) + vol[:, :, k1] * f


def window(hu):
    lo, hi = HU_WINDOW
    return np.clip((hu - lo) / (hi - lo), 0.0, 1.0)


def crop_input(ct, coarse, k, centre, size, spacing):
    """[4, size, size] float32: windowed CT at k - n, k, k + n and the coarse mask."""
    ii, jj = pixel_coords(centre, size, spacing)
    d = NEIGHBOR_MM / spacing[2]
    chans = [window(bilinear(slice_at(ct, k + s * d), ii, jj)) for s in (-1, 0, 1)]
    chans.append(bilinear(coarse[:, :, k].astype(np.float32), ii, jj))
    return np.stack(chans).astype(np.float32)


def prepare(args):
    import nibabel as nib

    xs, ys, pid = [], [], []
    for root in args.data:
        for p in sorted(os.listdir(root)):
            d = os.path.join(root, p)
            if not os.path.isdir(d):
                continue
            for scan in ("ct", "tp1_ldct", "tp2_ldct", "tp3_ldct", "tp4_ldct"):
                seg_f = os.path.join(d, f"seg_{scan}.nii.gz")
                if not os.path.exists(seg_f):
                    continue
                truth_name = "labels_ct" if scan == "ct" else f"labels_ldct_{scan.split('_')[0]}"
                ct_im = nib.load(os.path.join(d, f"{scan}.nii.gz"))
                ct = np.asarray(ct_im.dataobj, dtype=np.float32)
                spacing = [float(z) for z in ct_im.header.get_zooms()[:3]]
                seg = np.asarray(nib.load(seg_f).dataobj).astype(np.uint8)
                truth = np.asarray(
                    nib.load(os.path.join(d, "truth", f"{truth_name}.nii.gz")).dataobj
                ).astype(np.uint8)
                n = 0
                for lab in (KIDNEY_LEFT, KIDNEY_RIGHT):
                    coarse = seg == lab
                    g = crop_geometry(coarse, spacing)
                    if g is None:
                        continue
                    centre, size, (k0, k1) = g
                    tgt = (truth == lab).astype(np.float32)
                    ii, jj = pixel_coords(centre, size, spacing)
                    for k in range(k0, k1):
                        x = crop_input(ct, coarse, k, centre, size, spacing)
                        y = bilinear(tgt[:, :, k], ii, jj) >= 0.5
                        xs.append(x.astype(np.float16))
                        ys.append(y)
                        pid.append(p)
                        n += 1
                print(f"{p} {scan}: {n} slices", flush=True)
    # Crops differ in size: stored as one object array each.
    ox = np.empty(len(xs), dtype=object)
    oy = np.empty(len(ys), dtype=object)
    for n, (x, y) in enumerate(zip(xs, ys)):
        ox[n], oy[n] = x, y
    np.savez_compressed(args.out, x=ox, y=oy, pid=np.array(pid), allow_pickle=True)
    print(f"{len(xs)} slices -> {args.out}")


def conv_bn(cin, cout):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class Refiner(nn.Module):
    """U-Net: three 2x2 max pools, nearest upsampling, skip concatenation."""

    def __init__(self, widths=WIDTHS, cin=4):
        super().__init__()
        w = widths
        self.enc = nn.ModuleList()
        c = cin
        for wi in w:
            self.enc.append(nn.Sequential(conv_bn(c, wi), conv_bn(wi, wi)))
            c = wi
        self.dec = nn.ModuleList()
        for lvl in range(len(w) - 2, -1, -1):
            self.dec.append(nn.Sequential(conv_bn(c + w[lvl], w[lvl]), conv_bn(w[lvl], w[lvl])))
            c = w[lvl]
        self.head = nn.Conv2d(c, 1, 1)

    def forward(self, x):
        skips = []
        for i, e in enumerate(self.enc):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = e(x)
            skips.append(x)
        for i, d in enumerate(self.dec):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = d(torch.cat([x, skips[-2 - i]], dim=1))
        return self.head(x)


def batches(xs, ys, idx, crop, bs, rng, augment):
    rng.shuffle(idx)
    for s in range(0, len(idx) - bs + 1, bs):
        bx, by = [], []
        for n in idx[s : s + bs]:
            x = xs[n].astype(np.float32)
            y = ys[n].astype(np.float32)
            S = x.shape[1]
            if augment:
                o0, o1 = rng.integers(0, S - crop + 1, size=2)
            else:
                o0 = o1 = (S - crop) // 2
            x = x[:, o0 : o0 + crop, o1 : o1 + crop].copy()
            y = y[o0 : o0 + crop, o1 : o1 + crop].copy()
            if augment:
                a = rng.uniform(0.93, 1.07)
                b = rng.uniform(-0.05, 0.05)
                x[:3] = np.clip(x[:3] * a + b, 0, 1)
                if rng.random() < 0.3:
                    noise = rng.normal(0.0, rng.uniform(0.01, 0.04), size=x[:3].shape)
                    x[:3] = np.clip(x[:3] + noise.astype(np.float32), 0, 1)
                if rng.random() < 0.5:
                    x = x[:, :, ::-1].copy()
                    y = y[:, ::-1].copy()
            bx.append(x)
            by.append(y)
        yield torch.from_numpy(np.stack(bx)), torch.from_numpy(np.stack(by))[:, None]


def strong_augment(bx, rng, grow=True):
    """Real CT is not the phantoms, and the Mask R-CNN errs differently there
    (`--augment strong`): the coarse-mask channel grown or shrunk by up to 3 px
    (2.4 mm), shifted by up to 3 px, or cut by a random line through it (a
    missed pole or lip, as on real slices); the CT channels blurred or given
    another gamma (other kernels, windows and contrast phases). `shrink`
    (`grow` False): the mask is never grown (real CT's misses, not leaks)."""
    bx = bx.clone()
    n = bx.shape[0]
    for i in range(n):
        m = bx[i : i + 1, 3:4]
        u = rng.random()
        if u < 0.25 and grow:
            r = int(rng.integers(1, 4))
            m = F.max_pool2d(m, 2 * r + 1, 1, r)
        elif u < 0.5:
            r = int(rng.integers(1, 4))
            m = -F.max_pool2d(-m, 2 * r + 1, 1, r)
        if rng.random() < 0.3:
            dy, dx = (int(v) for v in rng.integers(-3, 4, size=2))
            m = torch.roll(m, shifts=(dy, dx), dims=(2, 3))
        if rng.random() < 0.2 and m.sum() > 0:
            ys, xs = torch.nonzero(m[0, 0], as_tuple=True)
            k = int(rng.integers(0, len(ys)))
            th = rng.uniform(0, 2 * np.pi)
            S = m.shape[-1]
            jj, ii = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
            side = (jj - ys[k]) * float(np.sin(th)) + (ii - xs[k]) * float(np.cos(th))
            m = m * (side < 0).float()[None, None]
        bx[i : i + 1, 3:4] = m
        if rng.random() < 0.3:
            g = float(rng.uniform(0.7, 1.4))
            bx[i, :3] = bx[i, :3].clamp(0, 1) ** g
        if rng.random() < 0.3:
            sigma = float(rng.uniform(0.5, 1.2))
            r = 3
            t = torch.arange(-r, r + 1, dtype=torch.float32)
            w = torch.exp(-0.5 * (t / sigma) ** 2)
            w = w / w.sum()
            c = bx[i, :3][:, None]
            c = F.conv2d(F.pad(c, (r, r, 0, 0), mode="replicate"), w.view(1, 1, 1, -1))
            c = F.conv2d(F.pad(c, (0, 0, r, r), mode="replicate"), w.view(1, 1, -1, 1))
            bx[i, :3] = c[:, 0]
    return bx


def dice_stats(logit, y):
    p = (logit > 0).float()
    return float((2 * p * y).sum()), float(p.sum() + y.sum())


def train(args):
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    z = np.load(args.cache, allow_pickle=True)
    xs, ys, pid = z["x"], z["y"], z["pid"]
    pats = sorted(set(pid.tolist()))
    val_p = set(pats[-args.val_patients :]) if args.val_patients else set()
    tr = np.array([i for i in range(len(xs)) if pid[i] not in val_p])
    va = np.array([i for i in range(len(xs)) if pid[i] in val_p])
    print(f"{len(tr)} training slices, {len(va)} validation slices ({sorted(val_p)})")
    model = Refiner()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    t_end = time.time() + args.minutes * 60
    step, epoch, hist, best = 0, 0, [], None

    def validate():
        model.eval()
        num = den = cnum = cden = 0.0
        with torch.no_grad():
            for bx, by in batches(xs, ys, va.copy(), args.val_crop, 8, rng, False):
                a, b = dice_stats(model(bx), by)
                c, d = dice_stats(bx[:, 3:4] * 2 - 1, by)
                num, den, cnum, cden = num + a, den + b, cnum + c, cden + d
        model.train()
        return num / max(den, 1), cnum / max(cden, 1)

    while time.time() < t_end:
        epoch += 1
        tot = 0.0
        n = 0
        for bx, by in batches(xs, ys, tr.copy(), args.crop, args.batch, rng, True):
            if args.augment in ("strong", "shrink"):
                bx = strong_augment(bx, rng, grow=args.augment == "strong")
            lr = args.lr * (0.1 if time.time() > t_end - args.minutes * 60 * 0.2 else 1.0)
            for g in opt.param_groups:
                g["lr"] = lr
            out = model(bx)
            p = torch.sigmoid(out)
            bce = F.binary_cross_entropy_with_logits(out, by)
            dl = 1 - (2 * (p * by).sum() + 1) / (p.sum() + by.sum() + 1)
            loss = bce + dl
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += loss.item()
            n += 1
            step += 1
            if time.time() > t_end:
                break
        vd, cd = validate() if len(va) else (None, None)
        hist.append({"epoch": epoch, "mean_loss": tot / max(n, 1), "val_dice": vd, "coarse_dice": cd})
        print(json.dumps(hist[-1]), flush=True)
        # The epoch that did best on the validation patients is exported (the
        # last one without validation).
        if vd is None or best is None or vd > best[0]:
            best = (vd, epoch, {k: v.detach().clone() for k, v in model.state_dict().items()})
    if best is not None:
        model.load_state_dict(best[2])
        print(f"exporting epoch {best[1]} (validation Dice {best[0]})")
    export(model, args, hist, len(tr), len(va), best[1] if best else None)


def export(model, args, hist, n_tr, n_va, epoch=None):
    from safetensors.torch import save_file

    os.makedirs(args.out, exist_ok=True)
    model.eval()
    sd = {k: v.detach().float().contiguous() for k, v in model.state_dict().items() if "num_batches" not in k}
    wf = os.path.join(args.out, WEIGHTS)
    save_file(sd, wf)
    import hashlib

    sha = hashlib.sha256(open(wf, "rb").read()).hexdigest()
    # The model folder's model.toml gets this section, its manifest.json the
    # "kidney_refine" entry (both written beside the weights to be merged).
    with open(os.path.join(args.out, "kidney_refine.toml"), "w") as f:
        f.write(
            "\n# The finer kidney stage (crates/seg/src/refine.rs, train/kidney_refine.py).\n"
            "[kidney_refine]\n"
            f'weights = "{WEIGHTS}"\n'
            f"widths = {list(WIDTHS)}\n"
            f"pixel_mm = {PIXEL_MM}\n"
            f"neighbor_mm = {NEIGHBOR_MM}\n"
            f"hu_window = [{HU_WINDOW[0]}, {HU_WINDOW[1]}]\n"
            f"margin_mm = {MARGIN_MM}\n"
            f"z_margin_mm = {Z_MARGIN_MM}\n"
            f"min_size = {MIN_SIZE}\n"
            f"max_size = {MAX_SIZE}\n"
        )
    man = {
        "weights": WEIGHTS,
        "sha256": sha,
        "bytes": os.path.getsize(wf),
        "dtype": "float32",
        "what": "kidney refinement U-Net (train/kidney_refine.py), inputs: CT at the slice and +-neighbor_mm, the Mask R-CNN's kidney mask",
        "training": {
            "data": args.data_note,
            "slices": n_tr,
            "validation_slices": n_va,
            "minutes": args.minutes,
            "crop": args.crop,
            "batch": args.batch,
            "lr": args.lr,
            "seed": args.seed,
            "augment": args.augment,
            "history": hist,
            "exported_epoch": epoch,
        },
        "torch": torch.__version__,
    }
    with open(os.path.join(args.out, "kidney_refine.json"), "w") as f:
        json.dump(man, f, indent=1)
    print(f"wrote {args.out} (sha256 {sha[:12]})")


def install(args):
    """Puts a trained stage into a Mask R-CNN model folder: the weights file,
    the [kidney_refine] section of model.toml and the manifest's entry
    (replacing any earlier stage)."""
    import shutil

    shutil.copyfile(os.path.join(args.stage, WEIGHTS), os.path.join(args.model, WEIGHTS))
    toml_p = os.path.join(args.model, "model.toml")
    text = open(toml_p).read()
    cut = text.find("\n# The finer kidney stage")
    if cut >= 0:
        text = text[:cut] + "\n"
    text = text.rstrip("\n") + "\n" + open(os.path.join(args.stage, "kidney_refine.toml")).read()
    open(toml_p, "w").write(text)
    man_p = os.path.join(args.model, "manifest.json")
    man = json.load(open(man_p))
    man["kidney_refine"] = json.load(open(os.path.join(args.stage, "kidney_refine.json")))
    if args.measured:
        man["kidney_refine"]["measured"] = json.load(open(args.measured))
    with open(man_p, "w") as f:
        json.dump(man, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print(f"installed the kidney stage of {args.stage} into {args.model}")


def fixture(args):
    """A random input through the shipped weights: tests/it/seg_parity.rs
    compares the Rust stage's output with it."""
    from safetensors.torch import load_file, save_file

    model = Refiner()
    sd = load_file(os.path.join(args.weights, WEIGHTS))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all("num_batches" in k for k in missing), (missing, unexpected)
    model.eval()
    g = torch.Generator().manual_seed(7)
    x = torch.rand((2, 4, 48, 64), generator=g)
    x[:, 3] = (x[:, 3] > 0.5).float()
    with torch.no_grad():
        y = model(x)
    # The crop: a small CT with a box-shaped kidney (label 2), its crop and the
    # input of one slice as this script builds them for training; the Rust
    # stage must build the same.
    rs = np.random.default_rng(11)
    dims = (40, 36, 10)
    spacing = [0.9, 0.85, 2.0]
    vol = rs.uniform(-300.0, 400.0, size=dims).astype(np.float32)
    lab = np.zeros(dims, dtype=np.uint8)
    lab[12:27, 10:21, 3:7] = KIDNEY_LEFT
    centre, size, (k0, k1) = crop_geometry(lab == KIDNEY_LEFT, spacing)
    k = 4
    cin = crop_input(vol, lab == KIDNEY_LEFT, k, centre, size, spacing)
    # Volumes as the Rust Volume stores them: i fastest.
    fx = {
        "input": x.contiguous(),
        "logit": y.contiguous(),
        "crop_ct": torch.from_numpy(np.ascontiguousarray(vol.transpose(2, 1, 0))),
        "crop_labels": torch.from_numpy(np.ascontiguousarray(lab.transpose(2, 1, 0)).astype(np.float32)),
        "crop_spacing": torch.tensor(spacing, dtype=torch.float64),
        "crop_geometry": torch.tensor([centre[0], centre[1], size, k0, k1, k], dtype=torch.float64),
        "crop_input": torch.from_numpy(cin),
    }
    os.makedirs(args.out, exist_ok=True)
    save_file(fx, os.path.join(args.out, "refine_fixture.safetensors"))
    print(f"fixture: input {tuple(x.shape)}, logit {tuple(y.shape)}, crop {size} px slices {k0}-{k1} -> {args.out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--data", action="append", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("train")
    p.add_argument("--cache", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--val-crop", type=int, default=96)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=35)
    p.add_argument("--val-patients", type=int, default=2)
    p.add_argument(
        "--augment",
        choices=["mild", "strong", "shrink"],
        default="mild",
        help="mild: crop, flip, intensity, noise; strong: also the coarse mask grown, shrunk, shifted or cut, CT blur and gamma; shrink: the same without growing the mask",
    )
    p.add_argument("--data-note", default="", help="what the cache was made from (for the manifest)")
    p = sub.add_parser("install")
    p.add_argument("--stage", required=True, help="folder `train` wrote")
    p.add_argument("--model", required=True, help="Mask R-CNN model folder, e.g. weights/organs")
    p.add_argument("--measured", help="JSON of the measured figures for the manifest")
    p = sub.add_parser("fixture")
    p.add_argument("--weights", required=True)
    p.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    {"prepare": prepare, "train": train, "install": install, "fixture": fixture}[a.cmd](a)


if __name__ == "__main__":
    main()
