"""Models for the train stage, by name: a dict plus a decorator, Keras imported only when building.

Every model takes raw pixel values (0-255, float) at its input size and ends in a softmax; the
shared head of the graph rescales to [0, 1] (augmentation happens in the input pipeline,
``stages.train.data``, the same on every Keras backend). The builders make the features; ``build`` adds the softmax layer, always in float32 (under a mixed
precision policy the probabilities and the loss stay exact).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Builder: (tensor scaled to [0, 1], weights file or "") -> feature tensor (the softmax is added by build).
Builder = Callable[[Any, str], Any]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its default input (height, width, channels) and its builder."""

    name: str
    input_shape: tuple[int, int, int]
    help: str
    build: Builder
    min_side: int = 16


MODELS: dict[str, ModelSpec] = {}


def model(name: str, input_shape: tuple[int, int, int], help: str, min_side: int = 16) -> Callable[[Builder], Builder]:
    """Decorator registering a builder under *name*; a duplicate name is an error."""

    def deco(fn: Builder) -> Builder:
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name] = ModelSpec(name, input_shape, help, fn, min_side)
        return fn

    return deco


def input_shape(name: str, image_size: int = 0) -> tuple[int, int, int]:
    """The model's input (h, w, c); *image_size* > 0 overrides its side."""
    h, w, c = MODELS[name].input_shape
    return (image_size, image_size, c) if image_size else (h, w, c)


def build(name: str, n_classes: int, *, image_size: int = 0, weights: str = "", seed: int = 0) -> Any:
    """A ready (uncompiled) Keras model: raw pixels in, class probabilities out."""
    import keras
    from keras import layers

    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    shape = input_shape(name, image_size)
    inp = keras.Input(shape, name="pixels")
    x = layers.Rescaling(1 / 255, name="scale")(inp)
    out = layers.Dense(n_classes, activation="softmax", name="probs", dtype="float32")(MODELS[name].build(x, weights))
    m = keras.Model(inp, out, name=name.replace("-", "_"))
    if weights and name != "mobilenetv3":
        # Whole-model weights (a .weights.h5 saved from the same architecture) to start from.
        m.load_weights(weights)
    return m


def compile_for(model: Any, params: Any, steps_per_epoch: int) -> None:
    """Compile *model* with the recipe's optimizer, schedule and loss (``stages.train.TrainParams``).

    AdamW (decoupled weight decay); the learning rate either follows a cosine from a one-epoch
    warm-up down to zero over the epoch budget (``schedule="cosine"``), or stays put and is halved
    by the fit loop on a val-loss plateau (``"plateau"``). Cross-entropy on one-hot targets with
    label smoothing (FER labels are noisy: one face in ten is arguably another class).
    """
    import keras

    if not (params.batch_size and params.learning_rate):
        raise ValueError("compile_for needs the batch and learning rate set (TrainParams.sized)")
    lr: Any = params.learning_rate
    if params.schedule == "cosine":
        warm = steps_per_epoch if params.epochs > 1 else 0
        lr = keras.optimizers.schedules.CosineDecay(
            params.learning_rate / 10 if warm else params.learning_rate, max(1, params.epochs * steps_per_epoch - warm),
            alpha=0.0, warmup_target=params.learning_rate if warm else None, warmup_steps=warm)
    model.compile(optimizer=keras.optimizers.AdamW(lr, weight_decay=params.weight_decay),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=params.label_smoothing),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])


def _conv(x: Any, filters: int) -> Any:
    from keras import layers

    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    # Momentum 0.9: the moving statistics follow the weights within an epoch, so val scores (inference
    # mode) are sound from the first epochs on; Keras' 0.99 lags by hundreds of steps.
    x = layers.BatchNormalization(momentum=0.9)(x)
    return layers.Activation("relu")(x)


def _vgg(x: Any, widths: tuple[int, ...], dropout: float) -> Any:
    from keras import layers

    for f in widths:
        x = _conv(_conv(x, f), f)
        x = layers.MaxPooling2D(2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    return layers.Dropout(dropout)(x)


@model("fer-vgg", (48, 48, 1), "VGG-style CNN: two 3x3 convs per stage at 32-64-128-256 filters, batch norm, global pooling "
       "(48x48 gray, ~1.2M params; the default)")
def fer_vgg(x: Any, weights: str) -> Any:
    return _vgg(x, (32, 64, 128, 256), 0.4)


@model("fer-vgg-wide", (48, 48, 1), "fer-vgg at twice the width: 64-128-256-512 filters (48x48 gray, ~4.7M params; "
       "for a GPU)")
def fer_vgg_wide(x: Any, weights: str) -> Any:
    return _vgg(x, (64, 128, 256, 512), 0.5)


def _block(x: Any, filters: int, kernel: int, dropout: float) -> Any:
    from keras import layers

    x = layers.Conv2D(filters, kernel, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=0.9)(x)
    x = layers.Activation("relu")(x)
    x = layers.MaxPooling2D(2)(x)
    return layers.Dropout(dropout)(x)


def _dense(x: Any, units: int, dropout: float) -> Any:
    from keras import layers

    x = layers.Dense(units, use_bias=False)(x)
    x = layers.BatchNormalization(momentum=0.9)(x)
    x = layers.Activation("relu")(x)
    return layers.Dropout(dropout)(x)


@model("fer-cnn", (48, 48, 1), "the classic FER2013 CNN: conv 64-128-512-512 + dense 256-512 (48x48 gray, ~4.5M params)")
def fer_cnn(x: Any, weights: str) -> Any:
    from keras import layers

    x = _block(x, 64, 3, 0.25)
    x = _block(x, 128, 5, 0.25)
    x = _block(x, 512, 3, 0.25)
    x = _block(x, 512, 3, 0.25)
    x = layers.Flatten()(x)
    x = _dense(x, 256, 0.25)
    return _dense(x, 512, 0.25)


@model("fer-small", (48, 48, 1), "a small fast CNN: conv 32-64-128, global pooling (48x48 gray, ~0.1M params)")
def fer_small(x: Any, weights: str) -> Any:
    from keras import layers

    x = _block(x, 32, 3, 0.1)
    x = _block(x, 64, 3, 0.1)
    x = _block(x, 128, 3, 0.2)
    x = layers.GlobalAveragePooling2D()(x)
    return layers.Dropout(0.3)(x)


@model("mobilenetv3", (96, 96, 3), "Keras MobileNetV3Small from scratch (96x96 RGB); weights only from a local file",
       min_side=32)
def mobilenetv3(x: Any, weights: str) -> Any:
    import keras
    from keras import layers

    if weights and not Path(weights).is_file():
        raise ValueError(f"train.weights: no such file {weights}")
    # weights=None (or a local file) and no built-in preprocessing: nothing is downloaded, and
    # the [-1, 1] scaling MobileNetV3 expects is done here so every model takes raw pixels.
    base = keras.applications.MobileNetV3Small(
        input_shape=tuple(x.shape[1:]), include_top=False, weights=weights or None,
        include_preprocessing=False, pooling="avg")
    x = layers.Rescaling(2.0, offset=-1.0, name="to_pm1")(x)
    return layers.Dropout(0.2)(base(x))
