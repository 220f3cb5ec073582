"""The comparisons section: the predictions it draws are the ones the evaluate stage scored."""
import numpy as np

from probav.scene import Scene


def test_comparisons_give_reference_reading_models_the_scored_weights(tmp_path):
    from types import SimpleNamespace

    from probav.report.build import Paths
    from probav.report.comparisons_section import headline_weights

    rng = np.random.default_rng(5)
    scene = Scene("imgset9997", "RED", rng.integers(2000, 4000, (5, 128, 128)).astype(np.uint16),
                  np.ones((5, 128, 128), bool))
    scene.reference = 3
    reads, ignores = SimpleNamespace(uses_reference=True), SimpleNamespace(uses_reference=False)
    paths = Paths(models=tmp_path / "models")          # no saved estimator: the hand-set rule
    challenge = headline_weights({"reference": {"track": "challenge"}}, paths)
    assert challenge(ignores, scene) is None
    w = challenge(reads, scene)
    assert w.shape == (5,) and abs(w.sum() - 1) < 1e-9
    given = headline_weights({"reference": {"track": "ref"}}, paths)(reads, scene)
    assert list(given) == [0, 0, 0, 1, 0]               # the ref track: the label, one-hot
