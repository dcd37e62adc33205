"""Keras's process-wide set-up for training and prediction: the import (any Keras 3 backend), thread
pools, seeds and op determinism, and the precision the hardware computes fastest."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from stages.base import ConfigError, quiet_native_stderr

log = logging.getLogger(__name__)


def import_keras() -> Any:
    """Keras 3 on its configured backend (``KERAS_BACKEND``: tensorflow by default, jax or torch on a
    GPU machine without TensorFlow), with the native libraries' start-up chatter kept off the
    console; or a ConfigError naming the install line."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with quiet_native_stderr():
            import keras
            import matplotlib  # noqa: F401  (plots; fail before hours of training, not after)

            if keras.backend.backend() == "tensorflow":
                import tensorflow as tf

                tf.config.list_physical_devices()  # platform probing prints here (cuInit, oneDNN): keep it quiet
    except ImportError as e:
        raise ConfigError(f"training needs Keras 3 with a backend (TensorFlow by default) and matplotlib ({e}): "
                          "pip install 'tensorflow>=2.16' matplotlib") from None
    return keras


def configure(keras: Any, threads: int, seed: int) -> None:
    """Thread pools (before TensorFlow starts its runtime), seeds and deterministic ops."""
    keras.utils.set_random_seed(seed)
    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
        except RuntimeError:  # the runtime already started in this process: keep its pools
            log.debug("train: TensorFlow already initialised; thread settings unchanged")
    tf.config.experimental.enable_op_determinism()


def reset_determinism(was_on: bool) -> None:
    """Switch op determinism off again unless it was on before training (it is process-wide)."""
    try:  # only the private module has the switch back and the query
        from tensorflow.python.framework import config as tf_config
    except ImportError:
        return
    if not was_on and hasattr(tf_config, "disable_op_determinism"):
        tf_config.disable_op_determinism()


def determinism_on() -> bool:
    if "tensorflow" not in sys.modules:
        return False
    try:
        from tensorflow.python.framework import config as tf_config

        return bool(tf_config.is_op_determinism_enabled())
    except (ImportError, AttributeError):
        return False


def resolve_precision(keras: Any, precision: str) -> str:
    """``auto``: mixed_bfloat16 where the hardware computes bfloat16 natively (measured on a
    Sapphire Rapids CPU with AMX: 1.2-1.4x the float32 training rate for fer-vgg, 1.9x for
    fer-vgg-wide), float32 elsewhere (emulated bfloat16 is slower than float32)."""
    if precision != "auto":
        return precision
    return "mixed_bfloat16" if native_bfloat16(keras.backend.backend()) else "float32"


def native_bfloat16(backend: str) -> bool:
    """A GPU of compute capability 8+ for *backend*, or (TensorFlow, whose oneDNN kernels use them) a
    CPU with AMX or AVX512-BF16."""
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                cc = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability") or (0, 0)
                return tuple(cc) >= (8, 0)
        elif backend == "jax":
            import jax

            return bool(jax.default_backend() == "gpu")
        elif backend == "torch":
            import torch

            return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    except Exception as e:  # a broken driver probe must not stop training: float32 always works
        log.debug("train: no GPU probe (%s)", e)
        return False
    return backend == "tensorflow" and bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()
