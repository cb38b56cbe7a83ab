"""SCRFD face detection on an onnxruntime session: boxes, scores and 5-point landmarks.

Ported from insightface (MIT licence), insightface/model_zoo/scrfd.py (`SCRFD.forward`, `detect`,
`_detect_candidates`, `nms`, `distance2bbox`, `distance2kps`), for one square input size and max_num=0: the
same preprocessing, anchor-centre decoding, score threshold, NMS and ordering, so the results are insightface's.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from .onnx_graph import GraphInfo

INPUT_MEAN = 127.5
INPUT_STD = 128.0
NMS_THRESH = 0.4  # insightface's default, which FaceAnalysis keeps
# Output count -> (strides, anchors per location, whether landmarks are among the outputs): insightface's variants.
LAYOUTS: dict[int, tuple[tuple[int, ...], int, bool]] = {
    6: ((8, 16, 32), 2, False),
    9: ((8, 16, 32), 2, True),
    10: ((8, 16, 32, 64, 128), 1, False),
    15: ((8, 16, 32, 64, 128), 1, True),
}


def is_detector(graph: GraphInfo) -> bool:
    """insightface's routing rule: a model with five or more outputs is a detector."""
    return len(graph.outputs) >= 5


def distance2bbox(points: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """(left, top, right, bottom) distances from each anchor centre -> x1, y1, x2, y2."""
    x1 = points[:, 0] - distance[:, 0]
    y1 = points[:, 1] - distance[:, 1]
    x2 = points[:, 0] + distance[:, 2]
    y2 = points[:, 1] + distance[:, 3]
    return np.stack([x1, y1, x2, y2], axis=-1)


def distance2kps(points: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Landmark offsets from each anchor centre -> x0, y0, x1, y1, ..."""
    preds = []
    for i in range(0, distance.shape[1], 2):
        preds.append(points[:, i % 2] + distance[:, i])
        preds.append(points[:, i % 2 + 1] + distance[:, i + 1])
    return np.stack(preds, axis=-1)


def nms(dets: np.ndarray, thresh: float = NMS_THRESH) -> list[int]:
    """Greedy non-maximum suppression over rows x1, y1, x2, y2, score (insightface's, +1 pixel areas)."""
    x1, y1, x2, y2, scores = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3], dets[:, 4]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        w = np.maximum(0.0, xx2 - xx1 + 1)
        h = np.maximum(0.0, yy2 - yy1 + 1)
        inter = w * h
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= thresh)[0] + 1]
    return keep


class Scrfd:
    """One SCRFD model on `session`, detecting at input_size (width, height) with score threshold det_thresh."""

    def __init__(self, session: Any, graph: GraphInfo, input_size: tuple[int, int], det_thresh: float) -> None:
        if len(graph.outputs) not in LAYOUTS:
            raise ValueError(f"an SCRFD model has 6, 9, 10 or 15 outputs, this one {len(graph.outputs)}")
        self.session = session
        self.strides, self.num_anchors, self.use_kps = LAYOUTS[len(graph.outputs)]
        self.batched = len(graph.outputs[0].shape) == 3  # outputs with a batch axis: take the first image's
        self.input_name = graph.inputs[0].name
        self.output_names = [o.name for o in graph.outputs]
        self.input_size = input_size
        self.det_thresh = det_thresh
        self._centres: dict[tuple[int, int, int], np.ndarray] = {}

    def detect(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(N x 5 float32 rows x1, y1, x2, y2, score; N x 5 x 2 float32 landmarks or None) in img's pixels,
        best score first, after NMS."""
        pre_det, kpss = self._candidates(img)
        if pre_det.shape[0] == 0:
            return np.empty((0, 5), dtype=np.float32), (np.empty((0, 5, 2), dtype=np.float32) if self.use_kps else None)
        keep = nms(pre_det)
        return pre_det[keep, :], (kpss[keep, :, :] if kpss is not None else None)

    def _candidates(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Every anchor over the threshold, in the original image's pixels, sorted by score (stable)."""
        det_img, det_scale = self._letterbox(img)
        scores_list, bboxes_list, kpss_list = self._forward(det_img)
        if sum(s.size for s in scores_list) == 0:
            return np.empty((0, 5), dtype=np.float32), None
        scores = np.vstack(scores_list)
        order = np.argsort(-scores.ravel(), kind="stable")
        bboxes = np.vstack(bboxes_list) / det_scale
        pre_det = np.hstack((bboxes, scores)).astype(np.float32, copy=False)[order, :]
        kpss = (np.vstack(kpss_list) / det_scale)[order, :, :] if self.use_kps else None
        return pre_det, kpss

    def _letterbox(self, img: np.ndarray) -> tuple[np.ndarray, float]:
        """img resized into input_size keeping its aspect, at the top left of a black canvas; and the scale."""
        width, height = self.input_size
        im_ratio = float(img.shape[0]) / img.shape[1]
        if im_ratio > float(height) / width:
            new_height = height
            new_width = int(new_height / im_ratio)
        else:
            new_width = width
            new_height = int(new_width * im_ratio)
        det_scale = float(new_height) / img.shape[0]
        det_img = np.zeros((height, width, 3), dtype=np.uint8)
        det_img[:new_height, :new_width, :] = cv2.resize(img, (new_width, new_height))
        return det_img, det_scale

    def _forward(self, det_img: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        size = (det_img.shape[1], det_img.shape[0])
        blob = cv2.dnn.blobFromImage(det_img, 1.0 / INPUT_STD, size, (INPUT_MEAN, INPUT_MEAN, INPUT_MEAN), swapRB=True)
        net_outs = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(blob, np.float32)})
        if self.batched:
            net_outs = [o[0] for o in net_outs]
        fmc = len(self.strides)
        scores_list, bboxes_list, kpss_list = [], [], []
        for idx, stride in enumerate(self.strides):
            scores = net_outs[idx]
            centres = self._anchor_centres(blob.shape[2] // stride, blob.shape[3] // stride, stride)
            pos_inds = np.where(scores >= self.det_thresh)[0]
            scores_list.append(scores[pos_inds])
            bboxes_list.append(distance2bbox(centres, net_outs[idx + fmc] * stride)[pos_inds])
            if self.use_kps:
                kpss = distance2kps(centres, net_outs[idx + fmc * 2] * stride)
                kpss_list.append(kpss.reshape((kpss.shape[0], -1, 2))[pos_inds])
        return scores_list, bboxes_list, kpss_list

    def _anchor_centres(self, height: int, width: int, stride: int) -> np.ndarray:
        key = (height, width, stride)
        if key not in self._centres:
            centres = np.stack(list(np.mgrid[:height, :width][::-1]), axis=-1).astype(np.float32)  # x, y
            centres = (centres * stride).reshape((-1, 2))
            if self.num_anchors > 1:
                centres = np.stack([centres] * self.num_anchors, axis=1).reshape((-1, 2))
            self._centres[key] = centres
        return self._centres[key]
