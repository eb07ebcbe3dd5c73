#!/usr/bin/env python3
"""How well the mask confidence separates good from bad masks.

Reads rows of (scan, organ, Dice, confidence, flag) from `organdose eval
--trust-json` files (or the "mask confidence (auto) against Dice" table of an
eval log) and prints, per set, the share of bad masks (Dice < 0.85) and of
good masks (Dice >= 0.92) flagged for review, the ROC of the confidence as a
score (bad = positive, good = negative, masks in between left out) and its
AUC; with --svg, draws the ROC curves.

    scripts/trust_roc.py NAME=FILE [NAME=FILE ...] [--svg roc.svg]
"""
import json
import sys

BAD, GOOD = 0.85, 0.92


def rows_of(path):
    if path.endswith(".json"):
        with open(path) as f:
            return [
                (r["scan"], r["organ"], r["dice"], r["confidence"], r["flag"])
                for r in json.load(f)
            ]
    out, on = [], False
    with open(path) as f:
        for line in f:
            if line.startswith("mask confidence (auto) against Dice"):
                on = True
                continue
            if on:
                if line.startswith("flagged:") or not line.strip():
                    on = False
                    continue
                p = line.split()
                if p[0] == "scan":
                    continue
                out.append((p[0], p[1], float(p[2]), float(p[3]), p[4]))
    return out


def roc(rows):
    pos = [1 - r[3] for r in rows if r[2] < BAD]
    neg = [1 - r[3] for r in rows if r[2] >= GOOD]
    if not pos or not neg:
        return None, []
    # AUC = P(score of a bad mask > score of a good one), ties count half.
    auc = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))
    pts = [(0.0, 0.0)]
    for t in sorted(set(pos + neg), reverse=True):
        pts.append(
            (sum(n >= t for n in neg) / len(neg), sum(p >= t for p in pos) / len(pos))
        )
    pts.append((1.0, 1.0))
    return auc, pts


def main(argv):
    svg = None
    if "--svg" in argv:
        i = argv.index("--svg")
        svg = argv[i + 1]
        argv = argv[:i] + argv[i + 2 :]
    curves = []
    print(
        "| set | masks | Dice < 0.85 flagged | Dice >= 0.92 flagged | in between flagged | ROC AUC |"
    )
    print("|---|---|---|---|---|---|")
    for spec in argv:
        name, paths = spec.split("=", 1)
        rows = [r for p in paths.split(",") for r in rows_of(p)]
        bad = [r for r in rows if r[2] < BAD]
        good = [r for r in rows if r[2] >= GOOD]
        mid = [r for r in rows if BAD <= r[2] < GOOD]
        f = lambda rs: sum(r[4] == "review" for r in rs)
        share = lambda rs: (
            f"{f(rs)} of {len(rs)} ({100 * f(rs) / len(rs):.0f} %)" if rs else "0 of 0"
        )
        auc, pts = roc(rows)
        curves.append((name, pts))
        print(
            f"| {name} | {len(rows)} | {share(bad)} | {share(good)} | {share(mid)} | "
            + (f"{auc:.3f}" if auc is not None else "-")
            + " |"
        )
    if svg:
        w, h, m = 360, 360, 40
        colours = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"]
        parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{w + 2 * m + 160}" height="{h + 2 * m}" font-family="sans-serif" font-size="12">',
            f'<rect x="{m}" y="{m}" width="{w}" height="{h}" fill="none" stroke="black"/>',
            f'<line x1="{m}" y1="{m + h}" x2="{m + w}" y2="{m}" stroke="#aaa" stroke-dasharray="4"/>',
            f'<text x="{m + w / 2 - 110}" y="{m + h + 28}">share of good masks flagged (Dice &gt;= {GOOD})</text>',
            f'<text transform="translate({m - 24},{m + h / 2 + 100}) rotate(-90)">share of bad masks flagged (Dice &lt; {BAD})</text>',
        ]
        for k, (name, pts) in enumerate(curves):
            if not pts:
                continue
            c = colours[k % len(colours)]
            poly = " ".join(f"{m + x * w:.1f},{m + h - y * h:.1f}" for x, y in pts)
            parts.append(f'<polyline points="{poly}" fill="none" stroke="{c}" stroke-width="2"/>')
            parts.append(f'<text x="{m + w + 10}" y="{m + 20 + 18 * k}" fill="{c}">{name}</text>')
        parts.append("</svg>")
        with open(svg, "w") as f:
            f.write("\n".join(parts) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
