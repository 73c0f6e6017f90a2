"""PSPNet's PPM + conv3x3 embedding computed without convolving the upsampled pyramid maps (exact algebra).

The head convolves ``cat([x, up(p_1), up(p_2), up(p_3), up(p_6)])`` (4096 channels for ResNet-50) with
a 3x3 kernel. Convolution and bilinear upsampling are both linear, so the part of the kernel that
sees a pooled map ``p`` (b x b cells) can be applied at b x b resolution for each of the 9 taps and
then spread with the (shifted, zero-padded) interpolation matrices:

    conv3x3(up(p))[o, y, x] = sum_{dy,dx} sum_{i,j} Uy[y+dy, i] Ux[x+dx, j] (W[:, :, dy, dx] p)[o, i, j]

This halves the head's multiply-adds (the 2048 pooled channels cost ~b^2/(h w) of a dense conv);
results equal the dense computation up to float summation order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def interpolation_matrix(out_size: int, in_size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[out+2, in]: bilinear (align_corners=True) 1-D weights, with a zero row above and below (3x3 padding)."""
    mat = torch.zeros(out_size + 2, in_size, device=device, dtype=torch.float32)
    rows = torch.arange(out_size, device=device)
    if in_size == 1:
        mat[1:-1, 0] = 1.0
        return mat.to(dtype)
    scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    src = rows.to(torch.float32) * scale
    low = src.floor().long().clamp(max=in_size - 1)
    frac = src - low.to(torch.float32)
    high = (low + 1).clamp(max=in_size - 1)
    mat[rows + 1, low] += 1.0 - frac
    mat[rows + 1, high] += frac
    return mat.to(dtype)


def conv3x3_of_upsampled(pooled: torch.Tensor, weight: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``conv2d(up(pooled, size), weight, padding=1)`` without building up(pooled).

    pooled [N,C,b,b']; weight [O,C,3,3]; returns [N,O,H,W].
    """
    h, w = size
    uy = interpolation_matrix(h, pooled.shape[2], pooled.device, pooled.dtype)  # [H+2,b]
    ux = interpolation_matrix(w, pooled.shape[3], pooled.device, pooled.dtype)  # [W+2,b']
    taps = torch.einsum("ocyx,ncij->nyxoij", weight, pooled)  # [N,3,3,O,b,b']
    ux_shift = torch.stack([ux[d:d + w] for d in range(3)])  # [3,W,b']
    uy_shift = torch.stack([uy[d:d + h] for d in range(3)])  # [3,H,b]
    cols = torch.einsum("nyxoij,xwj->nyoiw", taps, ux_shift)  # sum over dx and j: [N,3,O,b,W]
    return torch.einsum("nyoiw,yhi->nohw", cols, uy_shift)  # [N,O,H,W]


def pyramid_embedding(ppm: nn.Module, head: nn.Module, x: torch.Tensor,
                      window: tuple[slice, slice] | None = None) -> torch.Tensor:
    """``head.embed(ppm(x))`` (conv3x3 + BN over [x, upsampled pyramid]) for fsslab's PSPNet modules.

    window: optional (rows, cols) of the output to compute; the rest of the map is 0. The pyramid still pools
    the whole ``x``, and the 3x3 convolution reads one cell around the window, so the window's values are the
    dense computation's (up to float summation order) -- for maps only read there (a support's foreground).
    """
    weight = head.conv.weight  # [O, C + levels*Cb, 3, 3]
    channels = x.shape[1]
    size = x.shape[-2:]
    rows, cols = window if window is not None else (slice(0, size[0]), slice(0, size[1]))
    # the input rows/cols the window's outputs read (3x3, padding 1); outside the map the padding's zeros
    top, left = max(rows.start - 1, 0), max(cols.start - 1, 0)
    bottom, right = min(rows.stop + 1, size[0]), min(cols.stop + 1, size[1])
    dense = F.conv2d(x[:, :, top:bottom, left:right], weight[:, :channels], padding=1)
    out = dense[:, :, rows.start - top:rows.stop - top, cols.start - left:cols.stop - left]
    offset = channels
    for branch in ppm.branches:
        pooled = branch(x)  # [N,Cb,b,b]
        part = weight[:, offset:offset + pooled.shape[1]]
        offset += pooled.shape[1]
        out = out + conv3x3_of_upsampled(pooled, part, size)[:, :, rows, cols].to(out.dtype)
    if offset != weight.shape[1] or head.conv.bias is not None:
        raise ValueError("pyramid_embedding: head conv does not match the PPM layout")
    # zeros around the window (constant padding keeps the memory format)
    return F.pad(head.bn(out), (cols.start, size[1] - cols.stop, rows.start, size[0] - rows.stop))
