"""Surface renders of a scan's skin, the way a person checks whether a face is still there.

A face detector needs a picture of a face, not slices, and so does a person
reviewing a defacer. The scan is resampled to isotropic voxels on an
axis-aligned RAS grid, smoothed (1 mm), and its skin is the outer surface of
the largest connected region above a threshold: Otsu's on the smoothed
volume for MR (the histogram splits into air and tissue), -300 HU for CT
(between air and fat). Each view resamples that field onto a grid aligned
with the view and casts one ray per pixel from the viewer; the first crossing
of the threshold (linearly interpolated, so no voxel staircase) gives a
height map, shaded by depth (nearer is brighter) and by Lambert's law with a
light slightly above the viewer, so eye sockets and the underside of the
nose fall into shadow as in a photograph.

Views turn about the head's superior axis and are named after the side of
the patient the camera stands on: ``frontal`` faces the patient,
``oblique_left`` / ``profile_left`` show the patient's left cheek (camera 45 /
90 degrees toward the patient's left), ``*_right`` the right. Images are
upright (superior at the top) and mirror nothing: in ``frontal`` the
patient's right is on the image's left, as when facing a person.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from defacing_assets.imaging.resample import resample_like
from defacing_assets.imaging.volume import Volume

VIEWS = ("frontal", "oblique_left", "oblique_right", "profile_left", "profile_right")
"""Default views, in montage order."""
CT_SKIN_HU = -300.0
"""Skin threshold for CT: air is about -1000 HU, fat -100 HU."""
SMOOTHING_MM = 1.0
"""Gaussian sigma before thresholding: removes noise, keeps the nose and lips."""
DEPTH_RANGE_MM = 60.0
"""Depth over which shading fades to :data:`FAR_BRIGHTNESS`: 60 mm (nose tip to ears)
made facial relief stronger for dlib than 100-400 mm on the renders measured."""
FAR_BRIGHTNESS = 0.35
LIGHT = np.array([0.0, 0.35, 1.0]) / np.linalg.norm([0.0, 0.35, 1.0])
"""Light direction in view coordinates (right, up, toward viewer): just above the camera."""
AMBIENT = 0.12

_DIAGONAL = float(np.sqrt(0.5))
VIEW_DIRECTIONS: dict[str, tuple[float, float, float]] = {
    "frontal": (0.0, 1.0, 0.0),
    "oblique_left": (-_DIAGONAL, _DIAGONAL, 0.0),
    "oblique_right": (_DIAGONAL, _DIAGONAL, 0.0),
    "profile_left": (-1.0, 0.0, 0.0),
    "profile_right": (1.0, 0.0, 0.0),
}
"""Unit vector from the head toward the camera, RAS world (+x is the patient's right)."""
_SUPERIOR = np.array([0.0, 0.0, 1.0])


@dataclass(frozen=True, eq=False)
class RenderedView:
    """One view: the picture and the geometry that maps world points onto it."""

    name: str
    image: np.ndarray
    """uint8 (rows, cols), row 0 superior; 0 where no ray hit the skin."""
    height_mm: np.ndarray
    """float32 (rows, cols): skin position along :attr:`toward` (world mm), NaN where none."""
    origin: np.ndarray
    """World point (mm) of pixel column 0, bottom row, depth 0."""
    right: np.ndarray
    """World direction of increasing column."""
    up: np.ndarray
    """World direction of decreasing row (superior)."""
    toward: np.ndarray
    """World direction from the head to the camera."""
    spacing_mm: float

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> (N, 3) of (row, col, height along ``toward`` in mm)."""
        offsets = np.atleast_2d(np.asarray(points, dtype=float)) - self.origin
        col = offsets @ self.right / self.spacing_mm
        row = self.image.shape[0] - 1 - offsets @ self.up / self.spacing_mm
        height = np.atleast_2d(np.asarray(points, dtype=float)) @ self.toward
        return np.stack([row, col, height], axis=1)

    def pixel_world(self) -> np.ndarray:
        """(rows, cols, 3) world points of every pixel on the view's plane (height 0)."""
        rows, cols = self.image.shape
        row_index, col_index = np.indices((rows, cols))
        up = (rows - 1 - row_index)[..., None] * self.spacing_mm * self.up
        right = col_index[..., None] * self.spacing_mm * self.right
        return self.origin + right + up

    def sample(self, values: np.ndarray, points: np.ndarray, outside: float) -> np.ndarray:
        """A per-pixel array of this view (its image or heights) at world points, by the
        nearest pixel; ``outside`` off the view."""
        projected = self.project(points.reshape(-1, 3))
        rows = np.round(projected[:, 0]).astype(int)
        cols = np.round(projected[:, 1]).astype(int)
        inside = (rows >= 0) & (rows < values.shape[0]) & (cols >= 0) & (cols < values.shape[1])
        sampled = np.full(len(rows), outside, dtype=values.dtype)
        sampled[inside] = values[rows[inside], cols[inside]]
        return sampled.reshape(points.shape[:-1])

    def image_in_frame_of(self, reference: RenderedView) -> np.ndarray:
        """This view's picture on ``reference``'s pixels: renders of two scans of one grid
        are cropped to each head, so a pixel of one is not the same place in the other."""
        return self.sample(self.image, reference.pixel_world(), 0)


@dataclass(frozen=True, eq=False)
class SkinField:
    """The smoothed scan on the isotropic RAS grid with everything but the head pushed below
    the threshold, so rays only stop at the skin."""

    field: Volume
    threshold: float
    mask: Volume
    """bool, the head: the largest connected region above the threshold (air spaces inside,
    such as the airway, stay False)."""


def isotropic_grid(volume: Volume, spacing_mm: float = 1.0) -> Volume:
    """Axis-aligned RAS grid of cubic voxels covering the scan (uint8 zeros, a reference)."""
    if spacing_mm <= 0:
        raise ValueError(f"spacing_mm must be positive, got {spacing_mm}")
    extent = np.array(volume.shape) - 1
    corners = np.array(np.meshgrid(*[[0, e] for e in extent], indexing="ij")).reshape(3, -1).T
    world = volume.voxel_to_world(corners)
    low, high = world.min(axis=0), world.max(axis=0)
    shape = np.floor((high - low) / spacing_mm + 1e-6).astype(int) + 1
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    affine[:3, 3] = low
    return Volume(np.zeros(tuple(shape), dtype=np.uint8), affine)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold (maximum between-class variance), robust to a few hot voxels."""
    values = np.asarray(values, dtype=np.float32).ravel()
    if values.size > 2_000_000:
        values = values[:: values.size // 1_000_000]
    low, high = np.percentile(values, [0.0, 99.9])
    if high <= low:
        return float(low)
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts).astype(float)
    total = weight[-1]
    cumulative_mean = np.cumsum(counts * centres)
    below_mean = cumulative_mean / np.maximum(weight, 1)
    above_mean = (cumulative_mean[-1] - cumulative_mean) / np.maximum(total - weight, 1)
    between = (weight * (total - weight) * (below_mean - above_mean) ** 2)[:-1]
    # Well separated classes leave a plateau of equal scores over empty bins: take its middle.
    on_top = between >= between.max() * (1 - 1e-9)
    first = int(np.argmax(on_top))
    run = int(np.argmin(on_top[first:])) if not on_top[first:].all() else on_top.size - first
    return float(edges[first + (run - 1) // 2 + 1])


def skin_threshold(smoothed: np.ndarray, modality: str) -> float:
    """The intensity at the skin surface: Otsu for MR (no units), -300 HU for CT."""
    if modality == "CT":
        return CT_SKIN_HU
    if modality == "MR":
        return otsu_threshold(smoothed)
    raise ValueError(f"modality must be 'MR' or 'CT', got {modality!r}")


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = ndimage.histogram(labels, 1, count, count)
    return labels == (1 + int(np.argmax(sizes)))


def skin_field(volume: Volume, modality: str, spacing_mm: float = 1.0) -> SkinField:
    """Resample to isotropic RAS, smooth, threshold, keep the head (largest component)."""
    array = volume.array.astype(np.float32, copy=False)
    background = float(array.min()) if array.size else 0.0
    iso = resample_like(
        volume.with_array(array), isotropic_grid(volume, spacing_mm), "linear", background
    )
    smoothed = ndimage.gaussian_filter(
        iso.array.astype(np.float32, copy=False), SMOOTHING_MM / spacing_mm
    )
    threshold = skin_threshold(smoothed, modality)
    above = smoothed > threshold
    head = _largest_component(above)
    # Specks above the threshold outside the head (noise, markers) must not stop a ray.
    smoothed[above & ~head] = min(background, threshold - 1.0)
    return SkinField(field=iso.with_array(smoothed), threshold=threshold, mask=iso.with_array(head))


def skin_volume(volume: Volume, modality: str, spacing_mm: float = 1.0) -> Volume:
    """The head (largest region above the skin threshold) as a bool Volume on the isotropic
    RAS grid; its outer boundary is the rendered skin."""
    return skin_field(volume, modality, spacing_mm).mask


def skin_mask(volume: Volume, modality: str, spacing_mm: float = 1.0) -> np.ndarray:
    """:func:`skin_volume`'s array, on the grid of :func:`isotropic_grid`."""
    return skin_volume(volume, modality, spacing_mm).array


def _crop(skin: SkinField, margin: int = 2) -> Volume:
    """The field cut to the head's bounding box: less to resample per view."""
    found = ndimage.find_objects(skin.mask.array.astype(np.uint8))
    if not found:
        return skin.field
    box = tuple(
        slice(max(s.start - margin, 0), min(s.stop + margin, n))
        for s, n in zip(found[0], skin.mask.shape, strict=True)
    )
    affine = skin.field.affine.copy()
    affine[:3, 3] = skin.field.voxel_to_world([[s.start for s in box]])[0]
    return Volume(np.ascontiguousarray(skin.field.array[box]), affine)


def _view_grid(field: Volume, toward: np.ndarray, spacing_mm: float):
    """A grid whose axes are (right, toward, up) for a camera in direction ``toward``."""
    right = np.cross(_SUPERIOR, toward)
    axes = np.stack([right, toward, _SUPERIOR], axis=1)
    extent = np.array(field.shape) - 1
    corners = np.array(np.meshgrid(*[[0, e] for e in extent], indexing="ij")).reshape(3, -1).T
    along = field.voxel_to_world(corners) @ axes
    low, high = along.min(axis=0), along.max(axis=0)
    shape = np.floor((high - low) / spacing_mm + 1e-6).astype(int) + 1
    affine = np.eye(4)
    affine[:3, :3] = axes * spacing_mm
    affine[:3, 3] = axes @ low
    return Volume(np.zeros(tuple(shape), dtype=np.uint8), affine), right


def _on_grid(field: Volume, grid: Volume, outside: float) -> np.ndarray:
    """``field`` on ``grid``: by transposes and flips when the grid turns by multiples of 90
    degrees (frontal and profiles: exact and fast), otherwise by linear resampling."""
    mapping = np.linalg.solve(field.affine, grid.affine)
    linear, offset = mapping[:3, :3], mapping[:3, 3]
    signed = np.round(linear)
    if np.allclose(linear, signed, atol=1e-6) and np.allclose(offset, np.round(offset), atol=1e-3):
        order = [int(np.argmax(np.abs(signed[:, axis]))) for axis in range(3)]
        array = field.array.transpose(order)
        flips = tuple(axis for axis in range(3) if signed[order[axis], axis] < 0)
        array = np.flip(array, flips) if flips else array
        starts = np.where(signed[order, range(3)] < 0, np.array(field.shape)[order] - 1, 0)
        if array.shape == grid.shape and np.allclose(offset[order], starts, atol=1e-3):
            return array
    return resample_like(field, grid, "linear", outside).array


def _height_map(values: np.ndarray, threshold: float) -> np.ndarray:
    """Outermost threshold crossing along axis 1 seen from its high end, in voxels; NaN if none."""
    above = values > threshold
    n = values.shape[1]
    first = n - 1 - np.argmax(above[:, ::-1, :], axis=1)
    hit = above.any(axis=1)
    cols, ups = np.indices(first.shape)
    inner = values[cols, first, ups]
    outer = values[cols, np.minimum(first + 1, n - 1), ups]
    step = np.where(first < n - 1, inner - outer, np.inf)
    fraction = np.clip((inner - threshold) / np.maximum(step, 1e-6), 0.0, 1.0)
    return np.where(hit, first + fraction, np.nan).astype(np.float32)


def shade(height_mm: np.ndarray, spacing_mm: float) -> np.ndarray:
    """uint8 picture of a height map (mm toward the viewer): depth cue times Lambert."""
    hit = np.isfinite(height_mm)
    if not hit.any():
        return np.zeros(height_mm.shape, dtype=np.uint8)
    near = float(np.nanmax(height_mm))
    filled = np.where(hit, height_mm, near - 2 * DEPTH_RANGE_MM)
    smooth = ndimage.gaussian_filter(filled, 0.8)
    # Rows grow downward while ``up`` grows upward, hence the sign on the row gradient.
    d_row, d_col = np.gradient(smooth, spacing_mm)
    normal = np.stack([-d_col, d_row, np.ones_like(smooth)])
    normal /= np.linalg.norm(normal, axis=0)
    lambert = np.clip(np.tensordot(LIGHT, normal, axes=1), 0.0, 1.0)
    depth = np.clip(1.0 - (near - filled) / DEPTH_RANGE_MM, 0.0, 1.0)
    brightness = (AMBIENT + (1 - AMBIENT) * lambert) * (
        FAR_BRIGHTNESS + (1 - FAR_BRIGHTNESS) * depth
    )
    return np.where(hit, np.round(255 * brightness), 0).astype(np.uint8)


def render_surface(
    volume: Volume,
    modality: str,
    spacing_mm: float = 1.0,
    views: Iterable[str] = VIEWS,
) -> dict[str, RenderedView]:
    """Render the skin from each view; images plus the geometry to project points onto them."""
    views = tuple(views)
    unknown = [v for v in views if v not in VIEW_DIRECTIONS]
    if unknown:
        raise ValueError(f"unknown views {unknown}; choose from {', '.join(VIEW_DIRECTIONS)}")
    skin = skin_field(volume, modality, spacing_mm)
    field = _crop(skin)
    low_value = float(min(field.array.min(), skin.threshold - 1.0))
    rendered = {}
    for name in views:
        toward = np.array(VIEW_DIRECTIONS[name])
        grid, right = _view_grid(field, toward, spacing_mm)
        values = _on_grid(field, grid, low_value)
        depth_index = _height_map(values, skin.threshold)
        origin = grid.affine[:3, 3]
        # (right, up) index order -> image rows from superior down, columns to the right.
        height = (depth_index * spacing_mm + origin @ toward)[:, ::-1].T
        height = np.ascontiguousarray(height)
        rendered[name] = RenderedView(
            name=name,
            image=shade(height, spacing_mm),
            height_mm=height,
            origin=origin,
            right=right,
            up=_SUPERIOR.copy(),
            toward=toward,
            spacing_mm=spacing_mm,
        )
    return rendered


def render_views(
    volume: Volume,
    modality: str,
    spacing_mm: float = 1.0,
    views: Iterable[str] = VIEWS,
) -> dict[str, np.ndarray]:
    """uint8 grayscale renders by view name (see the module docstring for orientation)."""
    return {
        name: view.image
        for name, view in render_surface(volume, modality, spacing_mm, views).items()
    }


def save_png(image: np.ndarray, path_or_buffer: str | Path | BinaryIO) -> None:
    """Write a uint8 grayscale (or RGB) array as PNG to a path or a binary file object."""
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path_or_buffer, format="PNG")


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    save_png(image, buffer)
    return buffer.getvalue()


def render_png(
    volume: Volume, modality: str, view: str = "frontal", spacing_mm: float = 1.0
) -> bytes:
    """One view as PNG bytes (for asset metadata and the CLI)."""
    return png_bytes(render_views(volume, modality, spacing_mm, (view,))[view])


def montage(images: Mapping[str, np.ndarray], label: bool = True, gap: int = 4) -> np.ndarray:
    """Views side by side on one canvas, bottoms aligned, each named in its corner."""
    if not images:
        raise ValueError("montage needs at least one image")
    height = max(image.shape[0] for image in images.values())
    width = sum(image.shape[1] for image in images.values()) + gap * (len(images) - 1)
    canvas = np.zeros((height, width), dtype=np.uint8)
    column = 0
    for image in images.values():
        canvas[height - image.shape[0] :, column : column + image.shape[1]] = image
        column += image.shape[1] + gap
    if not label:
        return canvas
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    column = 0
    for name, image in images.items():
        draw.text((column + 3, 2), name, fill=255)
        column += image.shape[1] + gap
    return np.asarray(picture)


def montage_png(
    volume: Volume, modality: str, spacing_mm: float = 1.0, views: Iterable[str] = VIEWS
) -> bytes:
    """All views of one scan in a single PNG: what a reviewer looks at first."""
    return png_bytes(montage(render_views(volume, modality, spacing_mm, views)))
