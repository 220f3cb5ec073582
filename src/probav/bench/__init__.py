"""Benchmarks: how fast each part of the project runs on this machine, and how it grows.

``run_bench(params, quick=False)`` runs the parts below and returns one JSON-able dict (the stage
``stages/bench.py`` writes it to ``metrics/bench.json`` and ``markdown_table`` to ``reports/bench.md``).
One module per thing measured: ``hardware``, ``scoring``, ``data`` (simulator, check, TFRecords, input
pipeline), ``models``; ``common`` holds the settings and the timing helpers, ``run`` runs the parts
(each in its own process) and ``summary`` derives the fractions of the hardware peaks and the table.

- ``meta``: CPU, cores, versions, settings, load average before/after, duration.
- ``hardware``: the yardsticks — memory bandwidth (numpy copy of a large array, bytes read +
  written), numpy float32/float64 matmul GFLOP/s, the nominal float32 peak (cores × clock × FLOPs
  per cycle), and under ``hardware.tensorflow`` TensorFlow's float32 matmul and 3×3 conv GFLOP/s.
- ``scorer``: ``probav.bench.scoring.benchmark_scorer`` (the compiled ``shifted_cpsnr_batch`` against
  the 49-window loop ``shifted_cpsnr_naive``, same scenes, same run, their ratio) plus scenes/s,
  bytes moved per scene and ``growth`` (time against the number of scenes).
- ``simulator``: ``compute`` (``simulate_scene`` alone, one process) and ``generate`` (end to end:
  PNGs, norm.csv) per worker count: scenes/s, MB/s of PNG written. Its archive feeds the next parts.
- ``check`` / ``tfrecords``: ``check_scenes`` and the TFRecord build (``write_tfrecords``) per
  worker count (1, 2 and more where the machine has the cores): scenes/s, MB/s of PNG read, of
  decoded arrays (and of TFRecords written). The archive is enlarged to ``bench.data.scenes`` by
  copying scenes; the stages' own thresholds below which they do not start a pool are lifted.
- ``pipeline``: ``training_dataset`` batches/s and examples/s (after the first batch, timed apart).
- ``models.<name>``: every model of params.yaml ``models`` + ``deep_models``, each in its own
  process. All: ``inference`` (scenes/s at the largest size), ``inference_growth`` (sizes
  ``bench.models.growth``, copies of one typical scene), ``parameters``, ``peak_memory_mb``.
  Deep models (untrained, built and compiled exactly as ``probav.training.train`` does): ``train``
  (steps/s on a fixed batch at the default batch and patch size, first step = trace time, FLOPs
  per step from TensorFlow's profiler on the trainer's own ``train_step``: forward, loss,
  gradients, optimizer, metrics, a GAN's discriminator), ``inference.flops_per_scene`` and
  ``train_growth`` (step time against K, ``bench.models.frames``).
- ``growth``: the growth series gathered (scorer, inference per model, training per model) with
  their exponent, the slope of log(time) against log(size).
- ``derived``: how far from the hardware each part is — the scorer's GB/s against the memory
  bandwidth, training/inference GFLOP/s against the measured matmul and conv peaks and the
  nominal peak — and whether training is input-bound (pipeline batches/s against steps/s).

Every timing is repeated (``bench.repeats`` times; fewer, but at least ``min_repeats``, once a
measurement has taken ``budget_s``) and summarised as ``{"median", "min", "max", "q1", "q3",
"repeats"}``; rates are computed per repeat, so a rate's ``min`` comes from the slowest repeat.
Hardware peaks in ``derived`` use the best repeat (a busy machine only slows a repeat down).
Timings on a shared machine are noisy: compare runs with ``meta.load_before`` / ``load_after`` in mind.

A measurement that cannot run (a module not written yet, a model that fails to build) is recorded
as ``{"skipped": reason}`` or ``{"error": reason}`` and the bench goes on.

Parts run in subprocesses (``python -m probav.bench CONFIG.json OUT.json PART [PART …]``): one
per part, so that memory peaks are separate; with ``quick``, two in all (without and with
TensorFlow) to keep it fast. Settings: ``DEFAULTS`` ← params.yaml ``bench:`` ← ``QUICK``.
"""
from __future__ import annotations

from probav.bench.run import ALL_PARTS, run_bench, run_part
from probav.bench.summary import markdown_table

__all__ = ["ALL_PARTS", "markdown_table", "run_bench", "run_part"]
