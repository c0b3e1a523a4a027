"""Label maps from probabilities, Algorithm 3, instance numbering — on hand-built arrays."""
import cc3d
import numpy as np
import pytest

from nnunetv2_medals.postprocessing import (is_multi_part, keep_confident_components, number_instances,
                                            postprocess_label_map, probabilities_to_label_map)


def test_label_map_is_argmax_where_the_best_reaches_half():
    probs = np.zeros((2, 1, 1, 4))
    probs[0, ..., :] = [0.9, 0.6, 0.4, 0.1]
    probs[1, ..., :] = [0.2, 0.7, 0.45, 0.0]
    assert probabilities_to_label_map(probs, [5, 9]).ravel().tolist() == [5, 9, 0, 0]


def _blob(shape, corner, size):
    m = np.zeros(shape, bool)
    m[tuple(slice(c, c + size) for c in corner)] = True
    return m


def test_algorithm3_keeps_confident_large_components_and_drops_the_rest():
    shape = (20, 20, 20)
    big, mid, small, tiny = (_blob(shape, (0, 0, 0), 6), _blob(shape, (10, 10, 10), 4),
                             _blob(shape, (0, 12, 0), 3), _blob(shape, (17, 0, 17), 2))
    mask = big | mid | small | tiny
    probs = np.zeros(shape)
    probs[big], probs[mid], probs[small], probs[tiny] = 0.95, 0.90, 0.70, 0.99
    kept = keep_confident_components(mask, probs)
    # the slab export hands over the components it found already: same answer
    given = cc3d.connected_components(mask, connectivity=6, return_N=True)
    assert np.array_equal(keep_confident_components(mask, probs, components=given), kept)
    # tiny is outside the top-3 by size; small is below 0.86; big and mid are within 0.1 of the best
    assert np.array_equal(kept, big | mid)
    probs[mid] = 0.87   # still > 0.86 but 0.08 below the best: kept; at 0.84 it is dropped
    assert np.array_equal(keep_confident_components(mask, probs), big | mid)
    probs[mid] = 0.84
    assert np.array_equal(keep_confident_components(mask, probs), big)


def test_algorithm3_keeps_the_largest_when_the_confident_one_is_too_small():
    # the paper's size rule: 64 voxels at 0.6, 27 at 0.8 -> no component > 0.86 (K empty); the most confident (27)
    # is among the two largest but 27/64 = 0.42 is not > 0.6, so the largest stays
    shape = (12, 12, 12)
    a, b = _blob(shape, (0, 0, 0), 4), _blob(shape, (7, 7, 7), 3)
    probs = np.zeros(shape)
    probs[a], probs[b] = 0.6, 0.8
    assert np.array_equal(keep_confident_components(a | b, probs), a)


def test_algorithm3_never_trades_a_large_organ_for_a_small_confident_blob():
    # 1000 voxels at 0.80 and 8 at 0.95: K = {blob} (|K| = 1 < 2), 8/1000 < 0.6 -> the organ is kept
    shape = (16, 16, 16)
    organ, blob = _blob(shape, (0, 0, 0), 10), _blob(shape, (13, 13, 13), 2)
    probs = np.zeros(shape)
    probs[organ], probs[blob] = 0.80, 0.95
    assert np.array_equal(keep_confident_components(organ | blob, probs), organ)


def test_algorithm3_size_rule_takes_the_confident_one_only_among_the_two_largest():
    shape = (20, 20, 20)
    first = _blob(shape, (0, 0, 0), 4)                                   # 64 voxels
    second = np.zeros(shape, bool)
    second[10:14, 10:14, 10:13] = True                                   # 48 voxels: 48/64 = 0.75 > 0.6
    probs = np.zeros(shape)
    probs[first], probs[second] = 0.80, 0.95
    assert np.array_equal(keep_confident_components(first | second, probs), second)
    # three components 80, 60, 56 voxels; the third is the most confident and 56/80 = 0.7 > 0.6, but it is not
    # among the two largest -> the largest stays
    first, second, third = (np.zeros(shape, bool) for _ in range(3))
    first[0:4, 0:4, 0:5] = True
    second[10:14, 10:15, 10:13] = True
    third[0:4, 10:12, 10:17] = True
    probs = np.zeros(shape)
    probs[first], probs[second], probs[third] = 0.80, 0.80, 0.95
    assert np.array_equal(keep_confident_components(first | second | third, probs), first)


def test_algorithm3_ratio_must_exceed_0_6():
    shape = (4, 20, 20)
    big = np.zeros(shape, bool)
    big[0, 0:10, 0:10] = True                                            # 100 voxels at 0.80
    small = np.zeros(shape, bool)
    small[2, 0:6, 0:10] = True                                           # 60 voxels at 0.95: ratio exactly 0.6
    probs = np.zeros(shape)
    probs[big], probs[small] = 0.80, 0.95
    assert np.array_equal(keep_confident_components(big | small, probs), big)     # listing: "> 0.6"
    small[2, 6, 0] = True                                                # 61 voxels: 0.61 > 0.6
    probs[small] = 0.95
    assert np.array_equal(keep_confident_components(big | small, probs), small)


def test_multi_part_prompts_skip_algorithm3():
    shape = (12, 12, 12)
    right, left = _blob(shape, (0, 0, 0), 4), _blob(shape, (7, 7, 7), 3)
    label_map = np.zeros(shape, np.uint16)
    label_map[right | left] = 2
    probs = np.zeros((1, *shape))
    probs[0][right], probs[0][left] = 0.9, 0.7
    single, _ = postprocess_label_map(label_map, probs, [2], [False])
    assert np.array_equal(single == 2, right)                           # one part: Algorithm 3 drops the other
    both, _ = postprocess_label_map(label_map, probs, [2], [False], 10, [True])
    assert np.array_equal(both == 2, right | left)                      # "both kidneys" keeps both


def test_is_multi_part_from_what_the_model_knows():
    assert is_multi_part("liver", is_region=True)                       # a region target
    assert is_multi_part("liver", instance=True)
    for text in ("both kidneys", "bilateral hippocampus", "Lungs", "kidney", "Lung", "lymph nodes", "liver tumour",
                 "Lesion", "vertebrae", "adrenal gland"):
        assert is_multi_part(text), text
    for text in ("liver", "left kidney", "Right lung", "pancreas", "spleen", "esophagus", "uterus",
                 "left caudate nucleus", "aorta", "brainstem"):
        assert not is_multi_part(text), text


def test_six_connectivity_splits_diagonal_neighbours():
    mask = np.zeros((3, 3, 3), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = True
    numbered = number_instances(mask, min_voxels=1)
    assert set(np.unique(numbered)) == {0, 1, 2}


def test_instances_are_numbered_by_size_and_small_ones_dropped():
    shape = (20, 20, 20)
    mask = _blob(shape, (0, 0, 0), 3) | _blob(shape, (10, 10, 10), 4) | _blob(shape, (0, 15, 15), 2)
    numbered = number_instances(mask, min_voxels=10)
    assert numbered[10, 10, 10] == 1 and numbered[0, 0, 0] == 2 and numbered[0, 15, 15] == 0
    assert numbered.max() == 2
    # a 0/1 mask of another dtype (as read from a file) numbers the same
    assert np.array_equal(number_instances(mask.astype(np.uint8), min_voxels=10), numbered)


def test_postprocess_label_map_applies_both_rules():
    shape = (16, 16, 16)
    organ, stray = _blob(shape, (0, 0, 0), 5), _blob(shape, (10, 10, 10), 2)
    nodes = _blob(shape, (0, 10, 0), 3) | _blob(shape, (8, 0, 12), 1)
    label_map = np.zeros(shape, np.uint16)
    label_map[organ | stray] = 3
    label_map[nodes] = 7
    probs = np.zeros((2, *shape))
    probs[0][organ], probs[0][stray] = 0.97, 0.6
    probs[1][nodes] = 0.9
    out, instances = postprocess_label_map(label_map, probs, [3, 7], [False, True])
    assert np.array_equal(out == 3, organ)
    assert instances[7].max() == 1 and (out == 7).sum() == 27   # the 1-voxel node is dropped


def test_instance_size_limit_is_a_volume_from_the_trained_instances():
    """Issue #19: on the demo's ~4.7 x 4.7 x 6.7 mm grid a real 9-voxel lymph node (~1.3 mL) was dropped by the
    old 10-voxel rule. The limit is now a volume: a tenth of the box of the smallest trained instance target."""
    from nnunetv2_medals.postprocessing import (MIN_INSTANCE_VOLUME_MM3, min_instance_volume_mm3,
                                                min_instance_voxels)

    assert min_instance_volume_mm3([[20.0, 16.0, 16.0], [14.0, 14.0, 14.0]]) == pytest.approx(274.4)
    assert min_instance_volume_mm3([]) == MIN_INSTANCE_VOLUME_MM3 == 10.0
    spacing = (6.7, 4.7, 4.7)
    mask = np.zeros((10, 12, 12), bool)
    mask[2, 2:5, 2:5] = True                       # a node of 9 voxels (1.33 mL)
    mask[7, 8, 8] = True                           # a one-voxel fragment (0.15 mL)
    limit = min_instance_voxels(min_instance_volume_mm3([[14.0, 14.0, 14.0]]), spacing)
    numbered = number_instances(mask, limit)
    assert numbered.max() == 1 and (numbered == 1).sum() == 9
    assert number_instances(mask, 10).max() == 0   # what the old voxel rule did
    # the same limit on a 1 mm grid: the same volume, many more voxels
    assert min_instance_voxels(274.4, (1.0, 1.0, 1.0)) == pytest.approx(274.4)


@pytest.mark.parametrize("seed", range(6))
def test_one_multi_label_pass_equals_one_pass_per_label(monkeypatch, seed):
    """A noisy label map (labels all over the image, hundreds of components each, as an untrained network gives):
    the one-pass post-processing keeps and numbers exactly what the per-label one does, for single-part,
    multi-part and instance prompts, a label given twice and an absent one."""
    import nnunetv2_medals.postprocessing as pp
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    shape = (24, 30, 28)
    smooth = ndimage.uniform_filter(rng.random((5, *shape)), size=3)
    probs = smooth / smooth.max()
    label_map = probabilities_to_label_map(probs[:4] + 0.05 * (seed % 3), [1, 2, 3, 4], threshold=0.5)
    # some components of label 1 confident (> 0.86, within tau of each other): Algorithm 3's |K| >= 2 branch
    components = cc3d.connected_components(label_map == 1, connectivity=6)
    sizes = np.bincount(components.ravel())[1:]
    for rank, component in enumerate(np.argsort(-sizes, kind="stable")[:3] + 1):
        if rank != seed % 3:
            probs[0][components == component] = 0.9 + 0.02 * rank
    labels, instance, multi_part = [1, 2, 3, 4, 2, 9], [False, True, False, False, False, True], \
        [False, False, False, True, False, False]
    results = []
    for one_pass in (False, True):
        monkeypatch.setattr(pp, "one_pass_pays", lambda *a, one_pass=one_pass: one_pass)
        results.append(pp.postprocess_label_map(label_map, probs, labels, instance, min_instance_voxels=4,
                                                multi_part=multi_part))
    (a, inst_a), (b, inst_b) = results
    assert len(np.unique(cc3d.connected_components(label_map == 1, connectivity=6))) > 20
    assert (a != label_map).any()                  # something was dropped
    assert len(np.unique(cc3d.connected_components(a == 1, connectivity=6))) == 3   # two confident ones kept
    np.testing.assert_array_equal(a, b)
    assert inst_a.keys() == inst_b.keys() == {2, 9}
    for label in inst_a:
        assert inst_a[label].dtype == inst_b[label].dtype
        np.testing.assert_array_equal(inst_a[label], inst_b[label])
    assert inst_a[2].max() > 1 and not inst_a[9].any()


def test_the_one_pass_is_taken_when_labels_spread_over_the_image():
    from nnunetv2_medals.postprocessing import one_pass_pays
    from scipy import ndimage

    label_map = np.zeros((10, 10, 10), np.uint16)
    label_map[0, 0, 0] = label_map[9, 9, 0] = 1          # one label whose box is a tenth of the image
    label_map[2:4, 2:4, 2:4] = 2
    boxes = ndimage.find_objects(label_map)
    assert not one_pass_pays(boxes, label_map.size, [1, 2], [False, False], [False, False])
    label_map[9, 0, 9] = label_map[0, 9, 0] = 2           # now a whole-image box
    boxes = ndimage.find_objects(label_map)
    assert one_pass_pays(boxes, label_map.size, [1, 2], [False, False], [False, False])
    assert not one_pass_pays(boxes, label_map.size, [1, 2], [False, False], [True, True])  # nothing to do
