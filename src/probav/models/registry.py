"""Models by name. A model lives in ``probav/models/<name>.py`` and registers itself with
``@register("<name>")``; ``params.yaml``'s ``models:`` list selects them. Adding a model is one
new file plus one entry in params."""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from probav.scene import Scene

_REGISTRY: dict[str, type["SRModel"]] = {}


class SRModel:
    """A multi-frame super-resolver: Scene (LR frames + QMs) → 384×384 uint16 image.

    Classical models need no training (``trainable = False``). Trainable ones implement
    ``fit`` and ``save``/``load`` of their state in a folder (``models/<name>/``).
    """

    name: str = ""
    trainable: bool = False
    uses_reference: bool = False   # reads scene.reference_weights (its output depends on the track)

    def __init__(self, params: dict | None = None):
        self.params = params or {}

    def predict(self, scene: Scene) -> np.ndarray:
        raise NotImplementedError

    def predict_many(self, scenes: Iterable[Scene]) -> Iterator[np.ndarray]:
        for scene in scenes:
            yield self.predict(scene)

    # Trainable models override these.
    def save(self, model_dir: os.PathLike | str) -> None:
        Path(model_dir).mkdir(parents=True, exist_ok=True)

    @classmethod
    def load(cls, model_dir: os.PathLike | str | None, params: dict | None = None) -> "SRModel":
        return cls(params)


def register(name: str) -> Callable[[type[SRModel]], type[SRModel]]:
    def decorate(cls: type[SRModel]) -> type[SRModel]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return decorate


def model_class(name: str) -> type[SRModel]:
    """The class registered as ``name``, importing ``probav.models.<name>`` on first use."""
    if name not in _REGISTRY:
        try:
            importlib.import_module(f"probav.models.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"probav.models.{name}":
                raise
            raise KeyError(f"unknown model {name!r}: no module probav/models/{name}.py; "
                           f"available: {', '.join(available_models())}") from None
    if name not in _REGISTRY:
        raise KeyError(f"probav/models/{name}.py does not register a model named {name!r}")
    return _REGISTRY[name]


def available_models() -> list[str]:
    """Names of the model modules shipped in probav/models."""
    here = Path(__file__).parent
    return sorted(p.stem for p in here.glob("*.py") if not p.stem.startswith("_") and p.stem not in ("registry",))


def load_model(name: str, params: dict | None = None, model_dir: os.PathLike | str | None = None) -> SRModel:
    """A ready-to-predict model: classical ones are built from params, trainable ones loaded from model_dir."""
    cls = model_class(name)
    if cls.trainable:
        if model_dir is None or not Path(model_dir).exists():
            raise FileNotFoundError(f"model {name!r} must be trained first: no saved model at {model_dir} "
                                    f"(run `dvc repro train@{name}`)")
        return cls.load(model_dir, params)
    return cls(params)
