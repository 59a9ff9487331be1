"""Small PNG previews a person looks at in the UI instead of reading numbers."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from defacing_assets.imaging.volume import Volume  # noqa: E402


def figure_png(figure) -> bytes:
    """Render and close a matplotlib figure."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def _display_window(array: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(array, [1, 99.5])
    return float(low), float(max(high, low + 1e-6))


def slice_thumbnail(
    image: Volume, labels: Volume | None = None, axis: int = 2, index: int | None = None
) -> bytes:
    """PNG of one slice (through the labelled region when labels exist), labels outlined."""
    canonical = image.to_canonical()
    label_array = labels.to_canonical().array if labels is not None else None
    if index is None:
        if label_array is not None and label_array.any():
            index = int(np.round(np.argwhere(label_array > 0)[:, axis].mean()))
        else:
            index = canonical.shape[axis] // 2
    image_slice = np.take(canonical.array, index, axis=axis).astype(float)
    spacing = [s for a, s in enumerate(canonical.spacing) if a != axis]
    figure, axes = plt.subplots(figsize=(3.2, 3.2), dpi=80)
    low, high = _display_window(canonical.array)
    axes.imshow(
        image_slice.T,
        origin="lower",
        cmap="gray",
        vmin=low,
        vmax=high,
        aspect=spacing[1] / spacing[0],
    )
    if label_array is not None:
        label_slice = np.take(label_array, index, axis=axis)
        if label_slice.any():
            axes.contour(label_slice.T, levels=np.arange(0.5, 9), cmap="tab10", linewidths=0.8)
    axes.set_axis_off()
    figure.tight_layout(pad=0)
    return figure_png(figure)


def before_after_thumbnail(before: Volume, after: Volume) -> bytes:
    """Mid-sagittal slices side by side, same window: what a defacer took away."""
    images = [before.to_canonical(), after.to_canonical()]
    index = images[0].shape[0] // 2
    low, high = _display_window(images[0].array)
    spacing = images[0].spacing
    figure, axes = plt.subplots(1, 2, figsize=(5.0, 2.8), dpi=80)
    for axis, image, title in zip(axes, images, ("before", "after"), strict=True):
        axis.imshow(
            image.array[index].T.astype(float),
            origin="lower",
            cmap="gray",
            vmin=low,
            vmax=high,
            aspect=spacing[2] / spacing[1],
        )
        axis.set_title(title, fontsize=8)
        axis.set_axis_off()
    figure.tight_layout(pad=0.2)
    return figure_png(figure)
