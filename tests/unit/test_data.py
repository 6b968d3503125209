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


def test_corpora_and_offline_name_the_same_source():
    assert load_examples("corpora", n=8, seed=1) == load_examples("offline", n=8, seed=1)


def test_a_txt_file_is_one_document_cut_into_passages(tmp_path):
    from lcc_lens.data import text_file_passages

    paras = [f"Paragraph {i} " + "word " * 30 for i in range(6)]
    f = tmp_path / "doc.txt"
    f.write_text("\n\n".join(paras))
    got = text_file_passages(f, min_chars=200, max_chars=2000)
    assert all(len(p) >= 200 for p in got[:-1])
    assert "".join(got).replace("\n\n", "") == "".join(p.strip() for p in paras)
    examples = load_examples(str(f))
    assert len(examples) == len(got)


def test_fit_data_leaves_the_test_domain_out():
    from dataclasses import fields

    from lcc_lens.data import DataConfig, fit_data

    cfg = DataConfig(n_train=24, n_diff_prompts=8, n_probe=6)
    assert all(f.metadata.get("help") for f in fields(DataConfig))
    data = fit_data(cfg)
    assert data.eval_roles[cfg.test_domain] == "test"
    assert data.eval_roles[cfg.validation_domain] == "validation"
    assert cfg.test_domain not in data.domains["fit"] + data.domains["calibration"]
    assert len(data.train) == 24 and len(data.validation) == 3
    assert len(data.diff_prompts) == 8 and len(data.probe) == 6
    assert data.diff_prompts == tuple(e.prompt for e in data.train[:8])
    # the held-out test text is none of the fit text
    fit_text = "\n".join(data.fit_passages)
    assert not any(doc[:200] in fit_text for doc in data.eval_texts[cfg.test_domain][:20])
    again = fit_data(cfg)
    assert again.train == data.train and again.describe() == data.describe()
    assert fit_data(cfg, seed=1).train != data.train
    described = data.describe()
    assert described["domains"]["test"] == [cfg.test_domain]


def test_data_config_rejects_an_in_domain_headline():
    from lcc_lens.data import DataConfig
    from lcc_lens.errors import ConfigError

    with pytest.raises(ConfigError, match="out of domain"):
        DataConfig(fit_domains=("python_docs", "speeches"))
    with pytest.raises(ConfigError, match="validation_domain equals"):
        DataConfig(validation_domain="speeches")
    with pytest.raises(ConfigError, match="unknown text domain"):
        DataConfig(test_domain="wikipedia")


def test_targets_all_scores_every_token_after_the_first():
    tok = tiny_tokenizer()
    ex = load_examples("corpora", n=3)
    resp = encode(tok, ex, 64)
    every = encode(tok, ex, 64, targets="all")
    for r, a in zip(resp, every, strict=True):
        assert r.input_ids == a.input_ids
        assert a.response_mask == [0] + [1] * (len(a.input_ids) - 1)
        assert sum(r.response_mask) < sum(a.response_mask)
