"""Models and inference: face detection, embedding, cropping, occlusion scores. Knows nothing of the corpus."""
