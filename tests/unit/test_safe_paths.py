"""Names read from a file and links in a folder never lead out of that folder (lcc_lens.safe_paths)."""

from __future__ import annotations

import pytest

from lcc_lens.errors import UnsafePathError
from lcc_lens.safe_paths import check_links, inside


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "model"
    (root / "sub").mkdir(parents=True)
    (root / "shard.safetensors").write_bytes(b"x")
    (root / "sub" / "vocab.txt").write_text("a")
    (tmp_path / "outside.txt").write_text("the user's")
    return root


@pytest.mark.parametrize("name", ["shard.safetensors", "sub/vocab.txt", "./shard.safetensors"])
def test_names_inside_are_kept(folder, name):
    assert inside(folder, name) == folder / name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../outside.txt", "leads out"),
        ("sub/../../outside.txt", "leads out"),
        ("/etc/passwd", "leads out"),
        ("C:\\Windows\\x", "leads out"),
        ("..\\outside.txt", "leads out"),
        ("", "not a file name"),
        (["shard.safetensors"], "not a file name"),
        (7, "not a file name"),
    ],
)
def test_names_leading_out_are_refused(folder, name, why):
    with pytest.raises(UnsafePathError, match=why):
        inside(folder, name, what="shard name")


def test_links_out_are_refused_links_within_are_kept(folder):
    (folder / "same.safetensors").symlink_to(folder / "shard.safetensors")
    check_links(folder)
    assert inside(folder, "same.safetensors").is_file()
    (folder / "sub" / "notes.md").symlink_to(folder.parent / "outside.txt")
    with pytest.raises(UnsafePathError, match="notes.md is a link to .*outside.txt, outside"):
        check_links(folder)
    with pytest.raises(UnsafePathError, match="outside"):
        inside(folder, "sub/notes.md")


def test_a_hub_snapshot_may_link_into_its_blobs_only(tmp_path):
    repo = tmp_path / "hub" / "models--org--tiny"
    snapshot = repo / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "blobs" / "f00d").write_text("{}")
    (snapshot / "config.json").symlink_to("../../blobs/f00d")
    check_links(snapshot)
    assert inside(snapshot, "config.json").read_text() == "{}"
    (tmp_path / "elsewhere").write_text("x")
    (snapshot / "tokenizer.json").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafePathError):
        check_links(snapshot)
