"""The yardsticks: memory bandwidth, matmul and conv GFLOP/s, the nominal float32 peak."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from probav.bench.common import MB, measure, rate, timing_options


# --------------------------------------------------------------------------- hardware

def nominal_peak_gflop_s() -> dict | None:
    """Float32 FLOP/s the cores could do at most: cores × clock (/proc/cpuinfo) × FLOPs per cycle
    (2 FMA units × 8 lanes × 2 with AVX2+FMA, 2 × 16 × 2 with AVX-512, else 8 per cycle)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    mhz = [float(line.split(":")[1]) for line in text.splitlines() if line.startswith("cpu MHz")]
    flags = next((line.split(":")[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    if not mhz:
        return None
    per_cycle = 64 if "avx512f" in flags else 32 if ("avx2" in flags and "fma" in flags) else 8
    cores = os.cpu_count() or 1
    return {"gflop_s": cores * max(mhz) / 1e3 * per_cycle, "cores": cores, "mhz": max(mhz),
            "flop_per_cycle": per_cycle,
            "note": "cores × the clock /proc/cpuinfo reports × float32 FLOPs per cycle (turbo ignored)"}


def bench_hardware(settings: dict) -> dict:
    """Memory bandwidth (numpy copy), numpy matmul GFLOP/s and the nominal float32 peak."""
    hw = settings["hardware"]
    n_bytes = int(hw["copy_mb"] * MB)
    src = np.ones(n_bytes // 8)
    dst = np.empty_like(src)
    copy_times = measure(lambda: np.copyto(dst, src), **timing_options(settings, budget_s=None))
    out = {"copy_mb": n_bytes / MB,
           "memory_bandwidth_gb_s": rate(copy_times, 2 * src.nbytes / 1e9),  # read + write
           "note": "bandwidth counts bytes read + written by np.copyto of a large float64 array"}
    del src, dst
    n = int(hw["matmul_n"])
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        a = rng.standard_normal((n, n)).astype(dtype)
        b = rng.standard_normal((n, n)).astype(dtype)
        times = measure(lambda: a @ b, **timing_options(settings, budget_s=None))
        out[f"numpy_matmul_{np.dtype(dtype).name}_gflop_s"] = rate(times, 2 * n ** 3 / 1e9)
    out["matmul_n"] = n
    out["nominal_peak"] = nominal_peak_gflop_s()
    return out


def bench_hardware_tf(settings: dict) -> dict:
    """TensorFlow float32 matmul and 3×3 conv (32→32 channels) GFLOP/s: the peaks for the networks."""
    import tensorflow as tf

    hw = settings["hardware"]
    n = int(hw["matmul_n"])
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    matmul = tf.function(lambda: tf.matmul(a, b))
    out = {"matmul_n": n,
           "tf_matmul_float32_gflop_s": rate(measure(lambda: matmul().numpy(), **timing_options(settings, budget_s=None)),
                                             2 * n ** 3 / 1e9)}
    batch, side, channels = int(hw["conv_batch"]), 96, 32
    x = tf.random.normal((batch, side, side, channels))
    w = tf.random.normal((3, 3, channels, channels))
    conv = tf.function(lambda: tf.nn.conv2d(x, w, 1, "SAME"))
    flops = 2 * batch * side * side * 9 * channels * channels
    out["tf_conv3x3_float32_gflop_s"] = rate(measure(lambda: conv().numpy(), **timing_options(settings, budget_s=None)),
                                             flops / 1e9)
    out["conv_shape"] = [batch, side, side, channels]
    out["tf_threads"] = {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                         "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}
    return out


