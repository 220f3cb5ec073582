"""The tf.data input of the networks: frame selection, training patches with augmentation, dev scenes.

Contract (``docs/architecture.md``, training input): batches ``(inputs, target)`` with
``inputs = {"lr": (B,K,P,P) float32 in [0,1], "qm": (B,K,P,P) float32 0/1, "frame_mask": (B,K) float32,
"reference": (B,K) float32, "prior": (B,3P,3P) float32 in [0,1]}`` and ``target`` (B,3P,3P,2) float32:
HR in [0,1] (channel 0) and SM 0/1 (channel 1). ``reference`` is how likely each chosen frame is the
reference (the LR frame of the HR's pass, ``probav.reference``): 1 on the labelled one in the ref track,
the estimator's probabilities in the challenge track. ``prior`` is the classical model's prediction
stored in the records (``tfrecords.prior``) in the same track (zeros where the records have none);
networks take the inputs they declare (``probav.training`` drops the others).

- ``select_frames(lr, qm, k, mode, seed, reference)``: the one frame selection of the project (the
  pipeline and the deep models' inference). The most likely reference frame (``reference`` (T,)
  weights) always comes first. The others: ``top_k``, the clearest (fraction of QM-clear pixels;
  ties to the lower frame index); ``weighted``, sampled without replacement with probability ∝
  clearance (Gumbel top-k on ``tf.random.stateless_uniform``, so a seed gives one draw). Either way
  they come clearest first, then zero frames up to k where the scene has fewer, ``frame_mask`` 0 on
  those; the frames' reference weights come with them.
- Track of a training patch: with probability ``input.reference_given`` a labelled scene's patch sees
  its labelled reference (one-hot, and the ref-track prior), else the estimator's probabilities (and
  the challenge-track prior): one network serves both tracks. Validation follows ``reference.track``.
- ``training_dataset(files, params, seed, shard)``: records shuffled (files and a buffer of
  ``input.shuffle_buffer`` scenes, seeded; ``shard`` = (workers, index): this worker's share of the
  file stream, ``file_stream``), each scene → ``input.patches_per_scene`` patches
  (decompressing and parsing a scene costs far more than cutting a patch), each an LR patch of
  ``input.patch_size`` P with its aligned HR (and prior) patch (LR pixel (i, j) ↔ HR pixels 3i…3i+2, 3j…3j+2)
  whose HR clearance (SM) is at least ``input.min_patch_clearance``: ``input.patch_tries`` random
  positions are drawn and the first good one is kept; without one the patch is dropped (a stream
  that drops ``MAX_CONSECUTIVE_REJECTS`` in a row fails with an error that says which setting to
  change, rather than searching forever). Frames chosen per patch by ``input.selection`` on the
  whole-frame clearance (as at inference). Augmentation (``input.augment``): one of the 8
  flips/90° rotations applied to LR, QM, HR and SM together, and a random order of the real frames
  after the first (the reference stays first, padding last; the reference weights move with their
  frames). Every random choice is a stateless op keyed by ``seed``, the scene's index
  in the (deterministic) stream and the patch's index: the same seed gives the same batches.
  Patches are shuffled in a small seeded buffer (so a batch mixes scenes), repeated forever,
  batched by ``input.batch_size`` (whole batches), prefetched.
- ``evaluation_dataset(files, params)``: the scenes with HR, whole (P = 128), ``top_k``, no
  augmentation, in file order, in the track ``reference.track``, batches of ``input.eval_batch_size``;
  one pass.
"""
from __future__ import annotations

import hashlib
import os

import tensorflow as tf

from probav.data.tfrecords import COMPRESSION, parse_example
from probav.scene import LR_SIZE, SCALE

MODES = ("top_k", "weighted")
DEFAULTS = {"frames": 9, "selection": "top_k", "patch_size": 32, "min_patch_clearance": 0.9, "batch_size": 16,
            "augment": True, "patch_tries": 16, "patches_per_scene": 4, "shuffle_buffer": 64, "eval_batch_size": 1,
            "reference_given": 0.5}
# A training stream that drops this many scenes in a row (no clear-enough patch) stops with an error
# instead of searching forever.
MAX_CONSECUTIVE_REJECTS = 2000
INTERLEAVE = 4


def input_settings(params: dict | None) -> dict:
    """The ``input`` group with defaults, checked."""
    cfg = {**DEFAULTS, **((params or {}).get("input") or {})}
    cfg["frames"] = int(cfg["frames"])
    cfg["patch_size"] = int(cfg["patch_size"])
    cfg["batch_size"] = int(cfg["batch_size"])
    cfg["eval_batch_size"] = int(cfg["eval_batch_size"])
    cfg["patch_tries"] = int(cfg["patch_tries"])
    cfg["shuffle_buffer"] = int(cfg["shuffle_buffer"])
    cfg["patches_per_scene"] = int(cfg["patches_per_scene"])
    cfg["min_patch_clearance"] = float(cfg["min_patch_clearance"])
    cfg["augment"] = bool(cfg["augment"])
    cfg["reference_given"] = float(cfg["reference_given"])
    cfg["track"] = str(((params or {}).get("reference") or {}).get("track", "challenge"))
    if cfg["frames"] < 1:
        raise ValueError(f"input.frames must be at least 1, got {cfg['frames']}")
    if cfg["selection"] not in MODES:
        raise ValueError(f"input.selection must be one of {MODES}, got {cfg['selection']!r}")
    if not 1 <= cfg["patch_size"] <= LR_SIZE:
        raise ValueError(f"input.patch_size must be in 1…{LR_SIZE}, got {cfg['patch_size']}")
    if not 0.0 <= cfg["reference_given"] <= 1.0:
        raise ValueError(f"input.reference_given must be in [0, 1], got {cfg['reference_given']}")
    if not 0.0 <= cfg["min_patch_clearance"] <= 1.0:
        raise ValueError(f"input.min_patch_clearance must be in [0, 1], got {cfg['min_patch_clearance']}")
    for key in ("batch_size", "eval_batch_size", "patch_tries", "patches_per_scene", "shuffle_buffer"):
        if cfg[key] < 1:
            raise ValueError(f"input.{key} must be at least 1, got {cfg[key]}")
    return cfg


# ----------------------------------------------------------------------------- seeds

def _seed_tensor(seed) -> tf.Tensor:
    """A stateless-op seed, shape (2,) int64, from an int or a (2,) tensor/array."""
    if isinstance(seed, (int,)) or (hasattr(seed, "shape") and tuple(getattr(seed, "shape")) == ()):
        seed = tf.cast(seed, tf.int64)
        return tf.stack([seed, tf.constant(0x5EED, tf.int64)])
    return tf.cast(tf.reshape(seed, [2]), tf.int64)


def _sub_seed(seed: int, name: str) -> int:
    """A Python int seed for a tf.data op (shuffle), derived from ``seed`` and a name."""
    return int.from_bytes(hashlib.sha256(f"{int(seed)}/{name}".encode()).digest()[:7], "little")


# ----------------------------------------------------------------------------- frame selection

def _to_float_lr(lr: tf.Tensor) -> tf.Tensor:
    if lr.dtype.is_integer:
        return tf.cast(lr, tf.float32) / 65535.0
    return tf.cast(lr, tf.float32)


def _to_float_mask(qm: tf.Tensor) -> tf.Tensor:
    if qm.dtype == tf.bool:
        return tf.cast(qm, tf.float32)
    return tf.cast(tf.not_equal(qm, tf.zeros([], qm.dtype)), tf.float32)


def frame_order(qm, k: int, mode: str = "top_k", seed=None, reference=None) -> tuple[tf.Tensor, tf.Tensor]:
    """Indices (n,) of the chosen frames and n = min(T, k): the most likely reference first (when
    ``reference`` (T,) weights are given), then the others clearest first. ``qm`` (T,H,W)."""
    if mode not in MODES:
        raise ValueError(f"frame selection mode must be one of {MODES}, got {mode!r}")
    qm = _to_float_mask(tf.convert_to_tensor(qm))
    clear = tf.reduce_mean(qm, axis=[1, 2])
    t = tf.shape(clear)[0]
    n = tf.minimum(t, k)
    if mode == "top_k":
        keys = clear
    else:
        if seed is None:
            raise ValueError("weighted frame selection needs a seed")
        u = tf.random.stateless_uniform([t], seed=_seed_tensor(seed), minval=1e-12, maxval=1.0, dtype=tf.float32)
        gumbel = -tf.math.log(-tf.math.log(u))
        keys = tf.math.log(clear) + gumbel      # log 0 = -inf: frames with no clear pixel come last
    order_keys = clear
    if reference is not None:
        first = tf.cast(tf.argmax(tf.convert_to_tensor(reference, tf.float32)), tf.int32)
        is_first = tf.equal(tf.range(t), first)
        keys = tf.where(is_first, tf.constant(float("inf"), keys.dtype), keys)
        order_keys = tf.where(is_first, 2.0, clear)
    chosen = tf.argsort(keys, direction="DESCENDING", stable=True)[:n]
    # The reference first, then clearest first among the chosen (for top_k this is already so).
    chosen = tf.gather(chosen, tf.argsort(tf.gather(order_keys, chosen), direction="DESCENDING", stable=True))
    return chosen, n


def _gather_pad(x: tf.Tensor, chosen: tf.Tensor, n: tf.Tensor, k: int) -> tf.Tensor:
    out = tf.gather(x, chosen)
    out = tf.pad(out, tf.concat([[[0, k - n]], tf.zeros([tf.rank(out) - 1, 2], tf.int32)], axis=0))
    return tf.ensure_shape(out, [k] + list(x.shape[1:]))


def select_frames(lr, qm, k: int, mode: str = "top_k", seed=None, reference=None):
    """K frames of one scene: ``(lr (K,H,W) float32 in [0,1], qm (K,H,W) float32 0/1, frame_mask (K,),
    reference (K,))``.

    ``lr`` (T,H,W) uint16 (divided by 65535) or float in [0,1]; ``qm`` (T,H,W) bool or 0/1; ``reference``
    (T,) weights of the frames as the reference (None: all 0). The most likely reference comes first,
    then ``top_k``: the clearest; ``weighted``: sampled ∝ clearance, seeded by ``seed`` (an int or a (2,)
    tensor), clearest first; where T < k, zero frames follow with ``frame_mask`` 0.
    Works on tensors in a tf.data map and eagerly on numpy arrays (returns eager tensors).
    """
    lr = tf.convert_to_tensor(lr)
    qm = tf.convert_to_tensor(qm)
    weights = tf.zeros([tf.shape(qm)[0]], tf.float32) if reference is None else \
        tf.cast(tf.convert_to_tensor(reference), tf.float32)
    chosen, n = frame_order(qm, k, mode, seed, None if reference is None else weights)
    lr_k = _gather_pad(_to_float_lr(lr), chosen, n, k)
    qm_k = _gather_pad(_to_float_mask(qm), chosen, n, k)
    ref_k = tf.ensure_shape(tf.pad(tf.gather(weights, chosen), [[0, k - n]]), [k])
    mask = tf.ensure_shape(tf.pad(tf.ones([n], tf.float32), [[0, k - n]]), [k])
    return lr_k, qm_k, mask, ref_k


# ----------------------------------------------------------------------------- patches, augmentation

def patch_position(sm, patch: int, min_clearance: float, tries: int, seed) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """LR position (y, x) of a patch whose HR window (3y…3y+3P, 3x…3x+3P) of ``sm`` (384,384) is at
    least ``min_clearance`` clear: the first of ``tries`` seeded random positions that is; ``ok`` false
    when none is (then y = x = 0)."""
    hr_patch = SCALE * patch
    counts = tf.cast(sm, tf.int32)
    integral = tf.pad(tf.cumsum(tf.cumsum(counts, axis=0), axis=1), [[1, 0], [1, 0]])
    pos = tf.random.stateless_uniform([tries, 2], seed=_seed_tensor(seed), minval=0,
                                      maxval=LR_SIZE - patch + 1, dtype=tf.int32)
    y0, x0 = SCALE * pos[:, 0], SCALE * pos[:, 1]
    y1, x1 = y0 + hr_patch, x0 + hr_patch

    def at(y, x):
        return tf.gather_nd(integral, tf.stack([y, x], axis=1))

    clear = at(y1, x1) - at(y0, x1) - at(y1, x0) + at(y0, x0)
    good = tf.cast(clear, tf.float64) >= min_clearance * hr_patch * hr_patch - 1e-9
    first = tf.argmax(tf.cast(good, tf.int32), output_type=tf.int32)
    ok = tf.reduce_any(good)
    y = tf.where(ok, pos[first, 0], 0)
    x = tf.where(ok, pos[first, 1], 0)
    return y, x, ok


def _rot90(x: tf.Tensor) -> tf.Tensor:
    """Rotate the last two axes by 90° (as ``np.rot90(x, 1, axes=(-2, -1))``)."""
    return tf.reverse(tf.linalg.matrix_transpose(x), axis=[-2])


def dihedral(x: tf.Tensor, t) -> tf.Tensor:
    """One of the 8 flips/rotations of the last two axes: transpose if t ≥ 4, then t mod 4 quarter turns."""
    t = tf.convert_to_tensor(t, tf.int32)
    x = tf.cond(t >= 4, lambda: tf.linalg.matrix_transpose(x), lambda: tf.identity(x))
    return tf.switch_case(t % 4, [lambda: tf.identity(x), lambda: _rot90(x),
                                  lambda: tf.reverse(x, axis=[-2, -1]),
                                  lambda: _rot90(tf.reverse(x, axis=[-2, -1]))])


def augment(lr, qm, mask, hr, sm, seed, prior=None, reference=None):
    """The same random flip/rotation of LR, QM (…,P,P) and HR, SM, prior (3P,3P), and a random order of
    the real frames after the first (the reference stays first; padding, ``mask`` 0, stays last; the
    ``reference`` weights move with their frames). Seeded by a (2,) seed. Returns ``(lr, qm, mask, hr,
    sm)``, then the prior and the reference weights when given."""
    seeds = tf.random.experimental.stateless_split(_seed_tensor(seed), 2)
    t = tf.random.stateless_uniform([], seed=seeds[0], minval=0, maxval=8, dtype=tf.int32)
    lr, qm, hr, sm = (dihedral(v, t) for v in (lr, qm, hr, sm))
    k = tf.shape(mask)[0]
    keys = tf.random.stateless_uniform([k], seed=seeds[1], dtype=tf.float32)
    keys = tf.where(mask > 0, keys, 2.0 + tf.cast(tf.range(k), tf.float32))
    keys = tf.where(tf.equal(tf.range(k), 0), -1.0, keys)
    order = tf.argsort(keys, stable=True)
    out = (tf.gather(lr, order), tf.gather(qm, order), tf.gather(mask, order), hr, sm)
    if prior is not None:
        out = (*out, dihedral(prior, t))
    if reference is not None:
        out = (*out, tf.gather(reference, order))
    return out


def _crop(x: tf.Tensor, y, x0, size: int) -> tf.Tensor:
    """(…, H, W) → (…, size, size) at (y, x0) of the last two axes."""
    rank = len(x.shape)
    begin = tf.concat([tf.zeros([rank - 2], tf.int32), tf.stack([y, x0])], axis=0)
    out = tf.slice(x, begin, tf.concat([tf.shape(x)[:-2], [size, size]], axis=0))
    return tf.ensure_shape(out, list(x.shape[:-2]) + [size, size])


def _track_inputs(example: dict, given) -> tuple[tf.Tensor, tf.Tensor]:
    """The (T,) reference weights and the (384,384) prior of a scene: the labelled reference (one-hot)
    and the ref-track prior when ``given`` and the scene is labelled, else the estimator's
    probabilities and the challenge-track prior."""
    given = tf.logical_and(given, example["reference"] >= 0)
    one_hot = tf.one_hot(tf.maximum(example["reference"], 0), example["frames"], dtype=tf.float32)
    weights = tf.where(given, one_hot, example["reference_probs"])
    prior = tf.where(tf.logical_and(given, example["has_prior_ref"]), example["prior_ref"], example["prior"])
    return weights, prior


def training_example(example: dict, cfg: dict, seed) -> tuple[dict, tf.Tensor, tf.Tensor]:
    """One parsed scene → ``(inputs, target, ok)`` of one patch (``ok`` false: no clear-enough patch)."""
    k, p = cfg["frames"], cfg["patch_size"]
    seeds = tf.random.experimental.stateless_split(_seed_tensor(seed), 4)
    given = tf.random.stateless_uniform([], seed=seeds[3]) < cfg["reference_given"]
    weights, full_prior = _track_inputs(example, given)
    chosen, n = frame_order(example["qm"], k, cfg["selection"], seeds[0], weights)
    y, x, ok = patch_position(example["sm"], p, cfg["min_patch_clearance"], cfg["patch_tries"], seeds[1])
    ok = tf.logical_and(ok, example["has_hr"])
    lr = _gather_pad(_to_float_lr(_crop(example["lr"], y, x, p)), chosen, n, k)
    qm = _gather_pad(_to_float_mask(_crop(example["qm"], y, x, p)), chosen, n, k)
    mask = tf.ensure_shape(tf.pad(tf.ones([n], tf.float32), [[0, k - n]]), [k])
    reference = tf.ensure_shape(tf.pad(tf.gather(weights, chosen), [[0, k - n]]), [k])
    hr = _to_float_lr(_crop(example["hr"], SCALE * y, SCALE * x, SCALE * p))
    sm = _to_float_mask(_crop(example["sm"], SCALE * y, SCALE * x, SCALE * p))
    prior = _to_float_lr(_crop(full_prior, SCALE * y, SCALE * x, SCALE * p))
    if cfg["augment"]:
        lr, qm, mask, hr, sm, prior, reference = augment(lr, qm, mask, hr, sm, seeds[2], prior, reference)
    target = tf.stack([hr, sm], axis=-1)
    return {"lr": lr, "qm": qm, "frame_mask": mask, "reference": reference, "prior": prior}, target, ok


def _file_list(files) -> list[str]:
    files = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    files = [str(f) for f in files]
    if not files:
        raise ValueError("no TFRecord files given (run the tfrecords stage)")
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: TFRecord file not found")
    return files


def _deterministic(dataset: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = True
    return dataset.with_options(options)


def file_stream(files, seed: int, shard: tuple[int, int] | None = None) -> tf.data.Dataset:
    """The endless stream of training file names: every round all files, in a seeded order reshuffled
    every round. ``shard`` = (workers W, index i), multi-worker training's sharding by file: this
    worker's occurrences i, i+W, i+2W, … of that stream (the same on every worker), so that each
    occurrence of a file is read by one worker, and over the rounds every worker reads every file
    (the files hold ``tfrecords.scenes_per_shard`` scenes but the last one fewer: a fixed split of the
    files would leave some worker far fewer scenes to cut patches from). Needs at least W files (with
    fewer, every round would give two workers the same file at once)."""
    files = _file_list(files)
    names = tf.data.Dataset.from_tensor_slices(files)
    names = names.shuffle(len(files), seed=_sub_seed(int(seed), "files"), reshuffle_each_iteration=True).repeat()
    if shard is not None:
        workers, index = (int(v) for v in shard)
        if not 0 <= index < workers or len(files) < workers:
            raise ValueError(f"cannot shard {len(files)} files between {workers} workers as worker {index}: "
                             f"sharding by file needs at least as many files as workers")
        names = names.shard(workers, index)
    return names


def training_dataset(files, params: dict, seed: int, shard: tuple[int, int] | None = None) -> tf.data.Dataset:
    """Endless, seeded ``(inputs, target)`` batches of augmented patches (module docstring); ``shard``
    = (workers, index): multi-worker training's share of the files of this worker (``file_stream``;
    its patches are drawn with seeds of its own)."""
    cfg = input_settings(params)
    files = _file_list(files)
    seed = int(seed)
    index = 0 if shard is None else int(shard[1])
    base = tf.constant([seed & 0x7FFFFFFFFFFFFFFF, 0x7A11 + index], tf.int64)
    records = file_stream(files, seed, shard)
    records = records.interleave(lambda f: tf.data.TFRecordDataset(f, compression_type=COMPRESSION),
                                 cycle_length=min(len(files), INTERLEAVE), block_length=1,
                                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    records = records.shuffle(cfg["shuffle_buffer"], seed=_sub_seed(seed, "records"), reshuffle_each_iteration=True)

    per_scene = cfg["patches_per_scene"]

    def make(index, serialized):
        """``per_scene`` patches of one scene (decompressing and parsing a scene is the cost)."""
        example = parse_example(serialized)
        scene_seed = tf.random.experimental.stateless_fold_in(base, index)
        patches = [training_example(example, cfg, tf.random.experimental.stateless_fold_in(scene_seed, j))
                   for j in range(per_scene)]
        inputs = {key: tf.stack([p[0][key] for p in patches]) for key in patches[0][0]}
        return inputs, tf.stack([p[1] for p in patches]), tf.stack([p[2] for p in patches])

    examples = records.enumerate().map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()

    limit = MAX_CONSECUTIVE_REJECTS
    message = (f"no training patch with HR clearance >= {cfg['min_patch_clearance']} found in {limit} scenes in a "
               f"row ({cfg['patch_tries']} positions each): lower input.min_patch_clearance or input.patch_size, "
               f"or raise input.patch_tries")

    def watch(rejected, element):
        inputs, target, ok = element
        rejected = tf.where(ok, tf.constant(0, tf.int64), rejected + 1)
        check = tf.debugging.assert_less(rejected, tf.constant(limit, tf.int64), message=message)
        with tf.control_dependencies([check]):
            ok = tf.identity(ok)
        return rejected, (inputs, target, ok)

    def keep(inputs, target, ok):
        return ok

    def drop_flag(inputs, target, ok):
        return inputs, target

    examples = examples.scan(tf.constant(0, tf.int64), watch)
    examples = examples.filter(keep).map(drop_flag)
    if per_scene > 1:   # spread the patches of a scene over several batches
        examples = examples.shuffle(2 * per_scene * cfg["batch_size"], seed=_sub_seed(seed, "patches"),
                                    reshuffle_each_iteration=True)
    batches = examples.batch(cfg["batch_size"], drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return _deterministic(batches)


def evaluation_example(example: dict, k: int, track: str = "challenge") -> tuple[dict, tf.Tensor]:
    """One parsed scene, whole, in ``track``: the reference first, then the K−1 clearest frames, the
    prior and the (384,384,2) target."""
    weights, prior = _track_inputs(example, tf.constant(track == "ref"))
    lr, qm, mask, reference = select_frames(example["lr"], example["qm"], k, "top_k", reference=weights)
    target = tf.stack([_to_float_lr(example["hr"]), _to_float_mask(example["sm"])], axis=-1)
    return {"lr": lr, "qm": qm, "frame_mask": mask, "reference": reference, "prior": _to_float_lr(prior)}, target


def evaluation_dataset(files, params: dict, batch_size: int | None = None) -> tf.data.Dataset:
    """The scenes with HR of ``files`` (dev), whole, top_k, no augmentation, in file order, in the track
    ``reference.track``; one pass, batches of ``batch_size`` (default ``input.eval_batch_size``)."""
    cfg = input_settings(params)
    files = _file_list(files)
    k = cfg["frames"]
    scenes = tf.data.TFRecordDataset(files, compression_type=COMPRESSION).map(
        parse_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    def with_hr(example):
        return example["has_hr"]

    def whole(example):
        return evaluation_example(example, k, cfg["track"])

    examples = scenes.filter(with_hr).map(whole, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    batches = examples.batch(int(batch_size or cfg["eval_batch_size"])).prefetch(tf.data.AUTOTUNE)
    return _deterministic(batches)
