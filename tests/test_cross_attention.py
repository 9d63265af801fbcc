"""Masked cross-attention written by hand equals diffusers' `Attention` (issue 29).

Chapter 7 teaches cross-attention in its own cells: queries from the UNet's image
features, keys and values from the text encoder's tokens, and padding tokens given
zero weight. This test holds a short version of that lesson and checks it against
the layer `UNet2DConditionModel` uses (`Attention` with `cross_attention_dim`), fed
the mask the way the UNet feeds it (`encoder_attention_mask` of 1s and 0s becomes an
additive bias of 0 and -10000).
"""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import Attention

TEXT_DIM = 384  # all-MiniLM-L6-v2's hidden size
CHANNELS = 32  # the UNet block's feature channels


def masked_cross_attention(
    image_features: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor,
    attn: Attention,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-attention by hand, with `attn`'s weights and head count.

    image_features (B, N, C): one query per pixel; tokens (B, T, D): keys and values;
    mask (B, T): 1 for a real token, 0 for padding. Returns the output (B, N, C) and
    the attention weights (B, heads, N, T), zero on padding tokens.
    """
    def split_heads(x: torch.Tensor) -> torch.Tensor:  # (B, L, h*d) -> (B, h, L, d)
        return x.unflatten(-1, (attn.heads, -1)).transpose(1, 2)

    q = split_heads(image_features @ attn.to_q.weight.T)
    k = split_heads(tokens @ attn.to_k.weight.T)
    v = split_heads(tokens @ attn.to_v.weight.T)
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5  # (B, h, N, T)
    scores = scores.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
    weights = scores.softmax(dim=-1)
    out = (weights @ v).transpose(1, 2).flatten(2)  # (B, N, h*d)
    return attn.to_out[0](out), weights


def diffusers_cross_attention(
    image_features: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None,
    attn: Attention,
) -> torch.Tensor:
    """`attn` called as UNet2DConditionModel calls it, mask turned into its bias."""
    bias = None if mask is None else ((1 - mask.float()) * -10000.0).unsqueeze(1)
    return attn(image_features, encoder_hidden_states=tokens, attention_mask=bias)


def random_case(heads: int, dim_head: int
                ) -> tuple[Attention, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A seeded layer, image features (2, 16, C), tokens (2, 7, D) and their mask."""
    torch.manual_seed(0)
    attn = Attention(query_dim=CHANNELS, cross_attention_dim=TEXT_DIM, heads=heads,
                     dim_head=dim_head).eval()
    feature_map = torch.randn(2, CHANNELS, 4, 4)  # (B, C, H, W) inside the UNet
    image_features = feature_map.flatten(2).transpose(1, 2)  # (B, 16, C)
    tokens = torch.randn(2, 7, TEXT_DIM)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1],
                         [1, 1, 1, 0, 0, 0, 0]])  # the second prompt: 3 tokens, padded
    return attn, image_features, tokens, mask


@pytest.mark.parametrize("heads, dim_head", [(1, 16), (4, 8)])
def test_hand_written_masked_cross_attention_equals_diffusers(heads, dim_head):
    attn, image_features, tokens, mask = random_case(heads, dim_head)
    with torch.no_grad():
        expected = diffusers_cross_attention(image_features, tokens, mask, attn)
        got, weights = masked_cross_attention(image_features, tokens, mask, attn)
    assert got.shape == image_features.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert weights.shape == (2, heads, 16, 7)
    assert (weights[1, :, :, 3:] == 0).all() and (weights[0] > 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, heads, 16))
    # The mask matters: unmasked, the padded prompt's output is another one.
    with torch.no_grad():
        unmasked = diffusers_cross_attention(image_features, tokens, None, attn)
    assert (unmasked[1] - expected[1]).abs().max() > 1e-2


def test_padding_tokens_do_not_change_either_output():
    attn, image_features, tokens, mask = random_case(heads=4, dim_head=8)
    other = tokens.clone()
    other[1, 3:] = torch.randn(4, TEXT_DIM) * 10  # anything at all where the mask is 0
    with torch.no_grad():
        for attention in (diffusers_cross_attention,
                          lambda *a: masked_cross_attention(*a)[0]):
            before = attention(image_features, tokens, mask, attn)
            after = attention(image_features, other, mask, attn)
            torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
