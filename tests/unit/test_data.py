from __future__ import annotations

import json

import pytest

from lcc_lens.data import collate, encode, load_examples, render_alpaca, split_examples
from lcc_lens.errors import DataError
from lcc_lens.tiny import tiny_tokenizer


def _write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_alpaca_records_use_the_template(tmp_path):
    f = _write_jsonl(
        tmp_path / "a.jsonl",
        [
            {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
            {"instruction": "Name a colour.", "input": "", "output": "Blue"},
        ],
    )
    ex = load_examples(str(f))
    assert ex[0].prompt == render_alpaca("Add the numbers.", "2 and 3")
    assert "### Input:\n2 and 3" in ex[0].prompt and ex[0].prompt.endswith("### Response:\n")
    assert "### Input" not in ex[1].prompt
    assert ex[1].response == "Blue"


def test_task_records_carry_negatives(tmp_path):
    mc = _write_jsonl(
        tmp_path / "mc.jsonl", [{"question": "2+2?", "choices": ["3", "4", "5"], "answer": 1}]
    )
    (e,) = load_examples(str(mc))
    assert e.response == " 4" and set(e.negatives) == {" 3", " 5"}
    yn = _write_jsonl(tmp_path / "yn.jsonl", [{"question": "is water wet", "answer": True}])
    (e,) = load_examples(str(yn))
    assert e.response == " yes" and e.negatives == (" no",)


def test_response_mask_marks_exactly_the_response():
    tok = tiny_tokenizer()
    ex = load_examples("offline", n=4)
    enc = encode(tok, ex, max_length=256)
    for e, x in zip(ex, enc, strict=True):
        resp_ids = [t for t, m in zip(x.input_ids, x.response_mask, strict=True) if m]
        assert (
            tok.decode(resp_ids).strip() == e.response.strip()[: len(tok.decode(resp_ids).strip())]
        )
        assert x.response_mask[0] == 0 and x.response_mask[-1] == 1
    ids, attn, resp = collate(enc, pad_id=0)
    assert ids.shape == attn.shape == resp.shape
    assert int(attn.sum()) == sum(len(x.input_ids) for x in enc)


def test_bad_data_errors(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        load_examples(str(empty))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="cannot parse"):
        load_examples(str(bad))
    cols = _write_jsonl(tmp_path / "cols.jsonl", [{"foo": 1}])
    with pytest.raises(DataError, match="unrecognised columns"):
        load_examples(str(cols))
    with pytest.raises(DataError, match="does not exist"):
        load_examples(str(tmp_path / "missing.jsonl"))
    long_prompt = _write_jsonl(
        tmp_path / "long.jsonl", [{"instruction": "word " * 400, "input": "", "output": "ok"}]
    )
    with pytest.raises(DataError, match="no example has response tokens"):
        encode(tiny_tokenizer(), load_examples(str(long_prompt)), max_length=64)


def test_offline_data_is_deterministic_and_split():
    a = load_examples("offline", n=20, seed=3)
    assert a == load_examples("offline", n=20, seed=3)
    val = load_examples("offline", split="validation", n=10)
    assert not {e.prompt for e in a} & {e.prompt for e in val}
    tr, va = split_examples(a, 0.25, seed=0)
    assert len(va) == 5 and len(tr) == 15 and not set(tr) & set(va)
