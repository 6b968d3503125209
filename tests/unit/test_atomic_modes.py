"""Files and folders written atomically get the mode a plain write would give, not mkstemp's 0600."""

from __future__ import annotations

import os
import stat

import pytest

from lcc_lens.atomic import atomic_dir, write_json, write_text


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_files_follow_the_umask(tmp_path, umask_027):
    write_json(tmp_path / "a.json", {"x": 1})
    write_text(tmp_path / "b.md", "text\n")
    plain = tmp_path / "c.txt"
    plain.write_text("text\n")
    assert _mode(tmp_path / "a.json") == _mode(tmp_path / "b.md") == _mode(plain) == 0o640


def test_atomic_dirs_follow_the_umask(tmp_path, umask_027):
    with atomic_dir(tmp_path / "run", kind="test") as tmp:
        (tmp / "f").write_text("x")
    plain = tmp_path / "plain"
    plain.mkdir()
    assert _mode(tmp_path / "run") == _mode(plain) == 0o750
