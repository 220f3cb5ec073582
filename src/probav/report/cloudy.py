"""The scenes the data section shows beside each other: a cloudy real one and a cloudy one of the run, in the
same band, so that the QM and SM have something to show."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

USABLE = 0.6          # the inclusion rule: frames at least this clear
RUN_CANDIDATES = 24   # scenes of the run read to find a cloudy one


def cloudiest_usable(scene) -> int:
    """The frame that shows the most masked clouds while at least 60% clear (or the clearest frame)."""
    clearance = scene.clearance
    usable = np.flatnonzero(clearance >= USABLE)
    return int(usable[np.argmin(clearance[usable])]) if len(usable) else int(np.argmax(clearance))


def cloudiness(scene) -> float:
    """How cloudy a scene looks in one usable frame: the masked share of its cloudiest usable frame."""
    return float(1.0 - scene.clearance[cloudiest_usable(scene)])


def cloudy_pair(real_root: Path | None, raw: Path, index: pd.DataFrame | None):
    """(real scene, run scene): the real sample's scene with QMs whose usable frame is cloudiest (a test scene
    when it is cloudier than the train one), and the cloudiest of the run's first train scenes of the same band
    (None for a side that is missing)."""
    from probav.data.stats import folder_sample
    from probav.scene import read_scene

    real = None
    if real_root is not None:
        for dirs in folder_sample(real_root).values():
            for d in dirs:
                if not any(p.name.startswith("QM") for p in d.iterdir()):
                    continue
                scene = read_scene(d, require_hr=False)
                if real is None or cloudiness(scene) > cloudiness(real):
                    real = scene
    run = None
    if index is not None:
        band = real.band if real is not None else "RED"
        ok = (index["status"] == "ok") if "status" in index else True
        cands = index[(index["split"] == "train") & (index["band"] == band) & ok].head(RUN_CANDIDATES)
        for path in cands["path"]:
            scene = read_scene(raw / path)
            if run is None or cloudiness(scene) > cloudiness(run):
                run = scene
    return real, run


def caption(rows: list[tuple[str, object]]) -> str:
    """What ``figures.scene_pair`` drew for these (label, scene) rows."""
    named = "; ".join(f"{label}: {scene.name} ({scene.band}, {'test scene, no HR' if scene.hr is None else 'with HR'})"
                      for label, scene in rows if scene is not None)
    return (f"One row per scene ({named}). Left: the scene's cloudiest usable LR frame (at least 60% clear), grey range "
            f"from its clear pixels, so a cloud is white; next: the same frame with its QM's masked pixels tinted "
            f"cyan; then how many of the scene's frames are clear at each pixel (what a fusion has to work with); "
            f"right: the HR with its SM's masked pixels tinted (a test scene has no HR: its SM over the clearest LR "
            f"frame, enlarged ×3).")
