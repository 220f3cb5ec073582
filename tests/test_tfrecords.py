"""TFRecords: lossless round trip (real sample and tiny scenes), shards, meta.json, atomic output."""
from __future__ import annotations

import importlib.util
import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from probav.data import tfrecords as tfr
from probav.data.tfrecords import parse_example, read_meta, read_scenes, subset_files, write_tfrecords
from probav.scene import BadSceneError, Scene, read_norm, read_scene, write_norm, write_scene

COLUMNS = ["split", "band", "name", "path", "frames", "mean_clearance", "hr_clearance", "status", "reason"]
SHARD = re.compile(r"^(train|dev|test)-(\d{5})-of-(\d{5})\.tfrecord\.gz$")


def index_row(scene_dir, raw, status="ok"):
    split, band, name = scene_dir.parts[-3:]
    return {"split": split, "band": band, "name": name, "path": scene_dir.relative_to(raw).as_posix(),
            "frames": 0, "mean_clearance": math.nan, "hr_clearance": math.nan, "status": status, "reason": ""}


def assert_same(a: Scene, b: Scene) -> None:
    assert (a.name, a.band) == (b.name, b.band)
    assert a.lr.dtype == b.lr.dtype == np.uint16 and a.qm.dtype == b.qm.dtype == bool
    np.testing.assert_array_equal(a.lr, b.lr)
    np.testing.assert_array_equal(a.qm, b.qm)
    assert (a.hr is None) == (b.hr is None) and (a.sm is None) == (b.sm is None)
    if a.hr is not None:
        assert a.hr.dtype == b.hr.dtype == np.uint16 and a.sm.dtype == b.sm.dtype == bool
        np.testing.assert_array_equal(a.hr, b.hr)
        np.testing.assert_array_equal(a.sm, b.sm)


def test_round_trip_real_sample(probav_mini, tmp_path):
    """The real sample's scenes come back identical to the PNGs, test scenes without HR included."""
    dirs = [probav_mini / "train/RED/imgset0000", probav_mini / "test/RED/imgset1160",
            probav_mini / "test/NIR/imgset1306"]
    pd.DataFrame([index_row(d, probav_mini) for d in dirs]).to_csv(tmp_path / "scenes.csv", index=False)
    pd.DataFrame({"name": ["imgset0000"], "band": ["RED"], "subset": ["train"]}).to_csv(tmp_path / "split.csv",
                                                                                        index=False)
    out = tmp_path / "tfrecords"
    meta = write_tfrecords(probav_mini, tmp_path / "scenes.csv", tmp_path / "split.csv", out,
                           {"tfrecords": {"scenes_per_shard": 64}}, workers=1, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "resume", "test-00000-of-00001.tfrecord.gz",
                                                     "train-00000-of-00001.tfrecord.gz"]
    assert {s: meta["subsets"][s]["scenes"] for s in ("train", "dev", "test")} == {"train": 1, "dev": 0, "test": 2}
    norms = read_norm(probav_mini / "norm.csv")
    back = list(read_scenes(subset_files(out, "train") + subset_files(out, "test")))
    assert [s.name for s in back] == ["imgset0000", "imgset1160", "imgset1306"]
    for scene, folder in zip(back, dirs):
        original = read_scene(folder)
        assert_same(scene, original)
        assert scene.norm == pytest.approx(norms[scene.name], abs=1e-5)   # stored as float32
        assert scene.split == folder.parts[-3]
    assert back[0].has_hr and not back[1].has_hr and not back[2].has_hr
    # Train statistics: exact clear-LR mean/std of the one train scene, in [0, 1] units.
    original = read_scene(dirs[0])
    clear = original.lr[original.qm] / 65535.0
    stats = meta["statistics"]["lr"]
    assert stats["RED"]["pixels"] == clear.size == stats["all"]["pixels"]
    assert stats["RED"]["mean"] == pytest.approx(clear.mean(), rel=1e-9)
    assert stats["RED"]["std"] == pytest.approx(clear.std(), rel=1e-6)
    assert "NIR" not in stats
    assert meta["statistics"]["hr"]["RED"]["mean"] == pytest.approx((original.hr[original.sm] / 65535.0).mean())
    assert read_meta(out) == json.loads(json.dumps(meta))


def tiny_archive(root, rng, train=5, test=2):
    """Random scenes in the official layout, a norm.csv that lacks one scene, a hand-made index."""
    rows, norms, scenes = [], {}, []
    n = 0
    for split, count in (("train", train), ("test", test)):
        for k in range(count):
            band = "RED" if k % 2 == 0 else "NIR"
            frames = 9 + (n % 4)
            lr = (rng.integers(0, 4096, (frames, 128, 128)) * 16).astype(np.uint16)
            lr[0, 0, :5] = [0, 16, 65520, 65535 - 15, 28000]          # edge values survive
            qm = rng.random((frames, 128, 128)) < 0.8
            hr = sm = None
            if split == "train":
                hr = rng.integers(0, 65536, (384, 384)).astype(np.uint16)
                sm = rng.random((384, 384)) < 0.9
            scene = Scene(f"imgset{n:04d}", band, lr, qm, hr, sm, split=split)
            folder = write_scene(scene, root)
            rows.append(index_row(folder, root))
            if n != 1:
                norms[scene.name] = 40.0 + n / 8
            scene.norm = norms.get(scene.name)
            scenes.append(scene)
            n += 1
    write_norm(root / "norm.csv", norms)
    return scenes, pd.DataFrame(rows)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    scenes, table = tiny_archive(root, np.random.default_rng(0))
    # An unusable scene listed as skipped is never written.
    table = pd.concat([table, pd.DataFrame([{**table.iloc[0].to_dict(), "name": "imgset0099",
                                             "path": "train/RED/imgset0099", "status": "skipped"}])])
    work = root.parent / f"{root.name}-work"
    work.mkdir()
    table.to_csv(work / "scenes.csv", index=False)
    split = pd.DataFrame({"name": [s.name for s in scenes if s.split == "train"],
                          "band": [s.band for s in scenes if s.split == "train"],
                          "subset": ["train", "train", "dev", "train", "dev"]})
    split.to_csv(work / "split.csv", index=False)
    return root, work, {s.name: s for s in scenes}, split


def test_shards_meta_and_round_trip(archive, tmp_path):
    root, work, scenes, split = archive
    out = tmp_path / "tfrecords"
    meta = write_tfrecords(root, work / "scenes.csv", work / "split.csv", out,
                           {"tfrecords": {"scenes_per_shard": 2, "workers": 1}}, progress=False)
    names = sorted(p.name for p in out.iterdir() if p.name != "resume")    # resume/: the shards' records
    assert "meta.json" in names and all(SHARD.match(n) for n in names if n != "meta.json")
    assert sorted(p.name for p in (out / "resume").iterdir()) == [f"{n}.json" for n in names if n != "meta.json"]
    assert subset_files(out, "train") == [str(out / f"train-0000{i}-of-00002.tfrecord.gz") for i in range(2)]
    assert [p.rsplit("/", 1)[1] for p in subset_files(out, "dev")] == ["dev-00000-of-00001.tfrecord.gz"]
    assert meta["subsets"]["train"]["scenes"] == 3 and meta["subsets"]["train"]["shards"] == 2
    assert meta["subsets"]["dev"]["scenes"] == 2 and meta["subsets"]["test"]["scenes"] == 2
    assert meta["scenes"] == 7
    assert meta["bytes"] == sum((out / n).stat().st_size for n in names if n != "meta.json")
    assert meta["subsets"]["train"]["bytes"] == sum((out / n).stat().st_size for n in names if n.startswith("train"))
    back = {}
    for subset in ("train", "dev", "test"):
        for scene in read_scenes(subset_files(out, subset)):
            assert scene.extra["subset"] == subset
            back[scene.name] = scene
    assert set(back) == set(scenes)              # the skipped scene is not there
    for name, scene in scenes.items():
        assert_same(back[name], scene)
        assert (back[name].norm is None) == (scene.norm is None)   # NaN when norm.csv lacks it
        if scene.norm is not None:
            assert back[name].norm == pytest.approx(scene.norm)
    expected_dev = set(split.loc[split["subset"] == "dev", "name"])
    assert {s.name for s in read_scenes(subset_files(out, "dev"))} == expected_dev
    # Statistics over the train subset only, per band.
    train = [scenes[n] for n in split.loc[split["subset"] == "train", "name"]]
    red = np.concatenate([s.lr[s.qm] for s in train if s.band == "RED"]) / 65535.0
    assert meta["statistics"]["lr"]["RED"]["mean"] == pytest.approx(red.mean(), rel=1e-9)
    assert meta["statistics"]["lr"]["RED"]["std"] == pytest.approx(red.std(), rel=1e-6)
    every = np.concatenate([s.lr[s.qm] for s in train]) / 65535.0
    assert meta["statistics"]["lr"]["all"]["mean"] == pytest.approx(every.mean(), rel=1e-9)


def test_parse_example_shapes_and_empty_hr(archive, tmp_path):
    import tensorflow as tf

    _, _, scenes, _ = archive
    test_scene = next(s for s in scenes.values() if s.split == "test")
    ex = parse_example(tf.constant(tfr.serialize_scene(test_scene)))
    assert ex["lr"].dtype == tf.uint16 and ex["lr"].shape == (test_scene.frames, 128, 128)
    assert ex["qm"].dtype == tf.bool and ex["hr"].shape == (384, 384) and ex["sm"].dtype == tf.bool
    assert not bool(ex["has_hr"]) and int(ex["frames"]) == test_scene.frames
    assert not np.any(ex["hr"].numpy()) and not np.any(ex["sm"].numpy())
    assert ex["name"].numpy() == test_scene.name.encode() and ex["band"].numpy() == test_scene.band.encode()


def files_of(folder) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_workers_do_not_change_output_and_stale_files_go(archive, tmp_path, monkeypatch):
    root, work, _, _ = archive
    one, two = tmp_path / "one", tmp_path / "two"
    write_tfrecords(root, work / "scenes.csv", work / "split.csv", one, {}, workers=1, progress=False)
    two.mkdir()
    (two / "stale-file").write_text("from an earlier run")
    (two / "train-00007-of-00009.tfrecord.gz").write_text("a shard of another plan")
    monkeypatch.setattr(tfr, "POOL_MIN_SCENES", 1)             # use the process pool even for 7 scenes
    write_tfrecords(root, work / "scenes.csv", work / "split.csv", two, {}, workers=2, progress=False)
    first, second = files_of(one), files_of(two)
    assert first.keys() == second.keys()                        # byte-identical: DVC sees the same output
    assert [name for name in first if first[name] != second[name]] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]   # no temporary folder left


def test_bad_scene_fails_naming_it_and_leaves_no_meta(archive, tmp_path):
    root, work, scenes, _ = archive
    out = tmp_path / "out"
    write_tfrecords(root, work / "scenes.csv", work / "split.csv", out, {}, workers=1, progress=False)
    broken = tmp_path / "raw"
    import shutil
    shutil.copytree(root, broken)
    (broken / "train/NIR/imgset0001/LR003.png").write_bytes(b"not a png")
    with pytest.raises(BadSceneError, match="LR003.png"):
        write_tfrecords(broken, work / "scenes.csv", work / "split.csv", out, {}, workers=1, progress=False)
    # Not complete (meta.json is written last), no partial shard; the shards that do not hold the changed
    # scene are kept for the next run, which finds them complete under the same key.
    assert not (out / "meta.json").exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw"]


def test_stage_cli(archive, tmp_path, repo_root):
    root, work, _, _ = archive
    params = tmp_path / "params.yaml"
    params.write_text("seed: 1\ntfrecords:\n  scenes_per_shard: 4\n  workers: 1\n")
    spec = importlib.util.spec_from_file_location("tfrecords_stage", repo_root / "stages" / "tfrecords.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    out = tmp_path / "tfrecords"
    args = ["--params", str(params), "--raw", str(root), "--scenes", str(work / "scenes.csv"),
            "--split", str(work / "split.csv"), "--out", str(out)]
    assert stage.main(args) == 0
    assert read_meta(out)["scenes_per_shard"] == 4 and len(subset_files(out, "train")) == 1
    args[args.index("--split") + 1] = str(tmp_path / "missing.csv")
    assert stage.main(args) == 1


def test_prior_is_stored_with_every_scene_and_described_in_meta(archive, tmp_path):
    from probav.models.median import Median

    root, work, scenes, _ = archive
    out = tmp_path / "with-prior"
    params = {"tfrecords": {"workers": 1, "prior": "median"}, "classical": {"shift_and_add": {"sharpen": 1.0}}}
    meta = write_tfrecords(root, work / "scenes.csv", work / "split.csv", out, params, progress=False)
    assert meta["prior"] == {"model": "median", "classical": {"shift_and_add": {"sharpen": 1.0}}}
    assert read_meta(out)["prior"] == meta["prior"]
    back = {s.name: s for subset in ("train", "dev", "test") for s in read_scenes(subset_files(out, subset))}
    assert set(back) == set(scenes)
    for name, scene in scenes.items():
        assert_same(back[name], scene)
        prior = back[name].extra["prior"]
        assert prior.dtype == np.uint16 and prior.shape == (384, 384)
        np.testing.assert_array_equal(prior, Median().predict(scene))   # test scenes (no HR) get one too


def test_no_prior_by_default_and_a_trainable_prior_is_refused(archive, tmp_path):
    root, work, _, _ = archive
    meta = write_tfrecords(root, work / "scenes.csv", work / "split.csv", tmp_path / "plain",
                           {"tfrecords": {"workers": 1}}, progress=False)
    assert meta["prior"] is None
    assert all("prior" not in s.extra for s in read_scenes(subset_files(tmp_path / "plain", "dev")))
    with pytest.raises(ValueError, match="classical model"):
        write_tfrecords(root, work / "scenes.csv", work / "split.csv", tmp_path / "bad",
                        {"tfrecords": {"workers": 1, "prior": "misr_net"}}, progress=False)
    assert not (tmp_path / "bad").exists()
