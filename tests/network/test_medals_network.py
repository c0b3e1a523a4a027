"""MedalSNetwork: shapes, prompt independence, the prompt path, gradients, state round trip, nnU-Net build."""
import json

import numpy as np
import pytest
import torch

from nnunetv2_medals.network.medals_network import PADDED_PROMPT_LOGIT, MedalSNetwork, sinusoidal_position_encoding_3d
from tests.helpers import TINY_TEXT_DIM as L
from tests.helpers import tiny_network


def _inputs(batch, n, shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, *shape, generator=g), torch.randn(batch, n, L, generator=g)


@pytest.mark.parametrize("shape", [(16, 16, 16), (24, 32, 16)])
@pytest.mark.parametrize("n", [1, 3, 8])
def test_output_shapes_for_any_n_and_patch_with_the_same_weights(shape, n):
    net = tiny_network()
    x, text = _inputs(2, n, shape)
    out = net(x, text)
    assert [tuple(o.shape) for o in out] == [(2, n, *shape), (2, n, *(s // 2 for s in shape))]
    net.decoder.deep_supervision = False
    assert tuple(net(x, text).shape) == (2, n, *shape)


def test_patch_not_divisible_by_the_stride_is_refused():
    net = tiny_network()
    x, text = _inputs(1, 2, (16, 16, 18))
    with pytest.raises(ValueError, match="not divisible"):
        net(x, text)


def test_without_spatial_prompts_each_prompt_is_independent_of_the_others():
    net = tiny_network(deep_supervision=False).eval()
    x, text = _inputs(2, 6, (16, 16, 16))
    with torch.no_grad():
        parallel = net(x, text)
        for i in range(6):
            alone = net(x, text[:, i:i + 1])
            torch.testing.assert_close(parallel[:, i:i + 1], alone, atol=1e-4, rtol=1e-4)
        reordered = net(x, text[:, [5, 0, 3]])
    torch.testing.assert_close(reordered, parallel[:, [5, 0, 3]], atol=1e-4, rtol=1e-4)


def test_spatial_prompts_change_the_output():
    net = tiny_network(deep_supervision=False).eval()
    x, text = _inputs(1, 3, (16, 16, 16))
    prompts = torch.zeros(1, 3, 16, 16, 16)
    prompts[0, 1, 4:10, 4:10, 4:10] = 1
    with torch.no_grad():
        plain = net(x, text)
        prompted = net(x, text, prompts)
        unfused = net(x, text, prompts, fuse_prompts=False)
    assert (prompted - plain).abs().amax() > 1e-2
    assert (unfused - prompted).abs().amax() > 1e-2


def test_no_spatial_prompts_equals_all_zero_prompts_in_value_and_gradient():
    """Without spatial prompts the fusion conv runs on F alone (its weights on the F_a half see zeros): the same
    logits and the same gradients as all-zero prompts through the full conv (float64, so summation order hardly shows)."""
    net = tiny_network(deep_supervision=False).double()
    x, text = (t.double() for t in _inputs(2, 3, (16, 16, 16)))
    outputs, grads = [], []
    for prompts in (None, torch.zeros(2, 3, 16, 16, 16, dtype=torch.float64)):
        net.zero_grad()
        out = net(x, text, prompts)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outputs.append(out.detach())
        grads.append({k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None})
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-10, rtol=1e-10)
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], atol=1e-9, rtol=1e-9)
    fusion = grads[0]["prompt_fusion.conv.conv.weight"]
    assert fusion[:, :fusion.shape[1] // 2].abs().sum() > 0 and not fusion[:, fusion.shape[1] // 2:].any()


def test_ragged_batches_padding_is_inert():
    net = tiny_network(deep_supervision=False).eval()
    x, text = _inputs(2, 4, (16, 16, 16))
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    prompts = torch.zeros(2, 4, 16, 16, 16)
    prompts[1, 3] = 1  # a spatial prompt on a padded slot must not leak into sample 1
    with torch.no_grad():
        out = net(x, text, prompts, prompt_mask=mask)
        sample1 = net(x[1:], text[1:, :2])
    torch.testing.assert_close(out[1:, :2], sample1, atol=1e-4, rtol=1e-4)
    assert torch.all(out[1, 2:] == PADDED_PROMPT_LOGIT)


def test_gradients_reach_query_decoder_fusion_and_backbone_but_not_the_text_encoder():
    from nnunetv2_medals.text_prompts.encoder import TextEncoder

    encoder = TextEncoder(cache=False)
    embeddings = torch.from_numpy(encoder.encode(["left kidney", "spleen", "liver"]))
    net = tiny_network(text_dim=encoder.dim)
    x = torch.randn(2, 1, 16, 16, 16)
    prompts = (torch.rand(2, 3, 16, 16, 16) > 0.8).float()
    out = net(x, embeddings, prompts)
    sum(o.float().pow(2).mean() for o in out).backward()
    for name, module in [("query decoder", net.query_decoder.layers[0].cross_attention),
                         ("text projection", net.query_decoder.text_projection),
                         ("fusion conv", net.prompt_fusion.conv), ("encoder stem", net.encoder.stem),
                         ("decoder", net.decoder.stages[0])]:
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), name
    assert all(not p.requires_grad and p.grad is None for p in encoder._model.parameters())
    assert embeddings.grad is None


def test_state_dict_round_trip_keeps_weights_and_class_embeddings(tmp_path):
    net = tiny_network(deep_supervision=False).eval()
    stored = torch.randn(4, L)
    with pytest.raises(RuntimeError, match="no stored class embeddings"):
        net(torch.randn(1, 1, 16, 16, 16))
    net.set_class_embeddings(stored)
    torch.save(net.state_dict(), tmp_path / "w.pth")
    other = tiny_network(deep_supervision=False, seed=7).eval()
    other.load_state_dict(torch.load(tmp_path / "w.pth"))
    torch.testing.assert_close(other.class_embeddings, stored)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        default = other(x)  # stored embeddings: one channel per trained class
        explicit = net(x, stored)
    assert default.shape == (1, 4, 16, 16, 16)
    torch.testing.assert_close(default, explicit)
    with pytest.raises(ValueError, match="expected class embeddings"):
        net.set_class_embeddings(torch.zeros(3, L))


def test_wrong_embedding_dim_is_refused():
    net = tiny_network()
    with pytest.raises(ValueError, match="another text encoder"):
        net(torch.randn(1, 1, 16, 16, 16), torch.randn(1, 2, L + 1))


def test_low_precision_autocast_runs():
    net = tiny_network(deep_supervision=False).eval()
    x, text = _inputs(1, 3, (16, 16, 16))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, text, (torch.rand(1, 3, 16, 16, 16) > 0.5).float())
    assert out.shape == (1, 3, 16, 16, 16) and torch.isfinite(out.float()).all()


def test_positions_are_computed_for_the_grid():
    a = sinusoidal_position_encoding_3d((2, 3, 4), 32)
    assert a.shape == (24, 32)
    assert torch.unique(a, dim=0).shape[0] == 24  # every token position is distinct
    assert sinusoidal_position_encoding_3d((4, 4, 4), 30).shape == (64, 30)


def test_nnunet_builds_it_from_our_plans(preprocessed_phantom):
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    plans = json.loads((preprocessed_phantom["preprocessed"] / "MedalSPlansCPU.json").read_text())
    cfg = plans["configurations"]["3d_fullres"]
    arch = cfg["architecture"]
    net = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                 1, 8, deep_supervision=True)
    assert isinstance(net, MedalSNetwork) and net.class_embeddings.shape == (8, 384)
    out = net(torch.randn(1, 1, *cfg["patch_size"]), torch.randn(1, 2, 384))
    assert len(out) == len(cfg["architecture"]["arch_kwargs"]["strides"]) - 1
    assert tuple(out[0].shape[2:]) == tuple(cfg["patch_size"])
    assert np.prod(out[-1].shape[2:]) < np.prod(out[0].shape[2:])


def test_text_centring_is_saved_and_older_checkpoints_load_without_it():
    net = tiny_network(deep_supervision=False).eval()
    embeddings = torch.randn(10, L) + 3.0
    net.set_text_normalization(embeddings)
    centred = net._text(embeddings, 1)[0]
    torch.testing.assert_close(centred.mean(0), torch.zeros(L), atol=1e-5, rtol=0)
    torch.testing.assert_close(centred.norm(dim=1).mean(), torch.tensor(1.0))
    state = net.state_dict()
    other = tiny_network(deep_supervision=False, seed=3)
    other.load_state_dict(state)
    torch.testing.assert_close(other.text_center, net.text_center)
    legacy = {k: v for k, v in state.items() if k not in ("text_center", "text_scale")}
    other.load_state_dict(legacy)
    assert torch.all(other.text_center == 0) and other.text_scale == 1


def test_checkpoints_with_the_targets_at_the_root_still_load():
    net = tiny_network(deep_supervision=False)
    net.set_class_embeddings(torch.randn(4, L))
    net.vocabulary = {"targets": [{"name": "liver"}]}
    legacy = {k.removeprefix("targets.seg_layers."): v for k, v in net.state_dict().items()}
    assert "class_embeddings" in legacy and "_extra_state" in legacy
    other = tiny_network(deep_supervision=False, seed=3)
    other.load_state_dict(legacy)
    torch.testing.assert_close(other.class_embeddings, net.class_embeddings)
    assert other.vocabulary == {"targets": [{"name": "liver"}]}


def test_nnunet_pretrained_weights_keep_the_new_datasets_targets(tmp_path):
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

    pretrained = tiny_network(num_classes=8, seed=1)
    pretrained.set_class_embeddings(torch.randn(8, L))
    pretrained.vocabulary = {"targets": ["eight targets"]}
    torch.save({"network_weights": pretrained.state_dict()}, tmp_path / "checkpoint.pth")
    new = tiny_network(num_classes=3, seed=2)
    own = torch.randn(3, L)
    new.set_class_embeddings(own)
    new.vocabulary = {"targets": ["three new targets"]}
    load_pretrained_weights(new, str(tmp_path / "checkpoint.pth"))
    torch.testing.assert_close(new.class_embeddings, own)
    assert new.vocabulary == {"targets": ["three new targets"]}
    torch.testing.assert_close(new.encoder.stem.convs[0].conv.weight, pretrained.encoder.stem.convs[0].conv.weight)
