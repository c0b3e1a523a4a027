"""The Medal S network: an nnU-Net ResEnc U-Net whose classes are text queries (paper §2.3, DESIGN §4).

Composed of small named parts, each with its hyper-parameters as explicit arguments:

* :class:`FeatureDecoder` — nnU-Net's UNet decoder returning features at every resolution (no 1×1 seg heads);
* :class:`QueryDecoder` — text embeddings -> per-prompt queries that cross-attend to multi-scale image tokens;
* :class:`PromptFusion` — channel-wise alignment of spatial prompts with the queries and a light 3D conv;
* :class:`TrainedTargets` — what a network knows about its dataset's targets (class embeddings, vocabulary);
* :class:`MedalSNetwork` — ResEnc encoder + the parts above; what the plans' ``network_class_name`` names.

The backbone runs once per tile whatever the number of prompts N; only the query decoder, the fusion and the
final dot products grow with N. Queries never attend to each other, so with zero spatial prompts a prompt's
output does not depend on which other prompts share the forward.
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple, Type, Union

import torch
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
from dynamic_network_architectures.building_blocks.residual_encoders import ResidualEncoder
from dynamic_network_architectures.building_blocks.simple_conv_blocks import ConvDropoutNormReLU
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder
from torch import nn
from torch.nn import functional as F

#: logit written for padded (invalid) prompts, so their probability is ~0 and never wins a voxel
PADDED_PROMPT_LOGIT = -20.0


class FeatureDecoder(UNetDecoder):
    """nnU-Net's UNet decoder, returning the feature maps of every decoder stage instead of segmentations.

    ``forward`` returns ``[F_full, F_/2, F_/4, …]`` (highest resolution first, nnU-Net's deep-supervision order).
    ``deep_supervision`` stays an attribute because nnU-Net's trainer toggles ``network.decoder.deep_supervision``
    and :class:`MedalSNetwork` reads it.
    """

    def __init__(self, encoder: ResidualEncoder, n_conv_per_stage: Union[int, Sequence[int]], deep_supervision: bool):
        super().__init__(encoder, 1, n_conv_per_stage, deep_supervision)
        # the 1×1 segmentation heads are replaced by query dot products; unused parameters would break DDP
        del self.seg_layers
        self.output_channels = [encoder.output_channels[-(s + 2)] for s in range(len(self.stages))][::-1]

    def forward(self, skips: List[torch.Tensor]) -> List[torch.Tensor]:
        # Same loop as UNetDecoder.forward (transpconv, concat skip, conv stage), keeping features, not seg heads.
        x = skips[-1]
        features = []
        for s in range(len(self.stages)):
            x = self.stages[s](torch.cat((self.transpconvs[s](x), skips[-(s + 2)]), 1))
            features.append(x)
        return features[::-1]


def sinusoidal_position_encoding_3d(grid: Sequence[int], dim: int, device=None, dtype=None) -> torch.Tensor:
    """Fixed 3D sine/cosine positions for a token grid: ``(prod(grid), dim)``.

    Computed for the current grid (not stored), so a trained model works for any patch size. Each axis gets
    ``2·⌊dim/6⌋`` channels (sin and cos at geometric frequencies over normalised coordinates); leftover channels
    are zero.
    """
    per_axis = (dim // 6) * 2
    freqs = torch.exp(torch.arange(per_axis // 2, device=device, dtype=torch.float32)
                      * (-math.log(1000.0) / max(per_axis // 2, 1)))
    axes = []
    for n in grid:
        coords = (torch.arange(n, device=device, dtype=torch.float32) + 0.5) / n * 2 * math.pi
        angles = coords[:, None] * freqs[None] * 8
        axes.append(torch.cat((angles.sin(), angles.cos()), 1))  # (n, per_axis)
    gz, gy, gx = torch.meshgrid(*(torch.arange(n, device=device) for n in grid), indexing="ij")
    enc = torch.cat((axes[0][gz.reshape(-1)], axes[1][gy.reshape(-1)], axes[2][gx.reshape(-1)]), 1)
    enc = F.pad(enc, (0, dim - enc.shape[1]))
    return enc.to(dtype) if dtype is not None else enc


class QueryDecoderLayer(nn.Module):
    """Pre-norm cross-attention (queries -> image tokens) then FFN; no query self-attention (reference design)."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.cross_attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        kv = self.norm_kv(tokens)
        queries = queries + self.cross_attention(self.norm_q(queries), kv + positions, kv, need_weights=False)[0]
        return queries + self.ffn(self.norm_ffn(queries))


class QueryDecoder(nn.Module):
    """Text embeddings -> per-prompt class vectors T, one per decoder resolution.

    Image tokens: every encoder stage average-pooled to the bottleneck grid, concatenated and projected to ``dim``
    by an MLP, with 3D sinusoidal positions of the current grid. Queries: projected text embeddings refined by
    ``layers`` cross-attention layers. Heads: one MLP per output resolution (``dim -> mlp_hidden -> C_s``).

    Shapes: ``skips[s]`` (B, C_s, *grid_s); ``text_embeddings`` (B, N, L) -> list of (B, N, C_out[k]).
    """

    def __init__(self, encoder_channels: Sequence[int], text_dim: int, out_channels: Sequence[int], dim: int,
                 heads: int, layers: int, ffn_dim: int, mlp_hidden: int, dropout: float = 0.0):
        super().__init__()
        self.text_projection = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.token_projection = nn.Sequential(nn.Linear(sum(encoder_channels), dim), nn.GELU(), nn.Linear(dim, dim))
        self.layers = nn.ModuleList(QueryDecoderLayer(dim, heads, ffn_dim, dropout) for _ in range(layers))
        self.norm_out = nn.LayerNorm(dim)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, mlp_hidden), nn.GELU(), nn.Linear(mlp_hidden, c)) for c in out_channels)
        self.dim = dim

    def image_tokens(self, skips: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        grid = skips[-1].shape[2:]
        pooled = [F.adaptive_avg_pool3d(s, grid) if s.shape[2:] != grid else s for s in skips]
        tokens = self.token_projection(torch.cat(pooled, 1).flatten(2).transpose(1, 2))  # (B, G, dim)
        positions = sinusoidal_position_encoding_3d(grid, self.dim, tokens.device, tokens.dtype)
        return tokens, positions[None]

    def forward(self, skips: Sequence[torch.Tensor], text_embeddings: torch.Tensor,
                n_heads: int | None = None) -> List[torch.Tensor]:
        tokens, positions = self.image_tokens(skips)
        queries = self.text_projection(text_embeddings.to(tokens.dtype))
        for layer in self.layers:
            queries = layer(queries, tokens, positions)
        queries = self.norm_out(queries)
        heads = self.heads if n_heads is None else self.heads[:n_heads]
        return [head(queries) for head in heads]


class PromptFusion(nn.Module):
    """Spatial-prompt refinement, paper §2.3: ``F_a = Tᵀ S_p``, ``F_r = Conv([F; F_a])``, logits ``= T·F_r``.

    ``F_a`` is, per voxel, the prompt-weighted sum of the N query vectors (channel-wise alignment of the spatial
    prompts with the text queries); one 3×3×3 conv + norm + nonlinearity maps ``2C -> C``.
    """

    def __init__(self, channels: int, conv_op: Type[nn.Module], norm_op, norm_op_kwargs, nonlin, nonlin_kwargs,
                 conv_bias: bool = True):
        super().__init__()
        self.conv = ConvDropoutNormReLU(conv_op, 2 * channels, channels, 3, 1, conv_bias, norm_op, norm_op_kwargs,
                                        None, None, nonlin, nonlin_kwargs)

    def forward(self, features: torch.Tensor, class_vectors: torch.Tensor,
                spatial_prompts: torch.Tensor | None) -> torch.Tensor:
        """``features`` (B, C, *S), ``class_vectors`` (B, N, C), ``spatial_prompts`` (B, N, *S) or None -> (B, N, *S)."""
        conv = self.conv.conv
        if spatial_prompts is None:  # F_a = 0: Conv([F; 0]) is the weights on F alone, for half the work
            convolved = conv._conv_forward(features, conv.weight[:, :features.shape[1]], conv.bias)
        else:
            aligned = torch.einsum("bnc,bn...->bc...", class_vectors, spatial_prompts.to(class_vectors.dtype))
            convolved = conv(torch.cat((features, aligned.to(features.dtype)), 1))
        for module in list(self.conv.all_modules)[1:]:  # ConvDropoutNormReLU after its conv: norm, nonlinearity
            convolved = module(convolved)
        return torch.einsum("bnc,bc...->bn...", class_vectors, convolved)


def prompt_union_channel(spatial_prompts: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """Eq. 1–2: ``S_f = H(Σ_n S_p,n)``, the binary union of all spatial prompts, as one input channel (B, 1, *S)."""
    if spatial_prompts is None:
        return torch.zeros_like(like[:, :1])
    return (spatial_prompts.sum(1, keepdim=True) > 0).to(like.dtype)


#: where :class:`TrainedTargets` sits in a MedalSNetwork's state dict: nnU-Net's ``load_pretrained_weights``
#: (``nnUNetv2_train … -pretrained_weights``) transfers every key except those holding ``.seg_layers.``, its mark for
#: a dataset's own output layers, and requires all others to match in shape; a fine-tuned dataset keeps its targets
TRAINED_TARGETS_PREFIX = "targets.seg_layers."
_LEGACY_TARGET_KEYS = ("class_embeddings", "_extra_state")  # checkpoints from before fine-tuning support


class TrainedTargets(nn.Module):
    """A dataset's side of a trained network: the (T, L) ``class_embeddings`` of its targets (what stock
    ``nnUNetv2_predict`` segments with) and its ``vocabulary`` (text encoder id/dim/path, targets with their label
    values and phrasings, the phrasings' embeddings; saved with the weights as extra state). Everything else in
    :class:`MedalSNetwork` is dataset-independent, so fine-tuning on new classes needs no new head."""

    def __init__(self, num_classes: int, text_embedding_dim: int):
        super().__init__()
        self.register_buffer("class_embeddings", torch.zeros(num_classes, text_embedding_dim))
        self.vocabulary: dict = {}

    def get_extra_state(self) -> dict:
        return self.vocabulary

    def set_extra_state(self, state: dict) -> None:
        self.vocabulary = dict(state or {})


def vocabulary_state(network_weights: dict) -> dict | None:
    """The vocabulary record in a checkpoint's ``network_weights`` (either state-dict layout), None if absent."""
    state = network_weights.get(TRAINED_TARGETS_PREFIX + "_extra_state")
    return state if state is not None else network_weights.get("_extra_state")


class MedalSNetwork(nn.Module):
    """ResEnc U-Net + query decoder + spatial-prompt fusion (Medal S).

    Built by nnU-Net from the plans (``network_class_name`` + ``arch_kwargs``): the ResEnc arguments are nnU-Net's,
    the ``text_embedding_dim`` and ``query_*`` arguments are ours. ``num_classes`` is the number of trained
    classes/regions whose embeddings are stored in the ``class_embeddings`` buffer (saved with the weights, in
    :class:`TrainedTargets`).

    ``forward(x, text_embeddings=None, spatial_prompts=None, prompt_mask=None, fuse_prompts=True)``:

    * ``x``: (B, C_in, X, Y, Z) image patch; X, Y, Z divisible by the total stride.
    * ``text_embeddings``: (B, N, L) or (N, L) (shared by the batch); None -> the stored class embeddings.
    * ``spatial_prompts``: (B, N, X, Y, Z) masks/probabilities aligned with the prompts; None -> zeros.
    * ``prompt_mask``: (B, N) bool, False marks padding in ragged batches: padded prompts get no spatial prompt and
      output :data:`PADDED_PROMPT_LOGIT`.
    * ``fuse_prompts``: False skips the refinement conv (logits = T·F), as in the occasional training steps
      without fusion.

    Returns logits (B, N, X, Y, Z); with deep supervision a list of them, highest resolution first (the lower
    resolutions from per-scale query heads, without prompt fusion).
    """

    def __init__(self, input_channels: int, n_stages: int, features_per_stage: Union[int, Sequence[int]],
                 conv_op: Type[nn.Module], kernel_sizes, strides, n_blocks_per_stage, num_classes: int,
                 n_conv_per_stage_decoder, conv_bias: bool = True, norm_op=None, norm_op_kwargs: dict = None,
                 dropout_op=None, dropout_op_kwargs: dict = None, nonlin=None, nonlin_kwargs: dict = None,
                 deep_supervision: bool = False, text_embedding_dim: int = 384, query_dim: int = 768,
                 query_heads: int = 8, query_layers: int = 6, query_ffn_dim: int = 2048, query_mlp_hidden: int = 256):
        super().__init__()
        if isinstance(n_blocks_per_stage, int):
            n_blocks_per_stage = [n_blocks_per_stage] * n_stages
        # one extra input channel: S_f, the union of the spatial prompts (Eq. 1–2)
        self.encoder = ResidualEncoder(input_channels + 1, n_stages, features_per_stage, conv_op, kernel_sizes,
                                       strides, n_blocks_per_stage, conv_bias, norm_op, norm_op_kwargs, dropout_op,
                                       dropout_op_kwargs, nonlin, nonlin_kwargs, return_skips=True)
        self.decoder = FeatureDecoder(self.encoder, n_conv_per_stage_decoder, deep_supervision)
        self.query_decoder = QueryDecoder(self.encoder.output_channels, text_embedding_dim,
                                          self.decoder.output_channels, query_dim, query_heads, query_layers,
                                          query_ffn_dim, query_mlp_hidden)
        self.prompt_fusion = PromptFusion(self.decoder.output_channels[0], conv_op, norm_op, norm_op_kwargs, nonlin,
                                          nonlin_kwargs, conv_bias)
        self.targets = nn.ModuleDict({"seg_layers": TrainedTargets(num_classes, text_embedding_dim)})
        # fixed centring of text embeddings (set from the trained phrasings): sentence embeddings of anatomy share a
        # large common component, and removing it lets "left kidney" and "right kidney" start further apart
        self.register_buffer("text_center", torch.zeros(text_embedding_dim))
        self.register_buffer("text_scale", torch.ones(()))
        self.num_classes = num_classes
        self.text_embedding_dim = text_embedding_dim
        self.input_channels = input_channels
        self.total_stride = [math.prod(axis) for axis in zip(*[
            (s,) * len(kernel_sizes[0]) if isinstance(s, int) else s for s in strides])]

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """nnU-Net's ResEnc initialisation for the conv parts; attention/MLP layers keep PyTorch's defaults."""
        ResidualEncoderUNet.initialize(module)

    @property
    def class_embeddings(self) -> torch.Tensor:
        """(num_classes, L) embeddings of the trained classes (:class:`TrainedTargets`)."""
        return self.targets["seg_layers"].class_embeddings

    @property
    def vocabulary(self) -> dict:
        """What the trained model knows about text (set by MedalSTrainer; :class:`TrainedTargets`)."""
        return self.targets["seg_layers"].vocabulary

    @vocabulary.setter
    def vocabulary(self, state: dict) -> None:
        self.targets["seg_layers"].vocabulary = dict(state or {})

    def set_class_embeddings(self, embeddings: torch.Tensor) -> None:
        """Store the (num_classes, L) embeddings used when ``forward`` gets no text (stock nnU-Net prediction)."""
        if tuple(embeddings.shape) != tuple(self.class_embeddings.shape):
            raise ValueError(f"expected class embeddings of shape {tuple(self.class_embeddings.shape)}, "
                             f"got {tuple(embeddings.shape)}")
        self.class_embeddings.copy_(embeddings)

    def set_text_normalization(self, embeddings: torch.Tensor) -> None:
        """Centre text embeddings on the mean of ``embeddings`` (P, L) and scale them to unit mean norm."""
        center = embeddings.mean(0)
        self.text_center.copy_(center)
        self.text_scale.fill_(1.0 / float((embeddings - center).norm(dim=1).mean().clamp_min(1e-6)))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints from before the text centring have no such buffers: they were trained without it (identity)
        for name, default in (("text_center", torch.zeros_like(self.text_center)),
                              ("text_scale", torch.ones_like(self.text_scale))):
            state_dict.setdefault(prefix + name, default)
        # checkpoints from before TrainedTargets kept the class embeddings and the vocabulary at the root
        for name in _LEGACY_TARGET_KEYS:
            if prefix + name in state_dict:
                state_dict.setdefault(prefix + TRAINED_TARGETS_PREFIX + name, state_dict.pop(prefix + name))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _text(self, text_embeddings: torch.Tensor | None, batch: int) -> torch.Tensor:
        if text_embeddings is None:
            if not torch.any(self.class_embeddings):
                raise RuntimeError("MedalSNetwork has no stored class embeddings; train it with MedalSTrainer or "
                                   "call set_class_embeddings() before predicting without text")
            text_embeddings = self.class_embeddings
        if text_embeddings.dim() == 2:
            text_embeddings = text_embeddings.unsqueeze(0).expand(batch, -1, -1)
        if text_embeddings.shape[-1] != self.text_embedding_dim:
            raise ValueError(f"text embeddings have dim {text_embeddings.shape[-1]}, the network was built for "
                             f"{self.text_embedding_dim} (another text encoder?)")
        return (text_embeddings.to(self.text_center.dtype) - self.text_center) * self.text_scale

    def forward(self, x: torch.Tensor, text_embeddings: torch.Tensor | None = None,
                spatial_prompts: torch.Tensor | None = None, prompt_mask: torch.Tensor | None = None,
                fuse_prompts: bool = True):
        if spatial_prompts is not None and prompt_mask is not None:
            spatial_prompts = spatial_prompts * prompt_mask[:, :, None, None, None].to(spatial_prompts.dtype)
        skips, features = self.forward_features(x, prompt_union_channel(spatial_prompts, x))
        return self.forward_prompts(skips, features, text_embeddings, spatial_prompts, prompt_mask, fuse_prompts)

    def forward_features(self, x: torch.Tensor, prompt_union: torch.Tensor) -> tuple[list, list]:
        """The backbone, once per tile: ``x`` (B, C_in, *S) and ``S_f`` (B, 1, *S) -> encoder skips, decoder features.

        Split from :meth:`forward_prompts` so prompts can be processed in chunks without re-running it.
        """
        if any(n % s for n, s in zip(x.shape[2:], self.total_stride)):
            raise ValueError(f"patch {tuple(x.shape[2:])} is not divisible by the network's total stride "
                             f"{tuple(self.total_stride)}")
        skips = self.encoder(torch.cat((x, prompt_union.to(x.dtype)), 1))
        return skips, self.decoder(skips)

    def forward_prompts(self, skips: list, features: list, text_embeddings: torch.Tensor | None = None,
                        spatial_prompts: torch.Tensor | None = None, prompt_mask: torch.Tensor | None = None,
                        fuse_prompts: bool = True):
        """Query decoder, prompt fusion and per-prompt logits on features from :meth:`forward_features`."""
        text = self._text(text_embeddings, features[0].shape[0])
        deep = self.decoder.deep_supervision
        class_vectors = self.query_decoder(skips, text, n_heads=None if deep else 1)
        if fuse_prompts:
            logits = [self.prompt_fusion(features[0], class_vectors[0], spatial_prompts)]
        else:
            logits = [torch.einsum("bnc,bc...->bn...", class_vectors[0], features[0])]
            if self.training and torch.distributed.is_available() and torch.distributed.is_initialized():
                # DDP (find_unused_parameters=False, as nnU-Net wraps it) needs every parameter in every step's
                # graph; a zero-weighted pass keeps the fusion conv in without changing the result
                logits[0] = logits[0] + 0 * self.prompt_fusion.conv(
                    torch.cat((features[0], features[0]), 1)).sum()
        if deep:
            logits += [torch.einsum("bnc,bc...->bn...", t, f) for t, f in zip(class_vectors[1:], features[1:])]
        if prompt_mask is not None:
            logits = [lg.masked_fill(~prompt_mask[:, :, None, None, None], PADDED_PROMPT_LOGIT) for lg in logits]
        return logits if deep else logits[0]

    def compute_conv_feature_map_size(self, input_size):
        """Feature-map voxels of the conv backbone, for nnU-Net's VRAM estimate (query parts are small)."""
        return self.encoder.compute_conv_feature_map_size(input_size)
