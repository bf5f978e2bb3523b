"""OpenCLIP's text tower read up to the end token only, in torch (clipd.embedder) and as the
ONNX file clipd.onnx_texts runs: tokens of any batch and any length in ("tokens", int64),
features out ("features", not normalised).

Any length, because a query of five words is 7 tokens and the context is 77: each position
attends to earlier ones alone and the feature is read at the end token, so the daemon feeds the
tokens up to the end token only (encode_unpadded: 4-10x less work). torch's
TorchScript exporter records nn.MultiheadAttention's reshapes with the example's length in
them (an export made at 8 tokens fails at 9), so during the export each block's attention is
the same arithmetic written with shapes read from its input. clipd.onnx_texts compares the
file's features with torch's before it is used.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def problem(model: Any) -> str | None:
    """What keeps this model's text tower from being exported, or None."""
    from open_clip.transformer import ResidualAttentionBlock
    from torch import nn

    if not reads_the_end_token_causally(model):
        return "its text feature is not read causally at the end token"
    for block in model.transformer.resblocks:
        attention = getattr(block, "attn", None)
        if not isinstance(block, ResidualAttentionBlock) or not isinstance(
            attention, nn.MultiheadAttention
        ):
            return f"a text block of type {type(block).__name__}"
        if not (attention.batch_first and attention._qkv_same_embed_dim) or (
            attention.bias_k is not None or attention.add_zero_attn
        ):
            return "a text attention with options the export does not write"
    return None


def reads_the_end_token_causally(model: Any) -> bool:
    """Whether model is OpenCLIP's CLIP with a causal text mask, its text feature read at the
    end-of-text token (the largest token id, so `argmax`): then the padding after that token
    cannot change the feature."""
    from open_clip.model import CLIP

    return (
        isinstance(model, CLIP)
        and model.text_pool_type == "argmax"
        and getattr(model, "attn_mask", None) is not None
    )


def encode_unpadded(model: Any, tokens: torch.Tensor) -> torch.Tensor:
    """CLIP.encode_text over the tokens up to the last end-of-text token only: each position
    attends to earlier ones alone, so the padding to the context length (77 tokens for a
    query of five words) is work whose result is never read. Equal to encode_text."""
    length = int(tokens.argmax(dim=-1).max()) + 1
    return encode_tokens(model, tokens[:, :length])


def encode_tokens(model: Any, tokens: torch.Tensor) -> torch.Tensor:
    """CLIP.encode_text (without its normalisation) of tokens of any length up to the context
    length, for a model that reads its text feature causally at the end token. Shapes come
    from the input, so that an ONNX export of it takes any length (export, below)."""
    import torch

    length = tokens.shape[1]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:length].to(cast)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    pooled: torch.Tensor = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)]
    projection = model.text_projection
    if projection is None:
        return pooled
    encoded: torch.Tensor = (
        projection(pooled) if isinstance(projection, torch.nn.Linear) else pooled @ projection
    )
    return encoded


def export(model: Any, path: Path) -> None:
    """Write model's text tower (float32, on the CPU) to path; problem(model) must be None."""
    import torch

    class TextTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return encode_tokens(self.model, tokens)

    example = torch.ones(1, 8, dtype=torch.long)
    example[0, -1] = model.vocab_size - 1  # the end token: the largest id
    # The TorchScript exporter (dynamo=False: the newer one needs onnxscript too) warns that
    # it is deprecated and about traced branches; neither is the user's to act on.
    with _attention_by_shape(model), warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            TextTower(),
            (example,),
            str(path),
            input_names=["tokens"],
            output_names=["features"],
            dynamic_axes={"tokens": {0: "batch", 1: "length"}, "features": {0: "batch"}},
            opset_version=18,
            dynamo=False,
        )


@contextmanager
def _attention_by_shape(model: Any) -> Iterator[None]:
    """Within: each text block's nn.MultiheadAttention replaced by its _shape_free twin."""
    blocks = list(model.transformer.resblocks)
    originals = [block.attn for block in blocks]
    try:
        for block, attention in zip(blocks, originals, strict=True):
            block.attn = _shape_free(attention)
        yield
    finally:
        for block, attention in zip(blocks, originals, strict=True):
            block.attn = attention


def _shape_free(attention: Any) -> torch.nn.Module:
    """nn.MultiheadAttention's self-attention (batch first, one projection of q, k and v) with
    every shape taken from the input: the same weights, the same arithmetic."""
    import torch
    from torch.nn import functional

    heads = attention.num_heads
    width = attention.embed_dim
    head_width = width // heads

    class ShapeFreeAttention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = attention

        def forward(
            self,
            query: torch.Tensor,
            key: torch.Tensor,
            value: torch.Tensor,
            need_weights: bool = False,
            attn_mask: torch.Tensor | None = None,
        ) -> tuple[torch.Tensor, None]:
            # ResidualAttentionBlock calls attn(x, x, x, ...): self-attention only.
            batch = query.shape[0]
            projected = functional.linear(
                query, self.attention.in_proj_weight, self.attention.in_proj_bias
            )
            q, k, v = projected.reshape(batch, -1, 3, heads, head_width).permute(2, 0, 3, 1, 4)
            scores = (q @ k.transpose(-2, -1)) * (head_width**-0.5)
            if attn_mask is not None:
                scores = scores + attn_mask
            mixed = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, -1, width)
            return self.attention.out_proj(mixed), None

    return ShapeFreeAttention()
