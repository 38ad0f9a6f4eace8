"""Models layer: reference architectures, the pixel-space ``Normalize`` wrapper, a seeded
trainer, and safe model/checkpoint loading.

Public API: :func:`mlp`, :func:`small_cnn`, :func:`small_resnet` (and classes :class:`MLP`,
:class:`SmallCNN`, :class:`SmallResNet`), :class:`Normalize`, :func:`with_normalization`,
:func:`train_classifier`, :func:`load_model`, :func:`load_state_dict_file`, :func:`save_weights`.
"""

from genbound.models.architectures import (ARCHITECTURES, MLP, Residual, SmallCNN, SmallResNet, basic_block, mlp,
                                          small_cnn, small_resnet)
from genbound.models.loading import load_model, load_state_dict_file, save_weights
from genbound.models.normalize import Normalize, with_normalization
from genbound.models.train import train_classifier

__all__ = ["ARCHITECTURES", "MLP", "Normalize", "Residual", "basic_block", "SmallCNN", "SmallResNet", "load_model", "load_state_dict_file",
           "mlp", "save_weights", "small_cnn", "small_resnet", "train_classifier", "with_normalization"]
