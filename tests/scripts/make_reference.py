#!/usr/bin/env python3
"""Writes the small reference files of tests/data and their expected values.

Run once by a developer (not by CI): python3 tests/scripts/make_reference.py
Needs pydicom, nibabel and numpy (pip install -r tests/scripts/requirements.txt).

Geometry and voxel values in expected.json come from pydicom / nibabel directly,
not from organdose, so the Rust tests compare against independent tools.
Conventions of the expected values: voxel index (i, j, k) with i along the row
(column index), j down the columns (row index), k along the slices in patient
space order; positions in DICOM LPS mm; values flattened with i fastest.
"""
import json
import os
import shutil
import sys

import numpy as np
import nibabel as nib
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.normpath(os.path.join(HERE, "..", "data"))
EXT = os.path.join(DATA, "external")
GEN = os.path.join(DATA, "generated")
ROOT = "1.2.826.0.1.3680043.10.1163."  # a made-up root under the pydicom prefix
rng = np.random.default_rng(20261126)
uid_counter = [0]


def uid():
    uid_counter[0] += 1
    return f"{ROOT}{uid_counter[0]}"


def summarise(values, ijk_list):
    """values: array indexed [i, j, k]."""
    flat = values.flatten(order="F")
    return {
        "sum": float(np.sum(values, dtype=np.float64)),
        "min": float(values.min()),
        "max": float(values.max()),
        "samples": [[int(i), int(j), int(k), float(values[i, j, k])] for i, j, k in ijk_list],
        "n": int(flat.size),
    }


def dicom_series_geometry(datasets):
    """Geometry the DICOM standard defines (PS3.3 C.7.6.2), computed with numpy."""
    ds0 = datasets[0]
    iop_src = ds0 if "ImageOrientationPatient" in ds0 else ds0.DetectorInformationSequence[0]
    iop = np.array([float(v) for v in iop_src.ImageOrientationPatient])
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    if getattr(ds0, "NumberOfFrames", 1) and int(getattr(ds0, "NumberOfFrames", 1)) > 1:
        ipp = np.array([float(v) for v in ds0.DetectorInformationSequence[0].ImagePositionPatient])
        dz = float(ds0.SpacingBetweenSlices)
        vol = ds0.pixel_array.astype(np.float64)  # frames, rows, cols
        slope, icpt = rwv(ds0)
        vol = vol * slope + icpt
        ijk = np.transpose(vol, (2, 1, 0))
        direction = [row, col, normal if dz > 0 else -normal]
        return ipp, [float(ds0.PixelSpacing[1]), float(ds0.PixelSpacing[0]), abs(dz)], direction, ijk
    order = sorted(datasets, key=lambda d: float(np.dot(np.array([float(v) for v in d.ImagePositionPatient]), normal)))
    pos = [np.array([float(v) for v in d.ImagePositionPatient]) for d in order]
    if len(pos) > 1:
        dz = float(np.dot(pos[-1] - pos[0], normal)) / (len(pos) - 1)
    else:
        dz = float(getattr(ds0, "SliceThickness", 1.0))
    slices = []
    for d in order:
        slope, icpt = rwv(d) if d.Modality != "CT" else (float(getattr(d, "RescaleSlope", 1)), float(getattr(d, "RescaleIntercept", 0)))
        slices.append(d.pixel_array.astype(np.float64) * slope + icpt)
    vol = np.stack(slices, axis=0)
    ijk = np.transpose(vol, (2, 1, 0))
    return pos[0], [float(ds0.PixelSpacing[1]), float(ds0.PixelSpacing[0]), dz], [row, col, normal], ijk


def rwv(ds):
    if "RealWorldValueMappingSequence" in ds:
        item = ds.RealWorldValueMappingSequence[0]
        return float(item.RealWorldValueSlope), float(item.RealWorldValueIntercept)
    return float(getattr(ds, "RescaleSlope", 1)), float(getattr(ds, "RescaleIntercept", 0))


def expect_dicom(name, files, marker=None, units=None):
    datasets = [pydicom.dcmread(f) for f in files]
    origin, spacing, direction, ijk = dicom_series_geometry(datasets)
    dims = list(ijk.shape)
    samples = [(0, 0, 0), (dims[0] - 1, dims[1] - 1, dims[2] - 1), (dims[0] // 2, dims[1] // 3, dims[2] // 2)]
    e = {
        "kind": "dicom",
        "path": os.path.relpath(os.path.dirname(files[0]) if len(files) > 1 else files[0], DATA),
        "dims": dims,
        "spacing": spacing,
        "origin": [float(v) for v in origin],
        "direction": [[float(v) for v in d] for d in direction],
        "values": summarise(ijk, samples),
    }
    if marker is not None:
        e["marker_lps"] = marker
    if units:
        e["units"] = units
    return name, e


def expect_nifti(name, path, frame=None):
    img = nib.load(path)
    aff = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine  # RAS -> LPS
    data = np.asanyarray(img.dataobj).astype(np.float64)
    # nibabel applies scl_slope/inter through get_fdata
    data = img.get_fdata(dtype=np.float64)
    if data.ndim == 4:
        data = data[..., frame or 0]
    while data.ndim < 3:
        data = data[..., np.newaxis]
    spacing = [float(np.linalg.norm(aff[:3, a])) for a in range(3)]
    direction = [[float(v) for v in aff[:3, a] / spacing[a]] for a in range(3)]
    dims = list(data.shape)
    samples = [(0, 0, 0), (dims[0] - 1, dims[1] - 1, dims[2] - 1), (dims[0] // 2, dims[1] // 3, dims[2] // 2)]
    return name, {
        "kind": "nifti",
        "path": os.path.relpath(path, DATA),
        "frame": frame,
        "dims": dims,
        "spacing": spacing,
        "origin": [float(v) for v in aff[:3, 3]],
        "direction": direction,
        "values": summarise(data, samples),
    }


def base_dataset(path, sop_class, modality, series_uid, study_uid, for_uid, ts=ExplicitVRLittleEndian):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid()
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = ROOT + "0"
    ds = FileDataset(path, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Phantom^Reference"
    ds.PatientID = "REF001"
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = "20260301"
    ds.StudyTime = "080000"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 1
    ds.SeriesDate = "20260301"
    ds.SeriesTime = "090000"
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "organdose reference script"
    ds.ContentDate = "20260301"
    ds.ContentTime = "090000"
    ds.AcquisitionDate = "20260301"
    ds.AcquisitionTime = "090000"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    return ds


def write_ct_series(folder, dims, spacing, origin, row, col, marker_ijk, step_dir=None, names=None,
                    compress=False, drop=None, duplicate=None, mixed=False, nopixel=False, reverse=False):
    """CT series, one file per slice. Returns (files, marker LPS)."""
    os.makedirs(folder, exist_ok=True)
    nx, ny, nz = dims
    row = np.array(row, float)
    col = np.array(col, float)
    normal = np.cross(row, col)
    step = normal if step_dir is None else np.array(step_dir, float)
    series_uid, study_uid, for_uid = uid(), uid(), uid()
    hu = rng.integers(-100, 100, size=(nz, ny, nx)).astype(np.int16)  # [k, j, i]
    mi, mj, mk = marker_ijk
    hu[mk, mj, mi] = 1500  # bright marker
    files = []
    marker_lps = None
    ks = list(range(nz))
    if reverse:
        ks = ks[::-1]
    for n, k in enumerate(ks):
        if drop is not None and k == drop:
            continue
        name = names[k] if names else f"IM{rng.integers(1e6):06d}_{k}.dcm"
        path = os.path.join(folder, name)
        ts = RLELossless if compress else ExplicitVRLittleEndian
        ds = base_dataset(path, "1.2.840.10008.5.1.4.1.1.2", "CT", series_uid, study_uid, for_uid)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SeriesDescription = "reference CT"
        ds.InstanceNumber = nz - n  # deliberately not the spatial order
        pos = np.array(origin, float) + k * spacing[2] * step
        ds.ImagePositionPatient = [f"{v:.6f}" for v in pos]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in list(row) + list(col)]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
        ds.SliceThickness = f"{spacing[2]:.6f}"
        ds.KVP = "120"
        ds.Laterality = ""
        ds.PatientPosition = "HFS"
        ds.AcquisitionNumber = 1
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        rows, cols = (ny + 2, nx) if (mixed and k == nz - 1) else (ny, nx)
        ds.Rows, ds.Columns = rows, cols
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        stored = (hu[k] + 1024).astype(np.int16)
        if mixed and k == nz - 1:
            stored = np.zeros((rows, cols), np.int16)
        if not nopixel:
            if compress:
                ds.compress(RLELossless, stored, encoding_plugin="pydicom")
            else:
                ds.PixelData = stored.tobytes()
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
        if duplicate is not None and k == duplicate:
            dpath = os.path.join(folder, "dup_" + name)
            ds.SOPInstanceUID = uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.save_as(dpath, enforce_file_format=True)
            files.append(dpath)
        if k == mk:
            marker_lps = [float(v) for v in pos + mi * spacing[0] * row + mj * spacing[1] * col]
    return files, marker_lps


def code_item(value, scheme, meaning):
    it = Dataset()
    it.CodeValue = value
    it.CodingSchemeDesignator = scheme
    it.CodeMeaning = meaning
    return it


def nm_dataset(path, series_uid, study_uid, for_uid, dims, spacing, origin, row, col, frames_data, slope, use_rwv):
    nx, ny, nz = dims
    ds = base_dataset(path, "1.2.840.10008.5.1.4.1.1.20", "NM", series_uid, study_uid, for_uid)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"]
    ds.SeriesDescription = "reference SPECT"
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.AcquisitionDateTime = "20260301090000"
    ds.PatientOrientationCodeSequence = Sequence([code_item("F-10450", "SRT", "recumbent")])
    ds.PatientOrientationCodeSequence[0].PatientOrientationModifierCodeSequence = Sequence([code_item("F-10340", "SRT", "supine")])
    ds.PatientGantryRelationshipCodeSequence = Sequence([code_item("F-10470", "SRT", "headfirst")])
    ds.AcquisitionContextSequence = Sequence([])
    ds.Rows, ds.Columns = ny, nx
    ds.NumberOfFrames = nz
    ds.FrameIncrementPointer = [pydicom.tag.Tag(0x0054, 0x0080)]
    ds.SliceVector = list(range(1, nz + 1))
    ds.NumberOfSlices = nz
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
    ds.SliceThickness = f"{spacing[2]:.6f}"
    ds.SpacingBetweenSlices = f"{spacing[2]:.6f}"
    ds.Units = "BQML"
    ds.CorrectedImage = ["ATTN", "SCAT", "DECY"]
    ds.DecayCorrection = "START"
    ds.LossyImageCompression = "00"
    ds.Laterality = ""
    ds.CountsAccumulated = 0
    if use_rwv:
        rw = Dataset()
        rw.RealWorldValueFirstValueMapped = 0
        rw.RealWorldValueLastValueMapped = 65535
        rw.RealWorldValueSlope = slope
        rw.RealWorldValueIntercept = 0.0
        rw.LUTExplanation = "Bq/ml"
        rw.LUTLabel = "BQML"
        rw.MeasurementUnitsCodeSequence = Sequence([code_item("Bq/ml", "UCUM", "Becquerels/milliliter")])
        ds.RealWorldValueMappingSequence = Sequence([rw])
        ds.RescaleSlope = "1"
        ds.RescaleIntercept = "0"
    else:
        ds.RescaleSlope = f"{slope:.8g}"
        ds.RescaleIntercept = "0"
    ew = Dataset()
    ew.EnergyWindowRangeSequence = Sequence([Dataset()])
    ew.EnergyWindowRangeSequence[0].EnergyWindowLowerLimit = "187.2"
    ew.EnergyWindowRangeSequence[0].EnergyWindowUpperLimit = "228.8"
    ew.EnergyWindowName = "Lu177 208keV"
    ds.EnergyWindowInformationSequence = Sequence([ew])
    ds.NumberOfEnergyWindows = 1
    rp = Dataset()
    rp.Radiopharmaceutical = "Lu177-DOTATATE"
    rp.RadiopharmaceuticalStartDateTime = "20260301080000"
    rp.RadiopharmaceuticalStartTime = "080000"
    rp.RadionuclideTotalDose = "7400000000"
    rp.RadionuclideHalfLife = "574300.8"
    rp.RadionuclideCodeSequence = Sequence([code_item("C-145A8", "SRT", "^177^Lutetium")])
    ds.RadiopharmaceuticalInformationSequence = Sequence([rp])
    det = Dataset()
    det.ImagePositionPatient = [f"{v:.6f}" for v in origin]
    det.ImageOrientationPatient = [f"{v:.6f}" for v in list(row) + list(col)]
    det.FocalDistance = "0"
    det.CollimatorGridName = "MEGP"
    det.CollimatorType = "PARA"
    det.ZoomFactor = ["1", "1"]
    ds.DetectorInformationSequence = Sequence([det])
    ds.NumberOfDetectors = 1
    rot = Dataset()
    rot.StartAngle = "0"
    rot.AngularStep = "3"
    rot.RotationDirection = "CW"
    rot.ScanArc = "360"
    rot.ActualFrameDuration = 20000
    rot.NumberOfFramesInRotation = 60
    rot.TableTraverse = "0"
    rot.TableHeight = "150"
    ds.RotationInformationSequence = Sequence([rot])
    ds.NumberOfRotations = 1
    ds.PixelData = frames_data.astype(np.uint16).tobytes()
    return ds


def main():
    if os.path.isdir(GEN):
        shutil.rmtree(GEN)
    os.makedirs(GEN)
    os.makedirs(EXT, exist_ok=True)
    expected = {}
    pyd = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
    nibd = os.path.join(os.path.dirname(nib.__file__), "tests", "data")
    for f in ["CT_small.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm", "MR_truncated.dcm"]:
        shutil.copy(os.path.join(pyd, f), os.path.join(EXT, f))
    for f in ["anatomical.nii", "reoriented_anat_moved.nii", "resampled_anat_moved.nii", "standard.nii.gz", "functional.nii", "example_nifti2.nii.gz"]:
        shutil.copy(os.path.join(nibd, f), os.path.join(EXT, f))

    for f in ["CT_small.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm"]:
        k, v = expect_dicom("pydicom_" + f.replace(".dcm", ""), [os.path.join(EXT, f)])
        expected[k] = v
    # resampled_anat_moved.nii holds NaN voxels: organdose refuses it (tests/it/io.rs), so it has no expected values.
    for f in ["anatomical.nii", "reoriented_anat_moved.nii", "standard.nii.gz"]:
        k, v = expect_nifti("nibabel_" + f.split(".")[0], os.path.join(EXT, f))
        expected[k] = v
    k, v = expect_nifti("nibabel_functional_frame1", os.path.join(EXT, "functional.nii"), frame=1)
    expected[k] = v

    # CT series: axial (head first supine), flipped rows and feet-to-head stacking, oblique.
    dims = (20, 16, 6)
    sp = (0.8, 0.7, 2.5)
    c, s = np.cos(np.radians(15)), np.sin(np.radians(15))
    cases = {
        "ct_axial": dict(row=[1, 0, 0], col=[0, 1, 0], origin=[-8.0, -5.6, -50.0]),
        "ct_flipped": dict(row=[-1, 0, 0], col=[0, 1, 0], origin=[8.0, -5.6, 40.0]),
        "ct_oblique": dict(row=[c, s, 0], col=[0, 0, -1], origin=[-10.0, 30.0, 12.0]),
        "ct_rle": dict(row=[1, 0, 0], col=[0, 1, 0], origin=[-8.0, -5.6, -50.0], compress=True),
        "ct_reverse_files": dict(row=[1, 0, 0], col=[0, 1, 0], origin=[-8.0, -5.6, -50.0], reverse=True),
    }
    for name, kw in cases.items():
        # Marker at i = 17 of 20: patient left for +x rows, patient right for -x rows.
        files, marker = write_ct_series(os.path.join(GEN, name), dims, sp, marker_ijk=(17, 4, 3), **kw)
        k, v = expect_dicom(name, files, marker=marker, units="HU")
        expected[k] = v

    # NM multi-frame, Bq/mL through Real World Value Mapping, and through Rescale.
    nm_dims = (16, 12, 8)
    nm_sp = (4.42, 4.42, 4.42)
    for name, use_rwv in [("nm_multiframe_rwv", True), ("nm_multiframe_rescale", False)]:
        folder = os.path.join(GEN, name)
        os.makedirs(folder)
        path = os.path.join(folder, "spect.dcm")
        data = rng.integers(0, 4000, size=(nm_dims[2], nm_dims[1], nm_dims[0]))
        data[5, 3, 14] = 60000  # marker: patient left (+x)
        ds = nm_dataset(path, uid(), uid(), uid(), nm_dims, nm_sp, [-33.15, -24.31, -100.0], [1, 0, 0], [0, 1, 0], data, 0.3716, use_rwv)
        ds.save_as(path, enforce_file_format=True)
        marker = [-33.15 + 14 * 4.42, -24.31 + 3 * 4.42, -100.0 + 5 * 4.42]
        k, v = expect_dicom(name, [path], marker=marker, units="Bq/mL")
        expected[k] = v

    # NM single frame per slice (some consoles export SPECT like this).
    folder = os.path.join(GEN, "nm_singleframe")
    os.makedirs(folder)
    series_uid, study_uid, for_uid = uid(), uid(), uid()
    files = []
    for kk in range(5):
        path = os.path.join(folder, f"slice_{4 - kk}.dcm")
        data = rng.integers(0, 2000, size=(1, 10, 12))
        ds = nm_dataset(path, series_uid, study_uid, for_uid, (12, 10, 1), (4.0, 4.0, 4.0), [0.0, 0.0, 0.0], [1, 0, 0], [0, 1, 0], data, 0.5 + 0.1 * kk, False)
        ds.ImagePositionPatient = ["0", "0", f"{-20 + 4 * kk}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.DetectorInformationSequence[0].ImagePositionPatient = ds.ImagePositionPatient
        ds.InstanceNumber = kk + 1
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    k, v = expect_dicom("nm_singleframe", files, units="Bq/mL")
    expected[k] = v

    # Malformed inputs: each must give a clear error.
    bad = os.path.join(GEN, "bad")
    os.makedirs(bad)
    src = expected["ct_axial"]["path"]
    one = sorted(os.listdir(os.path.join(DATA, src)))[0]
    raw = open(os.path.join(DATA, src, one), "rb").read()
    open(os.path.join(bad, "truncated.dcm"), "wb").write(raw[: len(raw) - 300])
    open(os.path.join(bad, "header_only.dcm"), "wb").write(raw[:200])
    open(os.path.join(bad, "not_dicom.dcm"), "wb").write(b"this is a text file, not DICOM\n" * 10)
    write_ct_series(os.path.join(bad, "no_pixel"), (8, 8, 3), sp, [0, 0, 0], [1, 0, 0], [0, 1, 0], (1, 1, 1), nopixel=True)
    write_ct_series(os.path.join(bad, "mixed_sizes"), (8, 8, 3), sp, [0, 0, 0], [1, 0, 0], [0, 1, 0], (1, 1, 1), mixed=True)
    write_ct_series(os.path.join(bad, "missing_slice"), (8, 8, 6), sp, [0, 0, 0], [1, 0, 0], [0, 1, 0], (1, 1, 1), drop=3)
    write_ct_series(os.path.join(bad, "duplicate_slice"), (8, 8, 4), sp, [0, 0, 0], [1, 0, 0], [0, 1, 0], (1, 1, 1), duplicate=2)
    tilt = np.array([0.0, np.sin(np.radians(12)), np.cos(np.radians(12))])
    write_ct_series(os.path.join(bad, "gantry_tilt"), (8, 8, 4), sp, [0, 0, 0], [1, 0, 0], [0, 1, 0], (1, 1, 1), step_dir=tilt)

    # Independent IOD check (Debian dicom3tools), when installed.
    if shutil.which("dciodvfy"):
        import subprocess
        for name in ["ct_axial", "nm_multiframe_rwv", "nm_multiframe_rescale"]:
            folder = os.path.join(GEN, name)
            f = os.path.join(folder, sorted(os.listdir(folder))[0])
            out = subprocess.run(["dciodvfy", f], capture_output=True, text=True)
            errors = [l for l in (out.stdout + out.stderr).splitlines() if l.startswith("Error")]
            print(f"dciodvfy {name}: {len(errors)} errors", *errors, sep="\n  ")
            if errors:
                return 1
    with open(os.path.join(DATA, "expected.json"), "w") as f:
        json.dump({"generator": "tests/scripts/make_reference.py", "pydicom": pydicom.__version__,
                   "nibabel": nib.__version__, "cases": expected}, f, indent=1, sort_keys=True)
    print(f"wrote {len(expected)} cases to {DATA}/expected.json")


if __name__ == "__main__":
    sys.exit(main())
