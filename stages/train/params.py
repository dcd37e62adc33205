"""The train stage's parameters: its [train] config table and --train-* flags."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from stages.base import Params
from stages.models import MODELS

CLASS_WEIGHTS = ("none", "sqrt", "balanced")
SCHEDULES = ("cosine", "plateau")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
#: the default batch and its peak learning rate; ``sized`` keeps at least MIN_STEPS steps an epoch
BATCH, LEARNING_RATE, MIN_BATCH, MIN_STEPS = 128, 2e-3, 16, 25


@dataclass(frozen=True)
class TrainParams(Params):
    model: str = field(default="fer-vgg", metadata={"help": "network to train: " + ", ".join(MODELS), "choices": tuple(MODELS)})
    epochs: int = field(default=50, metadata={"help": "epochs to train (the cosine schedule spans them; early stopping may end "
                                                       "sooner); with --train-schedule plateau an interrupted run also "
                                                       "resumes with a raised value"})
    batch_size: int = field(default=0, metadata={
        "help": f"images per training batch (0: {BATCH}, halved down to {MIN_BATCH} on a small training set until an "
                f"epoch has {MIN_STEPS} steps: 32 for 800 images)"})
    learning_rate: float = field(default=0.0, metadata={
        "help": f"peak AdamW learning rate (0: {LEARNING_RATE:g} at batch {BATCH}, scaled by the square root of the "
                "batch: 1e-3 at 32)"})
    schedule: str = field(default="cosine", metadata={
        "help": "learning rate: cosine (one warm-up epoch, then down to zero over --train-epochs) | plateau (constant, "
                "halved after --train-lr-patience epochs without a better val loss)", "choices": SCHEDULES})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW decoupled weight decay"})
    label_smoothing: float = field(default=0.1, metadata={"help": "label smoothing of the cross-entropy loss (0-0.5)"})
    augment: bool = field(default=True, metadata={"help": "augment training images (flip, rotation, scale, shift), in the input pipeline"})
    erase: float = field(default=0.5, metadata={"help": "with --train-augment: probability of blanking a random rectangle "
                                                       "(2-25%% of the face, noise) in each training image (random erasing; 0: off)"})
    class_weights: str = field(default="none", metadata={
        "help": "loss weights from label counts: none | sqrt (softened) | balanced (n / (k * count))", "choices": CLASS_WEIGHTS})
    patience: int = field(default=0, metadata={"help": "stop after this many epochs without a better val accuracy (0: never; "
                                                        "the best epoch is kept either way)"})
    lr_patience: int = field(default=4, metadata={"help": "with --train-schedule plateau: halve the learning rate after this "
                                                           "many epochs without a better val loss"})
    image_size: int = field(default=0, metadata={"help": "input side in pixels (0: the model's own, 48 for fer-vgg)"})
    weights: str = field(default="", metadata={"help": "local weights file to start from (mobilenetv3: a Keras MobileNetV3Small "
                                                        "no-top .h5); nothing is ever downloaded"})
    max_items: int = field(default=0, metadata={"help": "train on a stratified subset of at most this many images, chosen "
                                                        "by key hash before splitting (0: all)"})
    seed: int = field(default=0, metadata={"help": "random seed (weights, shuffling, augmentation, fallback split)"})
    threads: int = field(default=0, metadata={"help": "TensorFlow threads per op pool (0: the environment / all cores)"})
    precision: str = field(default="auto", metadata={
        "help": "compute precision: auto (mixed_bfloat16 where the hardware computes bfloat16 natively: a GPU of compute "
                "capability 8+, a CPU with AMX or AVX512-BF16 under TensorFlow; float32 elsewhere), float32, "
                "mixed_bfloat16 or mixed_float16 (GPUs); weights stay float32 and the saved model is float32",
        "choices": PRECISIONS})
    test_flip: bool = field(default=True, metadata={
        "help": "score each face by the mean of its prediction and its mirror image's (evaluation here and predict)"})
    test_shift: int = field(default=1, metadata={
        "help": "also average each face's prediction over four copies moved this many pixels left, right, up and down "
                "(with --train-test-flip, their mirror images too: 10 views; 0: off; evaluation here and predict)"})

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"train.model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.epochs < 1:
            raise ValueError(f"train.epochs must be >= 1, got {self.epochs}")
        for name in ("batch_size", "patience", "lr_patience", "max_items", "threads", "seed", "test_shift"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"train.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not 0 <= self.erase <= 1:
            raise ValueError(f"train.erase must be between 0 and 1, got {self.erase}")
        if not 0 <= self.label_smoothing <= 0.5:
            raise ValueError(f"train.label_smoothing must be between 0 and 0.5, got {self.label_smoothing}")
        if not 0 <= self.weight_decay < 1:
            raise ValueError(f"train.weight_decay must be between 0 and 1, got {self.weight_decay}")
        if not 0 <= self.learning_rate < 1:
            raise ValueError(f"train.learning_rate must be between 0 and 1, got {self.learning_rate}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.class_weights not in CLASS_WEIGHTS:
            raise ValueError(f"train.class_weights must be one of {', '.join(CLASS_WEIGHTS)}, got {self.class_weights!r}")
        low = MODELS[self.model].min_side
        if self.image_size and self.image_size < low:
            raise ValueError(f"train.image_size must be 0 or >= {low} for {self.model}, got {self.image_size}")
        if self.weights and not Path(self.weights).is_file():
            raise ValueError(f"train.weights: no such file {self.weights}")

    def sized(self, n_train: int) -> TrainParams:
        """These parameters with the batch and learning rate set for *n_train* training images.

        Left at 0, the batch is ``BATCH``, halved down to ``MIN_BATCH`` while an epoch would have
        fewer than ``MIN_STEPS`` steps (the same compute, more optimizer steps on a small set), and
        the learning rate is ``LEARNING_RATE`` scaled by the square root of batch / ``BATCH``. Values
        given explicitly are kept.
        """
        batch = self.batch_size or BATCH
        if not self.batch_size:
            while batch > MIN_BATCH and -(-n_train // batch) < MIN_STEPS:
                batch //= 2
        lr = self.learning_rate or LEARNING_RATE * (batch / BATCH) ** 0.5
        return replace(self, batch_size=batch, learning_rate=lr)
