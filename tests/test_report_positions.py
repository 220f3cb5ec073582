"""Sub-pixel positions of the frames on the LR grid (the report's positions figure): registered positions of
frames made with known shifts, their fractional part, the HR cells they reach, and the real scenes where present."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from probav.report import positions
from probav.scene import Scene

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def shifted_scene(positions_yx: list[tuple[float, float]], seed: int = 0) -> Scene:
    """A feature at y in frame 0 appears at y + position k in frame k (frame 0 at position 0)."""
    rng = np.random.default_rng(seed)
    ground = ndi.gaussian_filter(rng.normal(size=(160, 160)), 2.0)
    ground = 3000 + 800 * ground / ground.std()
    frames = [ndi.shift(ground, (dy, dx), order=3, mode="nearest")[16:144, 16:144] for dy, dx in positions_yx]
    lr = np.round(np.array(frames)).astype(np.uint16)
    return Scene("imgset9999", "RED", lr, np.ones(lr.shape, bool))


def test_registered_positions_match_the_constructed_shifts():
    true = [(0.0, 0.0), (0.3, -0.2), (-0.45, 0.1), (1.25, 0.4), (0.0, -1.6)]
    scene = shifted_scene(true)
    truth = {("imgset9999", k): p for k, p in enumerate(true)}
    table = positions.frame_positions(scene, 0, truth, "test")
    assert list(table["frame"]) == [1, 2, 3, 4] and table["ok"].all()
    np.testing.assert_allclose(table[["dy", "dx"]].to_numpy(), np.array(true[1:]), atol=0.03)
    np.testing.assert_allclose(table[["true_dy", "true_dx"]].to_numpy(), np.array(true[1:]))
    # relative to frame 3, every position moves by minus frame 3's
    again = positions.frame_positions(scene, 3, truth).set_index("frame")
    np.testing.assert_allclose(again.loc[0, ["dy", "dx"]].to_numpy(float), [-1.25, -0.4], atol=0.03)


def test_fractional_positions_are_centred_on_the_reference_grid():
    np.testing.assert_allclose(positions.fractional([0.0, 0.3, 1.25, -0.45, -1.6, 0.5, -1e-17]),
                               [0.0, 0.3, 0.25, -0.45, 0.4, -0.5, 0.0], atol=1e-12)


def test_cells_reached_counts_hr_sub_pixel_phases():
    assert positions.cells_reached([], []) == 1                                # the reference alone
    assert positions.cells_reached([0.1, -0.1, 1.05], [0.05, 0.0, -0.1]) == 1  # all in the reference's cell
    assert positions.cells_reached([0.0, 0.0, 0.34, 0.34], [0.34, -0.34, 0.0, 0.34]) == 5
    table = pd.DataFrame({"scene": ["a", "a", "b"], "dy": [0.0, 0.4, 0.02], "dx": [0.4, 0.0, 0.0],
                          "ok": [True, True, True]})
    s = positions.summary(table)
    assert s["scenes"] == 2 and s["frames"] == 3 and s["failed"] == 0
    assert s["cells"] == (3 + 1) / 2 and s["on_grid"] == pytest.approx(1 / 3)


@pytest.mark.skipif(not (SHARED / "probav-ref" / "reference.json").is_file(),
                    reason="the real sample (../shared/probav-mini, probav-lr-only, probav-ref) is not on this machine")
def test_real_scenes_are_registered_to_their_labelled_reference():
    params = {"real": {"folder": str(SHARED / "probav-mini"), "labels": str(SHARED / "probav-ref" / "reference.json"),
                       "lr_only": str(SHARED / "probav-lr-only")}}
    table, notes = positions.real_positions(params, REPO)
    assert not notes
    assert "imgset0000" in set(table["scene"]) and table["scene"].nunique() == 7   # imgset0000 and 6 LR-only
    assert table.groupby("scene")["ok"].mean().min() > 0.5
    # imgset0000 has 17 frames: 16 registered to its reference LR004, which is not among them
    assert len(table[table["scene"] == "imgset0000"]) == 16 and 4 not in set(table.loc[table["scene"] == "imgset0000", "frame"])
