"""Every model: inference rate and growth, memory; deep models: training steps, FLOPs, growth in K."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from probav.bench.common import (
    MB, current_rss_mb, growth_exponent, maxrss_mb, measure, merge_settings, optional_module,
    per_item_ms, rate, RssPeak, skipped, summary, timing_options,
)
from probav.bench.data import call_with


# --------------------------------------------------------------------------- models

def _bench_scenes(work: Path, count: int) -> list:
    """``count`` copies of one scene of the bench archive: the one with the median frame count, so
    that growth curves show the cost of more scenes, not of different ones."""
    from probav.scene import read_scene, scene_dirs

    dirs = scene_dirs(work / "raw", "train")
    if not dirs:
        raise FileNotFoundError(f"no scenes under {work / 'raw'} (the simulator part did not run)")
    scenes = sorted((read_scene(d) for d in dirs[:16]), key=lambda sc: (sc.frames, sc.name))
    typical = scenes[len(scenes) // 2]
    return [typical] * max(count, 1)


def _uncached(scenes: list) -> Iterator:
    """The scenes with their caches emptied as each is reached: a ``Scene`` keeps work done on it in
    ``extra`` (e.g. its registration, which shift_and_add and the reference estimator share), so
    predicting the same object again would be flattered; a user predicts each scene once."""
    for scene in scenes:
        scene.extra.clear()
        yield scene


def _inference_growth(predict_many: Callable[[list], object], scenes: list, sizes: list[int],
                      settings: dict) -> dict:
    rows = []
    for n in sizes:
        subset = scenes[:n]
        times = measure(lambda: predict_many(subset),
                        **timing_options(settings, warmup=0, budget_s=settings["models"]["inference_budget_s"]))
        rows.append({"scenes": n, "seconds": summary(times), "ms_per_scene": per_item_ms(times, n),
                     "scenes_per_s": rate(times, n)})
    return {"rows": rows, "exponent": growth_exponent([r["scenes"] for r in rows],
                                                       [r["seconds"]["median"] for r in rows])}


def bench_classical_model(name: str, settings: dict, params: dict, work: Path) -> dict:
    """Inference scenes/s, its growth and peak memory of a classical (untrained) model."""
    import tracemalloc

    from probav.models.registry import model_class

    cls = model_class(name)
    if cls.trainable:
        return skipped(f"{name} is trainable: measured as a deep model")
    model = cls(params)
    sizes = sorted({int(n) for n in settings["models"]["growth"] if int(n) >= 1}) or [1]
    scenes = _bench_scenes(work, max(sizes))
    model.predict(scenes[0])  # warm-up (imports)
    growth = _inference_growth(lambda s: list(model.predict_many(_uncached(s))), scenes, sizes, settings)
    with RssPeak() as rss:
        model.predict(next(_uncached(scenes[:1])))
    tracemalloc.start()
    model.predict(next(_uncached(scenes[:1])))
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    last = growth["rows"][-1]
    earlier = {}
    if name in (settings["models"].get("earlier") or {}):
        from probav.bench.history import bench_earlier_version
        from probav.scene import scene_dirs

        dirs = scene_dirs(work / "raw", "train")[:max(int(settings["models"]["earlier_scenes"]), 1)]
        earlier["earlier"] = bench_earlier_version(name, str(settings["models"]["earlier"][name]), settings,
                                                   params, work, dirs)
    return {**earlier, "kind": "classical", "parameters": 0, "inference": {"scenes": last["scenes"],
            "scenes_per_s": last["scenes_per_s"], "ms_per_scene": last["ms_per_scene"]},
            "inference_growth": growth,
            "peak_memory_mb": {"tracemalloc_one_scene": traced / MB, "rss_one_scene": rss.delta_mb,
                               "note": "one scene's prediction, apart from the timings: numpy allocations "
                                       "(tracemalloc) and resident memory above the start (sampled)"},
            "scene": {"name": scenes[0].name, "frames": int(scenes[0].frames)}}


# ---- deep models

def _normalisation(scene) -> tuple[float, float]:
    """Mean and std of the clear LR values of a scene ([0,1] units): stands in for the training
    data's statistics (``probav.training.clear_statistics``), which only scale the inputs."""
    values = scene.lr[scene.qm].astype(np.float64) / 65535.0
    return (float(values.mean()), float(max(values.std(), 1e-4))) if values.size else (0.1, 0.05)


def _with_frames(params: dict, frames: int) -> dict:
    return merge_settings(params, {"input": {"frames": int(frames)}})


class DeepSetup:
    """An untrained deep model ready to time: ``network`` (the saved network), ``trainer`` (the
    compiled Keras model that training fits: the network itself, or e.g. a GAN wrapper), ``model``
    (the ``DeepModel``, None on the fallback path) and how each was obtained."""

    def __init__(self, name: str, params: dict, frames: int, norm: tuple[float, float]):
        from probav.models.registry import model_class

        self.name, self.frames = name, int(frames)
        params = _with_frames(params, frames)
        self.model, self.loss = None, None
        try:
            cls = model_class(name)
        except KeyError as err:
            cls, reason = None, str(err)
        if cls is not None and hasattr(cls, "build_network") and hasattr(cls, "compile_training_model"):
            self._from_deep_model(cls, name, params, norm)
        else:
            self._fallback(name, params, reason if cls is None else f"{cls.__name__} is not a DeepModel")

    def _from_deep_model(self, cls, name, params, norm):
        """Exactly as ``probav.training.train`` builds and compiles it."""
        from probav.losses import make_loss
        from probav.metrics.tf_score import CPSNR
        from probav.training import make_optimizer, train_settings

        self.model = cls(params)
        if hasattr(self.model, "set_normalisation"):
            self.model.set_normalisation(*norm)
        self.network = self.model.build()
        if getattr(self.model, "uses_prior", False):
            from probav.data.tfrecords import prior_spec

            # Inference then makes each scene's prior as the pipeline does: part of the model's cost.
            self.model.set_prior(prior_spec(params) or {"model": "shift_and_add", "classical": {}})
        settings = train_settings(params, name)
        self.loss = make_loss(settings["loss"])
        self.trainer = self.model.compile_training_model(make_optimizer(settings, 1000), self.loss,
                                                         [CPSNR(name="cpsnr")])
        self.built_by = f"{cls.__module__}.{cls.__name__}.build_network"
        self.compiled_by = (f"{cls.__name__}.compile_training_model (as probav.training.train: Adam, "
                            f"loss {settings['loss']}, cPSNR metric)")

    def _fallback(self, name, params, reason):
        import keras

        module = optional_module(f"probav.models.{name}")
        builder = getattr(module, f"build_{name}", None) if module else None
        if builder is None:
            raise LookupError(f"{reason}; and no build_{name} in probav/models/{name}.py")
        cfg = params.get("model") or {}
        available = {k: v for k, v in {"frames": self.frames, "blocks": cfg.get("blocks"),
                                       "filters": cfg.get("filters")}.items() if v is not None}
        self.network = self.trainer = call_with(builder, available)
        try:
            from probav.losses import make_loss

            self.loss, how = make_loss("l1"), "shift-aware l1 (probav.losses)"
        except ImportError:
            self.loss, how = _masked_l1, "masked l1"
        self.trainer.compile(optimizer=keras.optimizers.Adam(1e-3), loss=self.loss)
        self.built_by = f"{builder.__module__}.{builder.__name__} (fallback: {reason})"
        self.compiled_by = f"bench fallback: Adam + {how}"


def _masked_l1(y_true, y_pred):
    import tensorflow as tf

    mask = y_true[..., 1:2]
    return tf.reduce_sum(tf.abs(y_true[..., 0:1] - y_pred) * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


def _input_names(setup: DeepSetup) -> list[str]:
    return [t.name for t in setup.network.inputs]


def _random_batch(batch: int, frames: int, patch: int, seed: int = 0, names=("lr", "qm", "frame_mask")):
    """One batch of the training input contract (the inputs in ``names``): LR-like values, 85% clear
    QMs, an LR-like prior, HR + SM target."""
    rng = np.random.default_rng(seed)
    inputs = {"lr": rng.uniform(0.02, 0.2, (batch, frames, patch, patch)).astype(np.float32),
              "qm": (rng.uniform(size=(batch, frames, patch, patch)) > 0.15).astype(np.float32),
              "frame_mask": np.ones((batch, frames), np.float32),
              "reference": np.tile(np.eye(1, frames, dtype=np.float32), (batch, 1)),
              "prior": rng.uniform(0.02, 0.2, (batch, 3 * patch, 3 * patch)).astype(np.float32)}
    inputs = {k: v for k, v in inputs.items() if k in names}
    target = np.stack([rng.uniform(0.02, 0.2, (batch, 3 * patch, 3 * patch)),
                       (rng.uniform(size=(batch, 3 * patch, 3 * patch)) > 0.1)], axis=-1).astype(np.float32)
    return inputs, target


def _specs(batch: int, frames: int, patch: int, names=("lr", "qm", "frame_mask")):
    import tensorflow as tf

    x = {"lr": tf.TensorSpec((batch, frames, patch, patch), tf.float32),
         "qm": tf.TensorSpec((batch, frames, patch, patch), tf.float32),
         "frame_mask": tf.TensorSpec((batch, frames), tf.float32),
         "reference": tf.TensorSpec((batch, frames), tf.float32),
         "prior": tf.TensorSpec((batch, 3 * patch, 3 * patch), tf.float32)}
    x = {k: v for k, v in x.items() if k in names}
    return x, tf.TensorSpec((batch, 3 * patch, 3 * patch, 2), tf.float32)


def graph_flops(fn: Callable, *specs) -> float | None:
    """FLOPs of one call of ``fn`` traced at fixed shapes, from TensorFlow's profiler (ops without a
    registered count, e.g. sorts and gathers, count as 0: a slight underestimate)."""
    import tensorflow as tf

    graph = tf.function(fn).get_concrete_function(*specs).graph
    opts = (tf.compat.v1.profiler.ProfileOptionBuilder(tf.compat.v1.profiler.ProfileOptionBuilder.float_operation())
            .with_empty_output().build())
    info = tf.compat.v1.profiler.profile(graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=opts)
    return float(info.total_float_ops) if info is not None else None


def train_step_flops(setup: DeepSetup, batch: int, patch: int) -> float | None:
    """FLOPs of one training step: the trainer's own ``train_step`` (forward, loss, gradients,
    optimizer update, metrics; a GAN's discriminator too)."""
    x, y = _specs(batch, setup.frames, patch, _input_names(setup))
    return graph_flops(lambda a, b: setup.trainer.train_step((a, b)), x, y)


def forward_flops(network, frames: int, side: int = 128, batch: int = 1) -> float | None:
    x, _ = _specs(batch, frames, side, [t.name for t in network.inputs])
    return graph_flops(lambda a: network(a, training=False), x)


def _tf_memory() -> dict | None:
    import tensorflow as tf

    for device in ("GPU:0", "CPU:0"):
        try:
            info = tf.config.experimental.get_memory_info(device)
            return {"device": device, "peak_mb": info["peak"] / MB}
        except (ValueError, RuntimeError):
            continue
    return None


def _time_train_steps(setup: DeepSetup, batch: int, patch: int, steps: int, timing: dict) -> tuple[list[float], float]:
    """Seconds per training step (one value per repeat of ``steps`` steps, on one fixed random batch)
    and the first step's seconds (it traces and compiles the train function)."""
    x, y = _random_batch(batch, setup.frames, patch, names=_input_names(setup))
    start = time.perf_counter()
    setup.trainer.train_on_batch(x, y)
    first = time.perf_counter() - start
    setup.trainer.train_on_batch(x, y)

    def run():
        for _ in range(steps):
            setup.trainer.train_on_batch(x, y)
    return [t / steps for t in measure(run, warmup=0, **timing)], first


def _deep_predictor(setup: DeepSetup, params: dict) -> tuple[Callable[[list], object], str]:
    """predict_many(scenes) of the untrained model: the DeepModel's own inference (frame selection by
    the pipeline's select_frames, self-ensemble); without the pipeline module, its predict_arrays on
    the K clearest frames; on the fallback path, the bare network on the K clearest frames."""
    model, frames = setup.model, setup.frames

    def clearest(scene):
        order = np.argsort(-scene.clearance, kind="stable")[:frames]
        lr = np.zeros((frames, 128, 128), np.float32)
        qm = np.zeros_like(lr)
        mask = np.zeros(frames, np.float32)
        lr[:len(order)] = scene.lr[order] / 65535.0
        qm[:len(order)] = scene.qm[order]
        mask[:len(order)] = 1
        return lr, qm, mask

    if model is not None:
        pipeline = optional_module("probav.data.pipeline")
        if pipeline is not None and hasattr(pipeline, "select_frames"):
            return (lambda s: list(model.predict_many(_uncached(s)))), f"{type(model).__name__}.predict_many"
        return ((lambda s: [model.predict_arrays(*clearest(sc)) for sc in s]),
                f"{type(model).__name__}.predict_arrays on the K clearest frames (probav.data.pipeline not there yet)")

    import tensorflow as tf

    network = setup.network
    forward = tf.function(lambda x: network(x, training=False), reduce_retracing=True)

    def predict_many(scenes):
        out = []
        for scene in scenes:
            lr, qm, mask = clearest(scene)
            out.append(np.asarray(forward({"lr": lr[None], "qm": qm[None], "frame_mask": mask[None]})))
        return out
    return predict_many, "bare network on the K clearest frames, batch 1"


def bench_deep_model(name: str, settings: dict, params: dict, work: Path) -> dict:
    """Parameters, inference, training steps/s, FLOPs/step and K growth of an untrained deep model."""
    import tensorflow as tf

    inp = params.get("input") or {}
    frames, batch, patch = int(inp.get("frames", 9)), int(inp.get("batch_size", 16)), int(inp.get("patch_size", 32))
    sizes = sorted({int(n) for n in settings["models"]["growth"] if int(n) >= 1}) or [1]
    scenes = _bench_scenes(work, max(sizes))
    norm = _normalisation(scenes[0])
    base_rss = current_rss_mb()
    tf.keras.utils.set_random_seed(int(params.get("seed", 0)))
    setup = DeepSetup(name, params, frames, norm)
    network = setup.network
    out: dict = {"kind": "deep", "built_by": setup.built_by, "parameters": int(network.count_params()),
                 "frames": frames, "batch_size": batch, "patch_size": patch,
                 "self_ensemble": int(getattr(setup.model, "self_ensemble", 0) or 0)}

    # Inference first (so that its memory peak is its own): whole 128×128 scenes.
    predict_many, how = _deep_predictor(setup, params)
    out["inference_by"] = how
    predict_many(scenes[:1])  # warm-up: traces the inference function
    growth = _inference_growth(predict_many, scenes, sizes, settings)
    last = growth["rows"][-1]
    out["inference"] = {"scenes": last["scenes"], "scenes_per_s": last["scenes_per_s"],
                        "ms_per_scene": last["ms_per_scene"]}
    out["inference_growth"] = growth
    with RssPeak() as rss_infer:
        predict_many(scenes[:1])
    try:
        members = max(out["self_ensemble"], 1) if setup.model is not None else 1
        fwd = forward_flops(network, frames, 128, 1)
        out["inference"]["flops_per_scene"] = None if fwd is None else fwd * members
    except Exception as err:  # the profiler is best effort
        out["inference"]["flops_per_scene"] = None
        out["inference"]["flops_error"] = f"{type(err).__name__}: {err}"

    # Training at the default patch and batch size.
    steps = max(int(settings["models"]["train_steps"]), 1)
    step_s, first = _time_train_steps(setup, batch, patch, steps, timing_options(settings))
    x, y = _random_batch(batch, frames, patch, names=_input_names(setup))
    with RssPeak() as rss_train:
        setup.trainer.train_on_batch(x, y)
    out["train"] = {"compiled_by": setup.compiled_by, "first_step_s": first,
                    "steps_per_s": summary([1 / t for t in step_s]), "step_ms": summary([1e3 * t for t in step_s]),
                    "steps_per_repeat": steps, "examples_per_s": summary([batch / t for t in step_s])}
    if setup.trainer is not network:
        out["train"]["trainer"] = type(setup.trainer).__name__
        out["train"]["trainer_parameters"] = int(sum(np.prod(v.shape) for v in setup.trainer.weights))
    try:
        out["train"]["flops_per_step"] = train_step_flops(setup, batch, patch)
    except Exception as err:
        out["train"]["flops_per_step"] = None
        out["train"]["flops_error"] = f"{type(err).__name__}: {err}"
    out["peak_memory_mb"] = {"inference_one_scene": rss_infer.delta_mb, "train_one_step": rss_train.delta_mb,
                             "model_peak": None if base_rss is None else max(maxrss_mb() - base_rss, 0.0),
                             "note": "inference_one_scene / train_one_step: resident memory above the "
                                     "start of one scene's prediction / one training step once traced "
                                     "(sampled, apart from the timings); model_peak: the process's peak "
                                     "(ru_maxrss) above its resident memory after imports, before the "
                                     "network was built (traces, inference and training at default "
                                     "K; the K-growth runs come after)"}
    tf_mem = _tf_memory()
    if tf_mem:
        out["peak_memory_mb"]["tf_allocator"] = tf_mem
    del setup, network

    # Growth: training step time against K (the default K is the measurement above).
    rows = []
    cfg = settings["models"]
    timing = timing_options(settings, repeats=cfg["frames_repeats"], budget_s=cfg["frames_budget_s"])
    for k in sorted({int(k) for k in cfg["frames"]} | {frames}):
        if k == frames:
            rows.append({"frames": k, "step_ms": out["train"]["step_ms"]})
            continue
        try:
            tf.keras.backend.clear_session()
            setup_k = DeepSetup(name, params, k, norm)
            times, _ = _time_train_steps(setup_k, batch, patch, max(int(cfg["frames_steps"]), 1), timing)
            rows.append({"frames": k, "step_ms": summary([1e3 * t for t in times])})
            del setup_k
        except Exception as err:
            rows.append({"frames": k, "error": f"{type(err).__name__}: {err}"})
        finally:
            tf.keras.backend.clear_session()
    ok = [r for r in rows if "step_ms" in r]
    out["train_growth"] = {"rows": rows, "exponent": growth_exponent([r["frames"] for r in ok],
                                                                      [r["step_ms"]["median"] for r in ok])}
    return out


def bench_model(name: str, settings: dict, params: dict, work: Path) -> dict:
    from probav.models.registry import model_class

    deep = set(settings["models"]["deep"] if settings["models"]["deep"] is not None else params.get("deep_models") or [])
    if name in deep:
        if optional_module(f"probav.models.{name}") is None:
            return skipped(f"probav/models/{name}.py does not exist yet")
        return bench_deep_model(name, settings, params, work)
    try:
        model_class(name)
    except KeyError as err:
        return skipped(str(err))
    return bench_classical_model(name, settings, params, work)


