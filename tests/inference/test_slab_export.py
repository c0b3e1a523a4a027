"""The slab export (network grid -> label map, each output voxel once) against nnU-Net's export + post-processing,
and hybrid prompts preprocessed with the image once."""
import copy

import numpy as np
import pytest
import torch

from nnunetv2_medals.inference.export import export_prediction, prompt_label_manager
from nnunetv2_medals.inference.predictor import load_model
from nnunetv2_medals.inference.slab_export import axis_tables, interpolation_modes
from nnunetv2_medals.text_prompts.prompt_file import Prompt

PROMPTS = [Prompt("liver", 3), Prompt("spleen", 1), Prompt("lymph node", 7, instance=True), Prompt("kidney", 2),
           Prompt("liver again", 5)]
MULTI_PART = [False, False, True, True, False]


def _both(probs, properties, predictor, prompts=PROMPTS, multi_part=MULTI_PART):
    kwargs = dict(multi_part=multi_part, min_instance_volume_mm3=1.0)
    slab = export_prediction(probs, properties, prompts, predictor.plans_manager, predictor.configuration_manager,
                             method="slab", **kwargs)
    old = export_prediction(probs, properties, prompts, predictor.plans_manager, predictor.configuration_manager,
                            method="nnunet", **kwargs)
    return slab, old


def _agree(slab, old):
    assert slab.label_map.dtype == old.label_map.dtype and slab.label_map.shape == old.label_map.shape
    assert (slab.label_map == old.label_map).mean() >= 0.999
    assert slab.instances.keys() == old.instances.keys()
    for label in old.instances:
        assert (slab.instances[label] == old.instances[label]).mean() >= 0.999
    assert [p["voxels"] for p in slab.summary["prompts"]] == pytest.approx(
        [p["voxels"] for p in old.summary["prompts"]], rel=1e-3, abs=50)


def _blobs(grid, n, rng, scale=8.0):
    """(n, *grid) probabilities: a few smooth blobs per prompt, logits in about [-scale, scale]."""
    coords = np.stack(np.meshgrid(*[np.linspace(0, 1, g) for g in grid], indexing="ij"), -1)
    out = []
    for _ in range(n):
        field = np.full(grid, -scale, np.float32)
        for _ in range(rng.integers(1, 4)):
            centre, radius = rng.uniform(0.2, 0.8, 3), rng.uniform(0.1, 0.3)
            field = np.maximum(field, scale * (1 - np.linalg.norm(coords - centre, axis=-1) / radius))
        out.append(field)
    return torch.sigmoid(torch.from_numpy(np.stack(out)))


@pytest.fixture(scope="module")
def smoke(preprocessed_phantom, smoke_model):
    predictor = load_model(str(smoke_model["dir"]), (0,), device=torch.device("cpu"))
    image = [str(sorted((preprocessed_phantom["raw"] / "imagesTs").iterdir())[0])]
    data, props, _ = predictor.preprocess_case(image, PROMPTS)
    return predictor, image, data, props


def test_slab_export_equals_nnunets_export_on_a_model(smoke):
    """The smoke model's own probabilities (near 0.5 everywhere: many undecided voxels) and sharp synthetic ones on
    its network grid, with a duplicate prompt (index 4 repeats 0), an instance and a multi-part prompt."""
    predictor, _, data, props = smoke
    predictor._text = predictor.embed([p.text for p in PROMPTS])
    predictor._n_image_channels = data.shape[0]
    predictor.label_manager = prompt_label_manager([p.label for p in PROMPTS])
    probs = predictor._probabilities(torch.as_tensor(data), None)
    _agree(*_both(probs, props, predictor))
    sharp = _blobs(data.shape[1:], len(PROMPTS), np.random.default_rng(0))
    sharp[4] = sharp[0]
    slab, old = _both(sharp, props, predictor)
    _agree(slab, old)
    assert (old.label_map == 3).any() and not (old.label_map == 5).any() and (old.label_map == 7).any()
    # probabilities in the image geometry are computed when read, as nnU-Net's export gives them
    np.testing.assert_array_equal(slab.probabilities, old.probabilities)


def test_slab_export_equals_nnunets_export_on_an_anisotropic_case(smoke):
    """Thick slices: the plans' resampling takes the separate-z path (nearest-exact out of plane); the image is
    larger than the nonzero crop, so un-cropping is exercised too."""
    predictor, _, _, _ = smoke
    cm = predictor.configuration_manager
    spacing = [float(cm.spacing[0]) * 1.6, float(cm.spacing[1]) / 3.1, float(cm.spacing[2]) / 2.7]
    crop = [[2, 22], [5, 75], [3, 59]]
    props = {"spacing": spacing, "shape_before_cropping": (25, 80, 64), "bbox_used_for_cropping": crop,
             "shape_after_cropping_and_before_resampling": (20, 70, 56)}
    grid = (int(round(20 * 1.6)), int(round(70 / 3.1)), int(round(56 / 2.7)))
    modes = interpolation_modes(cm, predictor.plans_manager, props)
    assert modes == ["nearest-exact", "linear", "linear"]
    slab, old = _both(_blobs(grid, len(PROMPTS), np.random.default_rng(1)), props, predictor)
    _agree(slab, old)
    assert not slab.label_map[:2].any() and not slab.label_map[22:].any() and slab.label_map.any()


def test_axis_tables_are_torchs_interpolation():
    for n_in, n_out, mode in [(7, 23, "linear"), (23, 7, "linear"), (9, 9, "linear"), (5, 17, "nearest-exact"),
                              (17, 5, "nearest-exact")]:
        values = torch.rand(n_in)
        i0, i1, w = axis_tables(n_in, n_out, mode, "cpu")
        expected = torch.nn.functional.interpolate(values[None, None], size=n_out, mode=mode)[0, 0]
        torch.testing.assert_close(torch.lerp(values[i0], values[i1], w), expected, rtol=0, atol=1e-6)


def test_unsupported_resampling_falls_back_to_nnunets_export(smoke):
    predictor, _, data, props = smoke
    cm = copy.deepcopy(predictor.configuration_manager)
    cm.configuration["resampling_fn_probabilities"] = "resample_data_or_seg_to_shape"
    cm.configuration["resampling_fn_probabilities_kwargs"] = {"is_seg": False, "order": 1, "order_z": 0,
                                                              "force_separate_z": None}
    assert interpolation_modes(cm, predictor.plans_manager, props) is None
    probs = _blobs(data.shape[1:], 2, np.random.default_rng(2))
    result = export_prediction(probs, props, PROMPTS[:2], predictor.plans_manager, cm, method="slab")
    assert isinstance(result.probabilities_source, np.ndarray)  # nnU-Net's path made them eagerly


def test_hybrid_masks_preprocessed_with_the_image_once_equal_nnunets_per_mask_run(smoke):
    """Each mask prompt on the image's grid equals what nnU-Net's preprocessing of image + mask gives, and the
    image is preprocessed once."""
    predictor, image, _, _ = smoke
    from nnunetv2_medals.inference.case_files import read_case
    array, props, _ = read_case(predictor, image, [])
    rng = np.random.default_rng(3)
    mask = np.zeros(array.shape[1:], bool)
    z, y, x = (s // 2 for s in mask.shape)
    mask[z - 4:z + 3, y - 9:y + 5, x - 6:x + 8] = True
    mask[rng.random(mask.shape) < 0.002] = True
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    calls = []
    original = type(preprocessor).run_case_npy
    type(preprocessor).run_case_npy = lambda self, *a, **k: calls.append(1) or original(self, *a, **k)
    try:
        data, _, prompts = predictor.preprocess(array, props, PROMPTS[:3], [mask, None, mask[::-1].copy()])
    finally:
        type(preprocessor).run_case_npy = original
    assert len(calls) == 1
    for i, m in [(0, mask), (2, mask[::-1].copy())]:
        _, seg, _ = preprocessor.run_case_npy(array.copy(), m[None].astype(np.int8), copy.deepcopy(props),
                                              predictor.plans_manager, predictor.configuration_manager,
                                              predictor.dataset_json)
        np.testing.assert_array_equal(prompts[i].numpy(), (seg[0] > 0).astype(np.float32))
    assert not prompts[1].any() and prompts.shape[1:] == data.shape[1:]


def test_a_grid_finer_than_the_output_keeps_slabs_small_and_the_same_answer(monkeypatch):
    """Thick output slices under a fine network grid: many grid cells per output row. A small corner budget forces
    one-row slabs; the label map is still the argmax of torch's interpolation of all prompts (>= 0.5, earlier
    prompt on ties)."""
    import nnunetv2_medals.inference.slab_export as slab_export

    rng = np.random.default_rng(3)
    probs = _blobs((40, 12, 14), 3, rng)
    logits = torch.logit(probs.float().clamp(1e-6, 1 - 1e-6))
    out_shape = (9, 20, 23)
    modes = ["linear"] * 3
    reference = torch.nn.functional.interpolate(logits[None], size=out_shape, mode="trilinear")[0].sigmoid()
    expected = np.where(reference.amax(0).numpy() >= 0.5, reference.argmax(0).numpy() + 1, 0)
    for budget in (2 ** 26, 8 * 3 * 12 * 14 * 3):
        monkeypatch.setattr(slab_export, "CORNER_BUDGET", budget)
        out = np.zeros(out_shape, np.uint16)
        slab_export.slab_label_map(logits, [1, 2, 3], out_shape, modes, out)
        assert (out == expected).mean() >= 0.999
