"""Prompt ensembles for the zero-shot occlusion scorer (DOMAIN.md section 3).

Per attribute, a positive and a negative ensemble; each is encoded prompt by prompt, mean-pooled, then
L2-normalised at export time. For sunglasses, CLIP answers "are there sunglasses in the frame", not "are the
eyes covered": sunglasses pushed up on the forehead, resting on the head and clear eyeglasses go into the
negative class on purpose (validation pair of the batch scripts: on-eyes 0.91, on-forehead 0.39).
"""

from __future__ import annotations

PROMPTS: dict[str, dict[str, tuple[str, ...]]] = {
    "mask": {
        "positive": (
            "a photo of a person wearing a face mask",
            "a photo of a person wearing a surgical mask over the mouth and nose",
            "a photo of a person wearing an FFP2 respirator mask",
            "a close-up of a face covered by a medical mask",
            "a photo of a face whose mouth and nose are hidden by a cloth mask",
            "a portrait of someone wearing a protective face mask",
        ),
        "negative": (
            "a photo of a person's face",
            "a photo of a person with their mouth and nose visible",
            "a close-up of an uncovered face",
            "a portrait of a smiling person",
            "a photo of a face with no mask",
            "a photo of a person with a mask pulled down under the chin, mouth visible",
        ),
    },
    "sunglasses": {
        "positive": (
            "a photo of a person wearing dark sunglasses over their eyes",
            "a close-up of a face with the eyes hidden behind dark sunglasses",
            "a portrait of someone wearing black sunglasses",
            "a photo of a person whose eyes are covered by tinted shades",
            "a face with opaque mirrored sunglasses covering the eyes",
            "a photo of a person wearing dark glasses, eyes not visible",
        ),
        "negative": (
            "a photo of a person's face with the eyes clearly visible",
            "a photo of a person with sunglasses pushed up on the forehead, eyes visible",
            "a photo of a person with sunglasses resting on top of the head",
            "a photo of a person wearing clear prescription eyeglasses with visible eyes",
            "a close-up of a face with open, uncovered eyes",
            "a portrait of a person without glasses",
        ),
    },
}

ATTRIBUTES: tuple[str, ...] = tuple(PROMPTS)
