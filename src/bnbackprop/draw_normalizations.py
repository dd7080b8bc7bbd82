"""The classic picture of normalizations: which values of an NCHW batch, (N, C, height, width), share one mean and variance.

The highlighted cells come from the caches of `bnbackprop.normalizations` (via `statistic_members`),
so the figure shows what the code does, not a drawing of what it should do.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .normalizations import batch_norm, group_norm, instance_norm, layer_norm, statistic_members


def normalization_masks(shape=(4, 6, 2, 2), groups=3, index=(0, 0, 0, 0)) -> dict[str, np.ndarray]:
    """For each normalization, the (N, C, S) mask of values (S = height * width pixels) that share x[index]'s statistics."""
    if len(shape) != 4:
        raise ValueError(f"shape must be 4-D, (N, C, height, width); got {shape!r}")
    x = np.arange(np.prod(shape), dtype=float).reshape(shape) % 7  # any non-constant values
    C = shape[1]
    caches = {
        "Batch Norm": batch_norm(x, np.ones(C), np.zeros(C))[1],
        "Layer Norm": layer_norm(x, np.ones(shape[1:]), np.zeros(shape[1:]))[1],
        "Instance Norm": instance_norm(x, np.ones(C), np.zeros(C))[1],
        f"Group Norm (G={groups})": group_norm(x, np.ones(C), np.zeros(C), groups)[1],
    }
    flat = (shape[0], C, shape[2] * shape[3])
    return {name: statistic_members(c, index).reshape(flat) for name, c in caches.items()}


def _draw_box(ax, shape):
    """The outline of the whole batch, and a light grid on its three visible faces."""
    nx, ny, nz = shape
    grey = dict(color="0.55", lw=0.5)
    for i in range(nx + 1):
        ax.plot([i, i], [0, 0], [0, nz], **grey)
        ax.plot([i, i], [0, ny], [nz, nz], **grey)
    for j in range(ny + 1):
        ax.plot([0, nx], [j, j], [nz, nz], **grey)
        ax.plot([nx, nx], [j, j], [0, nz], **grey)
    for k in range(nz + 1):
        ax.plot([0, nx], [0, 0], [k, k], **grey)
        ax.plot([nx, nx], [0, ny], [k, k], **grey)


def draw_normalization_axes(shape=(4, 6, 2, 2), groups=3, index=(0, 0, 0, 0)):
    """Four 3-D boxes (N, C, S); one statistic's values are shaded in each. Returns the figure."""
    masks = normalization_masks(shape, groups, index)
    fig = plt.figure(figsize=(12, 3.6))
    for k, (name, mask) in enumerate(masks.items()):
        ax = fig.add_subplot(1, 4, k + 1, projection="3d")
        ax.voxels(mask, facecolors=(0.2, 0.45, 0.8, 0.95), edgecolor=(0.1, 0.1, 0.3, 0.6), linewidth=0.4)
        _draw_box(ax, mask.shape)
        ax.set_box_aspect(mask.shape)
        ax.set_xlabel("N", labelpad=-12)
        ax.set_ylabel("C", labelpad=-12)
        ax.set_zlabel("pixels", labelpad=-12)
        ax.set_xticks([]), ax.set_yticks([]), ax.set_zticks([])
        ax.view_init(elev=22, azim=-55)
        ax.set_title(f"{name}\n{int(mask.sum())} values per statistic", fontsize=10)
    fig.subplots_adjust(left=0.0, right=0.97, wspace=0.05)
    return fig


__all__ = ["draw_normalization_axes", "normalization_masks"]
