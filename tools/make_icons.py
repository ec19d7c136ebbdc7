"""Generate Resources/Icons/EdranFusion.png (module icon) and EdranFusionStroke.png (sample data thumbnail)."""
import numpy as np
import SimpleITK as sitk
from PIL import Image, ImageDraw, ImageFont

ROOT = str(__import__("pathlib").Path(__file__).resolve().parents[1])

def _unused_brain_mask(size, cx, cy, rx, ry):
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    u, v = (x - cx) / rx, (y - cy) / ry
    # slightly flattened at the bottom, a notch at the top (interhemispheric fissure)
    r = u**2 + v**2 * np.where(v > 0, 1.25, 1.0)
    notch = np.exp(-((u * 9) ** 2)) * np.clip(-v - 0.55, 0, None) * 3.0
    return (r + notch < 1.0).astype(np.float64), u, v

def slices(size):
    """Mid-axial T2 and FLAIR slices of the bundled stroke pair, [0,1], size x size."""
    out = []
    for name in ("T2", "FLAIR"):
        image = sitk.DICOMOrient(sitk.ReadImage(f"{ROOT}/EdranFusionLib/sample_data/stroke/{name}.nii.gz"), "LPS")
        array = sitk.GetArrayFromImage(image).astype(np.float32)
        tile = Image.fromarray(window(array[int(len(array) * 0.55)])).resize((size, size), Image.LANCZOS)
        out.append(np.asarray(tile, dtype=np.float64) / 255.0)
    return out

def icon(size=128, ss=4):
    n = size * ss
    t2, flair = slices(n)
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    radius = 0.33 * n
    ma = np.clip((radius - np.hypot(x - 0.37 * n, y - 0.5 * n)) / ss, 0, 1)
    mb = np.clip((radius - np.hypot(x - 0.63 * n, y - 0.5 * n)) / ss, 0, 1)
    blue, orange = np.array([0.25, 0.6, 1.0]), np.array([1.0, 0.6, 0.2])
    tinted_a = (0.25 + 0.75 * t2[..., None]) * blue
    tinted_b = (0.25 + 0.75 * flair[..., None]) * orange
    fused = np.repeat(np.maximum(t2, flair)[..., None] * 0.85 + 0.15, 3, axis=2)
    both = (ma * mb)[..., None]
    rgb = (ma * (1 - mb))[..., None] * tinted_a + (mb * (1 - ma))[..., None] * tinted_b + both * fused
    alpha = np.clip(ma + mb, 0, 1)
    rgba = np.dstack([rgb / np.maximum(alpha, 1e-6)[..., None], alpha])
    ring = np.clip(1 - np.abs(np.hypot(x - 0.37 * n, y - 0.5 * n) - radius) / (1.5 * ss), 0, 1)
    ring = np.maximum(ring, np.clip(1 - np.abs(np.hypot(x - 0.63 * n, y - 0.5 * n) - radius) / (1.5 * ss), 0, 1))
    rgba[..., :3] = rgba[..., :3] * (1 - ring[..., None]) + ring[..., None] * 0.95
    rgba[..., 3] = np.maximum(rgba[..., 3], ring)
    image = Image.fromarray((np.clip(rgba, 0, 1) * 255).astype(np.uint8), "RGBA").resize((size, size), Image.LANCZOS)
    image.save(f"{ROOT}/Resources/Icons/EdranFusion.png", optimize=True)

def window(slice_):
    lo, hi = np.percentile(slice_[slice_ > 0], [1, 99.5])
    return (np.clip((slice_ - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)

def thumbnail():
    tiles = []
    for name in ("T2", "FLAIR"):
        image = sitk.DICOMOrient(sitk.ReadImage(f"{ROOT}/EdranFusionLib/sample_data/stroke/{name}.nii.gz"), "LPS")
        array = sitk.GetArrayFromImage(image).astype(np.float32)
        k = int(len(array) * 0.55)
        tiles.append(Image.fromarray(window(array[k])).convert("RGB"))
    w, h = 130, 130
    canvas = Image.new("RGB", (260, 170), "black")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for index, (tile, label) in enumerate(zip(tiles, ("T2", "FLAIR"))):
        tile.thumbnail((w, h))
        canvas.paste(tile, (index * w + (w - tile.width) // 2, 10 + (h - tile.height) // 2))
        draw.text((index * w + 8, 148), label, fill="white", font=font)
    canvas.save(f"{ROOT}/Resources/Icons/EdranFusionStroke.png", optimize=True)

icon()
thumbnail()
