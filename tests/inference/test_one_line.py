"""``nnunetv2_medals predict`` (inference/one_line.py): NIfTI, NRRD and DICOM series in, NIfTI and DICOM SEG out,
models as zip files, and bad input refused before anything is written."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from nnunetv2_medals.cli import main
from tests.helpers import PHANTOM_ID, run

PROMPTS = ["left kidney", "spleen"]


def write_dicom_series(image: sitk.Image, folder: Path, series_number: int = 2, description: str = "phantom CT",
                       study_uid: str | None = None) -> tuple[str, list[tuple[float, float, float]]]:
    """Write ``image`` as a CT series (one file per slice, LPS, int16 with rescale -1024, realistic tags; file
    names in reverse slice order so readers must sort by position). Returns the SeriesInstanceUID and the slices'
    ImagePositionPatient."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    lps = sitk.DICOMOrient(image, "LPS")
    stored = (np.round(sitk.GetArrayFromImage(lps)) + 1024).astype(np.int16)
    d = lps.GetDirection()
    spacing = lps.GetSpacing()
    series_uid, study_uid, frame_uid = generate_uid(), study_uid or generate_uid(), generate_uid()
    positions = []
    for k in range(stored.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        file = folder / f"S{series_number}_IM{stored.shape[0] - k:04d}.dcm"
        ds = FileDataset(str(file), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "PHANTOM01", "Phantom^Test", "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", ""
        ds.ReferringPhysicianName, ds.Manufacturer = "", "test"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", series_number, k + 1
        ds.SeriesDescription = description
        position = lps.TransformIndexToPhysicalPoint((0, 0, k))
        positions.append(tuple(float(v) for v in position))
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
        ds.SliceThickness = f"{spacing[2]:.6f}"
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = "1", "-1024", "HU"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = stored[k].tobytes()
        ds.save_as(file, enforce_file_format=True)
    return series_uid, positions


@pytest.fixture(scope="module")
def scans(tmp_path_factory, preprocessed_phantom):
    """The phantom test case as NIfTI (rounded to integer HU, as DICOM stores it), NRRD and a DICOM series (plus a
    two-slice localizer series beside it, which must be passed over)."""
    root = tmp_path_factory.mktemp("scans")
    image = sitk.ReadImage(str(preprocessed_phantom["raw"] / "imagesTs" / "phantom_ts_000_0000.nii.gz"))
    rounded = sitk.Cast(image if image.GetPixelID() == sitk.sitkInt16 else sitk.Round(image), sitk.sitkInt16)
    sitk.WriteImage(rounded, str(root / "case.nii.gz"))
    sitk.WriteImage(rounded, str(root / "case_nrrd.nrrd"))
    series_uid, positions = write_dicom_series(rounded, root / "dicom" / "ct_series")
    localizer = sitk.Cast(rounded[:, :, :2], sitk.sitkInt16)
    write_dicom_series(localizer, root / "dicom" / "ct_series", series_number=1, description="localizer")
    return {"root": root, "nifti": root / "case.nii.gz", "nrrd": root / "case_nrrd.nrrd",
            "dicom": root / "dicom" / "ct_series", "series_uid": series_uid, "positions": positions}


def predict(args, env):
    return run(["nnunetv2_medals", "predict", *map(str, args)], env)


def world_labels(path) -> tuple[np.ndarray, sitk.Image]:
    """A label map resampled onto the LPS grid (world-space comparison of outputs of differently stored inputs)."""
    image = sitk.ReadImage(str(path))
    lps = sitk.DICOMOrient(image, "LPS")
    return sitk.GetArrayFromImage(lps), lps


def test_one_line_on_nifti_and_nrrd_writes_label_map_legend_instances_and_preview(smoke_model, scans, tmp_path):
    out = tmp_path / "out"
    proc = predict(["-i", scans["nifti"], scans["nrrd"], "-o", out, "-m", smoke_model["dir"], "-p", *PROMPTS,
                    "--instance", "lymph nodes", "--preview"], smoke_model["env"])
    assert "wrote 2 results" in proc.stdout
    for name, source in (("case", scans["nifti"]), ("case_nrrd", scans["nrrd"])):
        for suffix in (".nii.gz", ".json", "_legend.json", "_instances_label3.nii.gz", "_overlay.png"):
            assert (out / f"{name}{suffix}").is_file(), name + suffix
        labels = sitk.ReadImage(str(out / f"{name}.nii.gz"))
        original = sitk.ReadImage(str(source))
        assert labels.GetSize() == original.GetSize() and np.allclose(labels.GetOrigin(), original.GetOrigin())
        assert np.allclose(labels.GetDirection(), original.GetDirection())
        values = set(np.unique(sitk.GetArrayFromImage(labels)).tolist())
        assert values <= {0, 1, 2, 3}
        legend = json.loads((out / f"{name}_legend.json").read_text())
        assert legend["label_map"] == f"{name}.nii.gz" and Path(legend["source"]) == Path(source).resolve()
        assert [legend["labels"][k]["prompt"] for k in ("1", "2", "3")] == [*PROMPTS, "lymph nodes"]
        assert legend["labels"]["1"]["matched_target"] == "left kidney"
        assert legend["labels"]["1"]["match_method"] == "canonical"
        assert legend["labels"]["3"]["instance"] and legend["labels"]["3"]["instance_map"].endswith("label3.nii.gz")
        voxel_ml = float(np.prod(original.GetSpacing())) / 1000
        for k, entry in legend["labels"].items():
            assert entry["voxels"] == int((sitk.GetArrayFromImage(labels) == int(k)).sum())
            assert entry["volume_ml"] == pytest.approx(entry["voxels"] * voxel_ml, abs=1e-3)
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "case.nii.gz"))),
                          sitk.GetArrayFromImage(sitk.ReadImage(str(out / "case_nrrd.nii.gz"))))
    assert not list(out.glob(".tmp*")) and not list(out.glob(".*.tmp"))


def test_one_line_on_a_dicom_series_writes_nifti_and_a_dicom_seg_on_the_source_slices(smoke_model, scans, tmp_path):
    import highdicom as hd

    out = tmp_path / "out"
    proc = predict(["-i", scans["dicom"], scans["nifti"], "-o", out / "nifti", "-m", smoke_model["dir"], "-p",
                    *PROMPTS], smoke_model["env"])
    assert "using the largest" in proc.stdout and scans["series_uid"] in proc.stdout
    proc = predict(["-i", scans["dicom"], "-o", out / "seg", "-m", smoke_model["dir"], "-p", *PROMPTS,
                    "--output_type", "dicom_seg"], smoke_model["env"])
    # the series and the NIfTI of the same voxels give one world-space answer (DICOM is LPS, read canonical)
    from_dicom, grid = world_labels(out / "nifti" / "ct_series.nii.gz")
    from_nifti, _ = world_labels(out / "nifti" / "case.nii.gz")
    assert np.array_equal(from_dicom, from_nifti)
    legend = json.loads((out / "seg" / "ct_series_legend.json").read_text())
    assert legend["series_instance_uid"] == scans["series_uid"]

    seg = hd.seg.segread(out / "seg" / "ct_series_seg.dcm")
    assert [s.SegmentLabel for s in seg.SegmentSequence] == PROMPTS
    n_slices = len(scans["positions"])
    assert int(seg.NumberOfFrames) == n_slices * len(PROMPTS)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == scans["series_uid"]
    assert seg.PatientID == "PHANTOM01"
    slice_of = {tuple(round(v, 3) for v in p): k for k, p in enumerate(scans["positions"])}
    labels_by_slice = {tuple(round(v, 3) for v in grid.TransformIndexToPhysicalPoint((0, 0, z))): from_dicom[z]
                       for z in range(from_dicom.shape[0])}
    pixels = seg.pixel_array
    seen = set()
    for i, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        position = tuple(round(float(v), 3) for v in frame.PlanePositionSequence[0].ImagePositionPatient)
        assert position in slice_of, position  # every frame lies on a source slice
        segment = int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        seen.add((position, segment))
        assert np.array_equal(pixels[i] > 0, labels_by_slice[position] == segment)
    assert len(seen) == n_slices * len(PROMPTS)


def test_zip_export_and_install_give_identical_predictions(smoke_model, scans, tmp_path):
    env = dict(smoke_model["env"], nnUNet_medals_cache=str(tmp_path / "cache"))
    archive = tmp_path / "model.zip"
    run(["nnUNetv2_export_model_to_zip", "-d", str(PHANTOM_ID), "-o", str(archive), "-c", "3d_fullres", "-tr",
         "MedalSTrainer_smoke", "-p", "MedalSPlansCPU", "-f", "0"], env)
    other = dict(env, nnUNet_results=str(tmp_path / "empty_results"))
    (tmp_path / "empty_results").mkdir()
    run(["nnUNetv2_install_pretrained_model_from_zip", str(archive)], other)
    images = tmp_path / "images"
    images.mkdir()
    (images / "case_0000.nii.gz").symlink_to(scans["nifti"])
    stock = ["nnUNetv2_predict", "-d", str(PHANTOM_ID), "-c", "3d_fullres", "-f", "0", "-tr", "MedalSTrainer_smoke",
             "-p", "MedalSPlansCPU", "-device", "cpu", "-i", str(images)]
    run([*stock, "-o", str(tmp_path / "stock_here")], env)
    run([*stock, "-o", str(tmp_path / "stock_installed")], other)
    predict(["-i", scans["nifti"], "-o", tmp_path / "folder", "-m", smoke_model["dir"], "-p", *PROMPTS], env)
    predict(["-i", scans["nifti"], "-o", tmp_path / "zip", "-m", archive, "-p", *PROMPTS], other)
    for a, b in (("stock_here/case.nii.gz", "stock_installed/case.nii.gz"), ("folder/case.nii.gz", "zip/case.nii.gz")):
        left, right = (sitk.ReadImage(str(tmp_path / f)) for f in (a, b))
        assert np.array_equal(sitk.GetArrayFromImage(left), sitk.GetArrayFromImage(right)), a
        assert left.GetOrigin() == right.GetOrigin() and left.GetSpacing() == right.GetSpacing()
    assert len(list((tmp_path / "cache" / "models").iterdir())) == 1  # unpacked once, into the cache


def _one_line_error(args, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main(["predict", *map(str, args)])
    message = str(info.value.code)
    assert message.startswith("error: ") and "\n" not in message
    return message


def test_bad_input_is_one_line_error_and_nothing_is_written(smoke_model, scans, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("nnUNet_medals_cache", str(tmp_path / "cache"))
    out = tmp_path / "out"
    model = smoke_model["dir"]
    no_image = tmp_path / "no_image"
    no_image.mkdir()
    (no_image / "notes.txt").write_text("not an image")
    assert "holds no readable image" in _one_line_error(["-i", no_image, "-o", out, "-m", model, "-p", "liver"],
                                                        capsys)
    no_series = tmp_path / "dicom_without_images"
    no_series.mkdir()
    report = pydicom.Dataset()
    report.SOPClassUID = pydicom.uid.BasicTextSRStorage
    report.SOPInstanceUID, report.SeriesInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    report.Modality, report.PatientID = "SR", "PHANTOM01"
    report.file_meta = pydicom.dataset.FileMetaDataset()
    report.file_meta.MediaStorageSOPClassUID = report.SOPClassUID
    report.file_meta.MediaStorageSOPInstanceUID = report.SOPInstanceUID
    report.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    report.save_as(no_series / "report.dcm", enforce_file_format=True)
    assert "no image series" in _one_line_error(["-i", no_series, "-o", out, "-m", model, "-p", "liver"], capsys)
    not_a_model = tmp_path / "not_a_model.zip"
    with zipfile.ZipFile(not_a_model, "w") as z:
        z.writestr("readme.txt", "hello")
    assert "not an nnU-Net model zip" in _one_line_error(["-i", scans["nifti"], "-o", out, "-m", not_a_model, "-p",
                                                          "liver"], capsys)
    assert "holds no letters" in _one_line_error(["-i", scans["nifti"], "-o", out, "-m", model, "-p", ""], capsys)
    hint = tmp_path / "hint.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(scans["nifti"])) > 100, str(hint))
    message = _one_line_error(["-i", scans["nifti"], "-o", out, "-m", model, "-p", "spleen", "--mask",
                               f"liver={hint}"], capsys)
    assert "'liver' is not one of the prompts" in message
    message = _one_line_error(["-i", scans["dicom"], "-o", scans["dicom"] / "out", "-m", model, "-p", "spleen"], capsys)
    assert "outputs must not overwrite or sit among inputs" in message
    assert "dicom_seg needs DICOM" in _one_line_error(["-i", scans["nifti"], "-o", out, "-m", model, "-p", "spleen",
                                                       "--output_type", "dicom_seg"], capsys)
    assert not out.exists() and not (scans["dicom"] / "out").exists()
    assert not (tmp_path / "cache" / "models").exists() or not any((tmp_path / "cache" / "models").iterdir())


def test_a_mask_prompt_from_the_command_line_reaches_its_prompt(smoke_model, scans, tmp_path):
    hint = tmp_path / "spleen_hint.nii.gz"
    image = sitk.ReadImage(str(scans["nifti"]))
    sitk.WriteImage(sitk.Cast(image > 150, sitk.sitkUInt8), str(hint))
    out = tmp_path / "out"
    predict(["-i", scans["nifti"], "-o", out, "-m", smoke_model["dir"], "-p", *PROMPTS, "--mask", f"spleen={hint}"],
            smoke_model["env"])
    summary = json.loads((out / "case.json").read_text())
    assert [p["mask"] for p in summary["prompts"]] == [None, str(hint)]
    assert json.loads((out / "case_legend.json").read_text())["labels"]["2"]["mask_prompt"] == str(hint)


def test_a_folder_of_scans_with_a_prompt_file_keeps_the_files_label_values(smoke_model, scans, tmp_path):
    # a folder holding an image file and a DICOM series subfolder (with its localizer beside it); a prompt file
    # with its own label values and a per-case prompt list for one input
    folder = tmp_path / "scans"
    folder.mkdir()
    (folder / "case.nii.gz").symlink_to(scans["nifti"])
    (folder / "ct_series").symlink_to(scans["dicom"], target_is_directory=True)
    (folder / "notes.txt").write_text("not an image: passed over")
    prompt_file = tmp_path / "prompts.json"
    prompt_file.write_text(json.dumps({"prompts": [{"text": "spleen", "label": 5}, {"text": "left kidney", "label": 9}],
                                       "cases": {"ct_series": {"prompts": [{"text": "spleen", "label": 3}]}}}))
    out = tmp_path / "out"
    proc = predict(["-i", folder, "-o", out, "-m", smoke_model["dir"], "--prompts", prompt_file], smoke_model["env"])
    assert "wrote 2 results" in proc.stdout
    legend = json.loads((out / "case_legend.json").read_text())
    assert {k: v["prompt"] for k, v in legend["labels"].items()} == {"5": "spleen", "9": "left kidney"}
    assert set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "case.nii.gz"))))) <= {0, 5, 9}
    series = json.loads((out / "ct_series_legend.json").read_text())
    assert {k: v["prompt"] for k, v in series["labels"].items()} == {"3": "spleen"}
    assert series["series_instance_uid"] == scans["series_uid"]
    assert set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "ct_series.nii.gz"))))) <= {0, 3}
    # -p beside --prompts is refused
    bad = run(["nnunetv2_medals", "predict", "-i", str(folder), "-o", str(tmp_path / "bad"), "-m",
               str(smoke_model["dir"]), "-p", "liver", "--prompts", str(prompt_file)], smoke_model["env"], check=False)
    assert bad.returncode != 0 and "not both" in bad.stderr and not (tmp_path / "bad").exists()


def test_a_prompt_that_found_nothing_is_told_the_nearest_trained_phrasing():
    """An unseen wording answered from its own embedding that finds nothing ("the right psoas muscle" on the CT job's
    model) gets a note naming the nearest trained phrasing; a matched target that finds nothing, or a prompt that
    found something, gets none (the prompt itself is never replaced)."""
    from nnunetv2_medals.inference.folders import case_report

    def prompt(text, voxels, method, nearest="right iliopsoas muscle"):
        return {"text": text, "voxels": voxels, "volume_ml": voxels * 0.1,
                "match": {"method": method, "nearest_phrasing": nearest, "cosine": 0.7312}}

    summary = {"prompts": [prompt("the right psoas muscle", 0, "nearest embedding"),
                           prompt("right kidney", 0, "canonical", "right kidney"),
                           prompt("right erector spinae", 120, "nearest embedding", "right autochthon")]}
    summary["prompts"].append(prompt("right iliopsoas muscle", 0, "raw", "right iliopsoas muscle"))  # itself
    summary["prompts"].append({"text": "x", "voxels": 0, "volume_ml": 0.0,
                               "match": {"method": "raw", "nearest_phrasing": "spleen", "cosine": None}})
    lines = case_report("ct_test", summary).splitlines()[:2]
    assert lines[0].startswith("ct_test: the right psoas muscle=0.0 mL, right kidney=0.0 mL, right erector spinae=12.0 mL")
    assert case_report("c", summary).splitlines()[2:] == ["  note: 'x' found nothing; the nearest phrasing the model "
                                                          "was trained on is 'spleen': ask for that if it is what you "
                                                          "mean"]
    assert lines[1:] == ["  note: 'the right psoas muscle' found nothing; the nearest phrasing the model was trained "
                         "on is 'right iliopsoas muscle' (cosine 0.73): ask for that if it is what you mean"]
