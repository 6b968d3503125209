"""Clearing a fit's run directory removes the fit's own outputs and nothing a user put there."""

from __future__ import annotations

import pytest

from lcc_lens.atomic import OWNER_FILE, atomic_dir, is_owned, mark_owned
from lcc_lens.errors import ConfigError
from lcc_lens.fit.run_dir import RUN_OUTPUTS, clear, discard, run_lock, start_run


def _fill(run):
    run.mkdir(exist_ok=True)
    mark_owned(run, "fit-run")
    for name in ("heads.json", "metrics.json", "config.yaml", ".metrics.json.k3j2_x.tmp"):
        (run / name).write_text("x")
    (run / "plots").mkdir()
    for name in ("perplexity.html", "restoration.png", ".training_curves.html.a1b2.tmp"):
        (run / "plots" / name).write_text("x")
    (run / "model").mkdir()
    mark_owned(run / "model", "output")
    (run / "model" / "config.json").write_text("x")
    (run / "notes.txt").write_text("mine")
    (run / "data").mkdir()
    (run / "data" / "keep.csv").write_text("mine")


def test_clear_removes_only_fit_outputs(tmp_path, caplog):
    run = tmp_path / "run"
    _fill(run)
    with caplog.at_level("WARNING"):
        clear(run, keep={OWNER_FILE, "config.yaml"})
    assert sorted(p.name for p in run.iterdir()) == [OWNER_FILE, "config.yaml", "data", "notes.txt"]
    assert (run / "data" / "keep.csv").read_text() == "mine"
    assert "data, notes.txt" in caplog.text


def test_clear_goes_into_plots_and_keeps_an_unmarked_model_folder(tmp_path, caplog):
    run = tmp_path / "run"
    _fill(run)
    (run / "plots" / "my_figure.html").write_text("mine")
    (run / "model").rename(tmp_path / "exported")
    (run / "model").mkdir()
    (run / "model" / "weights.bin").write_text("mine")
    with caplog.at_level("WARNING"):
        clear(run, keep=set())
    assert [p.name for p in (run / "plots").iterdir()] == ["my_figure.html"]
    assert (run / "model" / "weights.bin").read_text() == "mine"
    assert "plots/my_figure.html" in caplog.text and "model/ (no lcc_lens marker)" in caplog.text
    assert sorted(p.name for p in run.iterdir()) == ["data", "model", "notes.txt", "plots"]


def test_discard_of_a_created_run_keeps_it_when_a_user_file_appeared(tmp_path):
    run = tmp_path / "run"
    _fill(run)
    discard(run, existed=False)
    assert sorted(p.name for p in run.iterdir()) == ["data", "notes.txt"]
    clean = tmp_path / "clean"
    clean.mkdir()
    start_run(clean, resume=False, overwrite=False, config_dict={})
    (clean / "heads.json").write_text("x")
    discard(clean, existed=False)
    assert not clean.exists()


def test_every_name_the_fit_writes_is_listed():
    from lcc_lens.checkpoint import CHECKPOINT
    from lcc_lens.compensation import COMPENSATION_FILE
    from lcc_lens.fit.run_dir import COMPLETE_FILE, CONFIG_FILE

    assert {CHECKPOINT, COMPENSATION_FILE, COMPLETE_FILE, CONFIG_FILE, "model"} <= RUN_OUTPUTS


def test_a_folder_named_like_a_temporary_goes_only_with_lcc_lens_marker(tmp_path, caplog):
    run = tmp_path / "run"
    _fill(run)
    mine = run / ".plots.keep.tmp"
    mine.mkdir()
    (mine / "figure.png").write_text("mine")
    with atomic_dir(run / "model") as tmp:  # a temporary carries the marker from the start
        assert is_owned(tmp)
    left = run / ".model.k3j2ab8x.tmp"  # what an export killed mid-way leaves
    left.mkdir()
    mark_owned(left, "output")
    (left / "config.json").write_text("x")
    with caplog.at_level("WARNING"):
        clear(run, keep=set())
    assert (mine / "figure.png").read_text() == "mine"
    assert not left.exists()
    assert ".plots.keep.tmp" in caplog.text


def test_the_run_lock_refuses_a_second_writer_and_leaves_nothing(tmp_path):
    run = tmp_path / "new" / "run"
    with run_lock(run) as lock:
        assert lock.parent == run.parent and not run.exists()  # beside the run, never inside it
        with pytest.raises(ConfigError, match="another lcc fit is writing"), run_lock(run):
            pass
        assert lock.is_file()
    assert list(tmp_path.iterdir()) == []  # the lock file and the folder made for it are gone
    with run_lock(run):  # free again
        pass
