"""Hand-written numbers in the template tied to their metric (probav.report.citations): rendered, checked,
and the report stage failing on a sentence the run contradicts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from probav.report.citations import StaleProseError, agrees, metric_value, resolve_citations

METRICS = {"mean_cpsnr": 48.4334, "tracks": {"challenge": {"mean_cpsnr": 48.4334}, "ref": {"mean_cpsnr": 48.7934}},
           "sizes": [1.5, 2.5], "skipped": None}


@pytest.fixture
def metrics(tmp_path: Path) -> Path:
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "shift_and_add.json").write_text(json.dumps(METRICS))
    return folder


def test_agrees_within_the_rounding_of_the_typed_number():
    assert agrees("48.43", 48.4334) and agrees("48.43", 48.425) and agrees("48.43", 48.435)
    assert not agrees("48.43", 48.4351) and not agrees("48.43", 48.42)
    assert agrees("5", 5.4) and not agrees("5", 5.6)
    assert agrees("-0.12", -0.1249) and not agrees("-0.12", 0.12)


def test_metric_value_follows_the_dotted_key(metrics: Path):
    assert metric_value("metrics/shift_and_add.json", "tracks.ref.mean_cpsnr", metrics, metrics.parent) == 48.7934
    assert metric_value("metrics/shift_and_add.json", "sizes.1", metrics, metrics.parent) == 2.5
    with pytest.raises(KeyError, match="no 'median'"):
        metric_value("metrics/shift_and_add.json", "tracks.median", metrics, metrics.parent)
    with pytest.raises(ValueError, match="not a finite number"):
        metric_value("metrics/shift_and_add.json", "skipped", metrics, metrics.parent)
    with pytest.raises(FileNotFoundError):
        metric_value("metrics/srgan.json", "mean_cpsnr", metrics, metrics.parent)


def test_checked_and_cited_numbers_are_rendered(metrics: Path):
    template = ("# Title\n\nThe fusion reaches {{check:48.43:metrics/shift_and_add.json:tracks.challenge.mean_cpsnr}} dB. "
                "Given the reference, {{cite:metrics/shift_and_add.json:tracks.ref.mean_cpsnr}} dB "
                "({{cite:metrics/shift_and_add.json:sizes.0:.0%}}). {{other}} stays.\n")
    assert resolve_citations(template, metrics, metrics.parent) == (
        "# Title\n\nThe fusion reaches 48.43 dB. Given the reference, 48.79 dB (150%). {{other}} stays.\n")


def test_a_contradicted_sentence_is_named(metrics: Path):
    template = ("# Title\n\nSome prose.\n\nThe fusion reaches\n{{check:48.50:metrics/shift_and_add.json:mean_cpsnr}} dB on "
                "dev. Then {{check:48.79:metrics/shift_and_add.json:tracks.ref.mean_cpsnr}} dB, which is right.\n\n"
                "Last: {{check:1.0:metrics/shift_and_add.json:nothing}}.\n")
    with pytest.raises(StaleProseError) as caught:
        resolve_citations(template, metrics, metrics.parent, "reports/template.md")
    message = str(caught.value)
    assert message.startswith("reports/template.md: 2 hand-written number(s) disagree")
    assert ('line 6: "The fusion reaches {{check:48.50:metrics/shift_and_add.json:mean_cpsnr}} dB on dev.": says '
            '48.50, but metrics/shift_and_add.json:mean_cpsnr is 48.4334 in this run') in message
    assert "48.79" not in message                      # the sentence that agrees is not listed
    assert "line 8" in message and "cannot check 1.0" in message and "no 'nothing'" in message


def test_the_report_stage_fails_on_stale_prose_when_told_to(tmp_path: Path, metrics: Path, capsys):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stages"))
    try:
        import report as stage
    finally:
        sys.path.pop(0)
    template = tmp_path / "template.md"
    template.write_text("# Report\n\nThe classical fusion reaches {{check:49.00:metrics/shift_and_add.json:mean_cpsnr}} "
                        "dB.\n")
    params = tmp_path / "params.yaml"
    params.write_text("seed: 1\nmodels: []\ndeep_models: []\nreport:\n  stale_prose: fail\n")
    out = tmp_path / "reports" / "report.md"
    argv = ["--params", str(params), "--raw", str(tmp_path / "raw"), "--scenes", str(tmp_path / "no.csv"),
            "--split", str(tmp_path / "no.csv"), "--metrics", str(metrics), "--models-dir",
            str(tmp_path / "models"), "--live", str(tmp_path / "live"), "--template", str(template),
            "--out", str(out), "--readme", "", "--real", "", "--real-labels", "", "--no-experiments", "--quiet"]
    code = stage.main(argv)
    assert code == 1
    err = capsys.readouterr().err
    assert "report failed:" in err and "The classical fusion reaches" in err and "says 49.00" in err
    assert not out.exists()
    # The default (omit): the stage still writes a report, with the contradicted paragraph left out and said so.
    params.write_text("seed: 1\nmodels: []\ndeep_models: []\n")
    assert stage.main(argv) == 0
    assert "hand-written paragraph is left out" in out.read_text() and "The classical fusion" not in out.read_text()


def test_omit_leaves_out_the_contradicted_paragraph_only(metrics: Path):
    template = ("Generated: {{table}}.\n\nReached {{check:47.00:metrics/shift_and_add.json:mean_cpsnr}} dB here.\n"
                "Still the same paragraph.\n\nRight: {{check:48.8:metrics/shift_and_add.json:tracks.ref.mean_cpsnr}}.\n")
    out = resolve_citations(template, metrics, metrics.parent, on_stale="omit")
    assert out.startswith("Generated: {{table}}.\n\n*A hand-written paragraph is left out here")
    assert ("1 of its numbers disagree, the first on line 3 of the template: says 47.00, but "
            "metrics/shift_and_add.json:mean_cpsnr is 48.4334 in this run.*") in out
    assert "Still the same paragraph" not in out and "Reached" not in out
    assert out.endswith("\n\nRight: 48.8.\n")
    with pytest.raises(ValueError, match="report.stale_prose must be one of"):
        resolve_citations(template, metrics, metrics.parent, on_stale="warn")
