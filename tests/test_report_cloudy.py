"""The data section's pair of scenes: the cloudiest usable frame, and a cloudy real scene where the sample is
present."""
from pathlib import Path

import numpy as np
import pytest

from probav.report import cloudy
from probav.scene import Scene

PROBAV_MINI = Path(__file__).resolve().parents[2] / "shared" / "probav-mini"


def scene_with_clearance(clear: list[float]) -> Scene:
    qm = np.zeros((len(clear), 128, 128), bool)
    for k, c in enumerate(clear):
        qm[k].ravel()[: int(round(c * 128 * 128))] = True
    return Scene("imgset9998", "NIR", np.full(qm.shape, 4000, np.uint16), qm)


def test_cloudiest_usable_frame_is_the_least_clear_above_the_rule():
    scene = scene_with_clearance([1.0, 0.55, 0.7, 0.9])
    assert cloudy.cloudiest_usable(scene) == 2          # 0.55 breaks the 60% rule
    assert cloudy.cloudiness(scene) == pytest.approx(0.3, abs=1e-3)
    assert cloudy.cloudiest_usable(scene_with_clearance([0.5, 0.4])) == 0   # none usable: the clearest


@pytest.mark.skipif(not PROBAV_MINI.is_dir(), reason="the real sample ../shared/probav-mini is not on this machine")
def test_the_real_scene_shown_has_clouds_in_its_qm():
    real, run = cloudy.cloudy_pair(PROBAV_MINI, Path("unused"), None)
    assert run is None
    assert real.name in {"imgset1160", "imgset1306"}         # a test scene: imgset0000's frames are nearly clear
    assert cloudy.cloudiness(real) > 0.2
    caption = cloudy.caption([("real", real), ("run", None)])
    assert real.name in caption and "test scene, no HR" in caption

