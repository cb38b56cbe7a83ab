"""ArcFace alignment: the 5-point similarity transform onto insightface's template, and the aligned crop.

Ported from insightface (MIT licence), insightface/utils/face_align.py (`arcface_dst`, `estimate_norm`,
`norm_crop`), with scikit-image's SimilarityTransform.estimate, which insightface calls, replaced by the same
Umeyama estimate written out in numpy (skimage/transform/_geometric.py `_umeyama`, BSD licence): the same
operations in the same dtypes, so the matrix is the same to the bit and importing scikit-image (and scipy with
it) is not needed to align a face.
"""

from __future__ import annotations

import cv2
import numpy as np

# insightface's 5-point ArcFace template for a 112x112 crop: eye centres, nose tip, mouth corners.
ARCFACE_DST = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3x3 least-squares similarity transform taking src points onto dst (Umeyama 1991), as scikit-image's
    `_umeyama(src, dst, estimate_scale=True)`; NaN where the problem is degenerate."""
    num, dim = src.shape
    src_mean = src.mean(axis=0)
    dst_mean = dst.mean(axis=0)
    src_demean = src - src_mean
    dst_demean = dst - dst_mean
    a = dst_demean.T @ src_demean / num  # Eq. (38)
    d = np.ones((dim,), dtype=np.float64)  # Eq. (39)
    if np.linalg.det(a) < 0:
        d[dim - 1] = -1
    t = np.eye(dim + 1, dtype=np.float64)
    u, s, v = np.linalg.svd(a)
    # Eq. (40) and (43), with numpy's matrix_rank tolerance.
    rank = np.count_nonzero(s > s.max() * np.max(a.shape) * np.finfo(float).eps)
    if rank == 0:
        return np.nan * t
    if rank == dim - 1 and np.linalg.det(u) * np.linalg.det(v) > 0:
        t[:dim, :dim] = u @ v
    elif rank == dim - 1:
        keep = d[dim - 1]
        d[dim - 1] = -1
        t[:dim, :dim] = u @ np.diag(d) @ v
        d[dim - 1] = keep
    else:
        t[:dim, :dim] = u @ np.diag(d) @ v
    scale = 1.0 / src_demean.var(axis=0).sum() * (s @ d)  # Eq. (41) and (42)
    t[:dim, dim] = dst_mean - scale * (t[:dim, :dim] @ src_mean.T)
    t[:dim, :dim] *= scale
    return t


def estimate_norm(lmk: np.ndarray, image_size: int = 112) -> np.ndarray:
    """The 2x3 affine matrix taking the 5 landmarks onto the template scaled to image_size (insightface's)."""
    assert lmk.shape == (5, 2)
    assert image_size % 112 == 0 or image_size % 128 == 0
    if image_size % 112 == 0:
        ratio = float(image_size) / 112.0
        diff_x = 0.0
    else:
        ratio = float(image_size) / 128.0
        diff_x = 8.0 * ratio
    dst = ARCFACE_DST * ratio
    dst[:, 0] += diff_x
    return umeyama(lmk, dst)[0:2, :]


def norm_crop(img: np.ndarray, landmark: np.ndarray, image_size: int = 112) -> np.ndarray:
    """The aligned image_size x image_size face, black outside the image (insightface's norm_crop)."""
    m = estimate_norm(landmark, image_size)
    return cv2.warpAffine(img, m, (image_size, image_size), borderValue=0.0)
