"""DenseNet121 patch classifier (CNN-Sentinel used DenseNet201; 121 is the same design, lighter)."""
from __future__ import annotations

import keras

from lulc.training.models.pretrained import pretrained_backbone
from lulc.training.models.scene_head import scene_model


def build_scene_densenet121(channels: int, num_classes: int, patch: int = 32, bands: list[str] | None = None,
                            weights: str | None = None, freeze_backbone: bool = False) -> keras.Model:
    """keras.applications DenseNet121 without top (stride 32), so ``patch`` is a multiple of 32."""
    inputs, features = pretrained_backbone(keras.applications.DenseNet121, channels, bands, weights, freeze_backbone)
    return scene_model(inputs, features, patch, 32, num_classes, "scene_densenet121", hidden=256)
