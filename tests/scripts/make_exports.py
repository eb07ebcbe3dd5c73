#!/usr/bin/env python3
"""Write the console-like exports of tests/it/dicom_exports.rs with outside tools
(highdicom, pydicom), from organdose phantom series:

  make_exports.py enhanced-ct CT_DIR OUT.dcm
      highdicom's Legacy Converted Enhanced CT Image (one multi-frame object,
      functional groups) from a single-frame CT series; frames shuffled.
  make_exports.py pt NM.dcm OUT_DIR
      the SPECT reconstruction rewritten as PET Image Storage (Modality PT), one
      file per slice, each with its own RescaleSlope, Units BQML, DecayCorrection START.
  make_exports.py dicomdir IN_DIR OUT_DIR
      pydicom's FileSet: the files of IN_DIR copied under OUT_DIR with a DICOMDIR.
"""
import copy
import random
import sys
from pathlib import Path

import numpy as np
import pydicom
import pydicom.config
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


def enhanced_ct(ct_dir, out):
    import highdicom as hd
    from highdicom.legacy import LegacyConvertedEnhancedCTImage

    # highdicom combines AcquisitionDate and Time as date and time objects.
    pydicom.config.datetime_conversion = True
    files = sorted(Path(ct_dir).iterdir())
    ds = [pydicom.dcmread(f) for f in files]
    random.Random(7).shuffle(ds)
    img = LegacyConvertedEnhancedCTImage(
        legacy_datasets=ds,
        series_instance_uid=hd.UID(),
        series_number=40,
        sop_instance_uid=hd.UID(),
        instance_number=1,
    )
    img.save_as(out)


def pt(nm_file, out_dir):
    nm = pydicom.dcmread(nm_file)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    det = nm.DetectorInformationSequence[0]
    iop = [float(x) for x in det.ImageOrientationPatient]
    ipp0 = np.array([float(x) for x in det.ImagePositionPatient])
    normal = np.cross(iop[:3], iop[3:])
    dz = float(nm.SpacingBetweenSlices)
    slope0 = float(getattr(nm, "RescaleSlope", 1.0))
    icpt0 = float(getattr(nm, "RescaleIntercept", 0.0))
    frames = nm.pixel_array.astype(np.float64) * slope0 + icpt0  # Bq/mL
    series_uid = generate_uid()
    for k, plane in enumerate(frames):
        ds = pydicom.Dataset()
        for kw in [
            "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
            "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID",
            "AccessionNumber", "FrameOfReferenceUID", "SeriesDate", "SeriesTime",
            "AcquisitionDate", "AcquisitionTime", "SeriesDescription",
            "RadiopharmaceuticalInformationSequence", "Manufacturer",
        ]:
            if kw in nm:
                setattr(ds, kw, copy.deepcopy(nm.data_element(kw).value))
        ds.SOPClassUID = pydicom.uid.PositronEmissionTomographyImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.Modality = "PT"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 30
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = iop
        ds.ImagePositionPatient = [float(x) for x in ipp0 + k * dz * normal]
        ds.PixelSpacing = [float(x) for x in nm.PixelSpacing]
        ds.SliceThickness = dz
        ds.Units = "BQML"
        ds.DecayCorrection = "START"
        ds.CorrectedImage = ["ATTN", "SCAT"]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = plane.shape
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        # Per-slice scaling, as PET consoles write it.
        top = max(float(np.abs(plane).max()), 1e-6)
        slope = top / 32000.0
        ds.RescaleSlope = f"{slope:.8g}"[:16]
        ds.RescaleIntercept = 0
        slope = float(ds.RescaleSlope)
        ds.PixelData = np.rint(plane / slope).astype("<i2").tobytes()
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(out / f"PT{k + 1:04d}.dcm", write_like_original=False)


def dicomdir(in_dir, out_dir):
    from pydicom.fileset import FileSet

    fs = FileSet()
    for f in sorted(p for p in Path(in_dir).rglob("*") if p.is_file()):
        fs.add(pydicom.dcmread(f))
    fs.write(out_dir)


if __name__ == "__main__":
    cmd, a, b = sys.argv[1:4]
    {"enhanced-ct": enhanced_ct, "pt": pt, "dicomdir": dicomdir}[cmd](a, b)
