"""VGG16 patch classifier (CNN-Sentinel): RGB or all bands, from scratch or from local weights."""
from __future__ import annotations

import keras

from lulc.training.models.pretrained import pretrained_backbone
from lulc.training.models.scene_head import scene_model


def build_scene_vgg16(channels: int, num_classes: int, patch: int = 32, bands: list[str] | None = None,
                      weights: str | None = None, freeze_backbone: bool = False) -> keras.Model:
    """keras.applications VGG16 without top (stride 32), so ``patch`` is a multiple of 32."""
    inputs, features = pretrained_backbone(keras.applications.VGG16, channels, bands, weights, freeze_backbone)
    return scene_model(inputs, features, patch, 32, num_classes, "scene_vgg16", hidden=256)
