"""The distributed path of MedalSTrainer's step, on 2 CPU processes with gloo.

nnU-Net's own DDP launcher cannot run on CPU (run_training asserts a CUDA device for -num_gpus > 1 and the
trainer forces cuda:<rank>), so this exercises what our code adds to DDP training: the network wrapped the way
nnU-Net wraps it (find_unused_parameters=False), the deep-supervision loss with nnU-Net's DDP weights, and steps
that bypass the prompt fusion (which would leave parameters unused and break DDP without care).
"""
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2_medals.losses import PromptBCEDiceLoss, nnunet_deep_supervision_weights
from tests.helpers import tiny_network


def _worker(rank: int, world: int, rdv: str, results: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rdv}", rank=rank, world_size=world)
    net = DDP(tiny_network(deep_supervision=True, seed=0))
    loss_fn = DeepSupervisionWrapper(PromptBCEDiceLoss(), nnunet_deep_supervision_weights(2, ddp=True))
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    g = torch.Generator().manual_seed(100 + rank)  # each rank sees other data
    for fuse in (True, False, True, False):
        x = torch.randn(2, 1, 16, 16, 16, generator=g)
        text = torch.randn(2, 3, 24, generator=g)
        masks = (torch.rand(2, 3, 16, 16, 16, generator=g) > 0.7).float()
        targets = [masks, masks[:, :, ::2, ::2, ::2]]
        valid = torch.ones(2, 3, dtype=torch.bool)
        opt.zero_grad()
        out = net(x, text, masks if fuse else None, valid, fuse_prompts=fuse)
        loss_fn(out, targets, [valid, valid]).backward()
        opt.step()
    flat = torch.cat([p.detach().flatten() for p in net.module.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    same = all(torch.equal(gathered[0], t) for t in gathered)
    torch.save({"same": same, "n": flat.numel()}, f"{results}/rank{rank}.pt")
    dist.destroy_process_group()


def test_ddp_steps_with_and_without_fusion_keep_replicas_in_sync(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "rdv"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert result["same"] and result["n"] > 0
