"""Examples: (prompt, response) pairs from instruction (Alpaca) data, task data, text files or the corpora.

A template renders the prompt and the response tokens are the only ones the LM objective scores (or every
token, ``targets="all"``). Task examples also carry their wrong answers, which contrastive probing uses
as negatives. Data sources (one meaning each, everywhere):

* ``"corpora"`` (alias ``"offline"``): the real text of :mod:`lcc_lens.corpora`, by domain and split;
* a ``.txt`` file: ONE document of running text, cut into passages like a corpus document;
* a ``.json`` / ``.jsonl`` / ``.csv`` file of records (Alpaca, task, prompt/response or text columns);
* any other name: a Hugging Face dataset (online).
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from lcc_lens.corpora import passages
from lcc_lens.errors import DataError

logger = logging.getLogger(__name__)

Template = Literal["alpaca", "plain"]
Targets = Literal["response", "all"]
CORPORA_SPECS = ("corpora", "offline")
"""Names of the shipped corpora as a data source (``offline`` is an alias of ``corpora``)."""
_PARA = re.compile(r"\n\s*\n")

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)


@dataclass(frozen=True)
class Example:
    """A rendered prompt, its correct response and (task data only) wrong responses."""

    prompt: str
    response: str
    negatives: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Encoded:
    """Token ids of prompt + response and a 0/1 mask of the response tokens."""

    input_ids: list[int]
    response_mask: list[int]


def render_alpaca(instruction: str, input_text: str = "") -> str:
    if input_text and input_text.strip():
        return ALPACA_WITH_INPUT.format(instruction=instruction.strip(), input=input_text.strip())
    return ALPACA_NO_INPUT.format(instruction=instruction.strip())


def _from_records(records: Sequence[dict], source: str) -> list[Example]:
    if not records:
        raise DataError(f"{source} holds no records; give a file with at least one example.")
    keys = set(records[0])
    out: list[Example] = []
    if {"instruction", "output"} <= keys:
        for i, r in enumerate(records):
            if r.get("output") is None or r.get("instruction") is None:
                raise DataError(
                    f"{source}: row {i} has no 'output' (or no 'instruction'); every Alpaca row "
                    "needs both. Fix or drop the row."
                )
            out.append(
                Example(
                    render_alpaca(str(r["instruction"]), str(r.get("input") or "")),
                    str(r["output"]),
                )
            )
    elif {"question", "choices"} <= keys and ({"answer"} & keys or {"label"} & keys):
        for i, r in enumerate(records):
            choices = [str(c) for c in r["choices"]]
            label = r.get("label", r.get("answer"))
            if not isinstance(label, int) and str(label) not in choices:
                raise DataError(
                    f"{source}: row {i}: the answer {label!r} is not among the choices {choices}; "
                    "give the answer as one of the choices or as its index."
                )
            idx = choices.index(str(label)) if not isinstance(label, int) else int(label)
            if not 0 <= idx < len(choices):
                raise DataError(f"{source}: answer index {idx} outside the {len(choices)} choices.")
            prompt = f"Question: {str(r['question']).strip()}\nAnswer:"
            wrong = tuple(f" {c}" for i, c in enumerate(choices) if i != idx)
            out.append(Example(prompt, f" {choices[idx]}", wrong))
    elif {"question", "answer"} <= keys:
        for r in records:
            ans = r["answer"]
            yes = ans if isinstance(ans, bool) else str(ans).strip().lower() in {"yes", "true", "1"}
            prompt = f"{str(r.get('passage', '')).strip()}\nQuestion: {str(r['question']).strip()}?\nAnswer:".lstrip()
            out.append(Example(prompt, " yes" if yes else " no", (" no" if yes else " yes",)))
    elif {"prompt", "response"} <= keys:
        out = [Example(str(r["prompt"]), str(r["response"])) for r in records]
    elif "text" in keys:
        out = continuation_examples([str(r["text"]) for r in records])
    else:
        raise DataError(
            f"{source}: unrecognised columns {sorted(keys)}. Expected instruction/input/output (Alpaca), "
            "question/choices/answer (multiple choice), question/answer (yes/no), prompt/response or text."
        )
    out = [e for e in out if e.response.strip()]
    if not out:
        raise DataError(f"{source}: every example has an empty response.")
    return out


def continuation_examples(texts: Sequence[str], prompt_fraction: float = 0.5) -> list[Example]:
    """Split each text at a word boundary near ``prompt_fraction``: the continuation is the response."""
    out = []
    for t in texts:
        t = t.strip()
        if len(t) < 20:
            continue
        cut = t.rfind(" ", 0, max(1, int(len(t) * prompt_fraction)))
        cut = cut if cut > 0 else len(t) // 2
        out.append(Example(t[:cut], t[cut:]))
    return out


def load_examples(
    spec: str, *, split: str = "train", n: int | None = None, seed: int = 0
) -> list[Example]:
    """Examples from a data spec.

    ``corpora`` (or ``offline``): continuations of real text from the shipped corpora' default domains
    ("fit" split for train, "validation" for validation); a ``.json``/``.jsonl``/``.csv``/``.txt`` path;
    ``alpaca`` (tatsu-lab/alpaca, online); or any hub dataset name with Alpaca-style or task columns.
    """
    if spec in CORPORA_SPECS:
        corpus_split = "fit" if split == "train" else "validation"
        texts = passages(corpus_split, n or 256, min_chars=200, max_chars=500, seed=seed)
        return continuation_examples(texts, prompt_fraction=0.4)
    path = Path(spec)
    if path.suffix in {".json", ".jsonl", ".csv", ".txt"} or path.exists():
        if not path.is_file():
            raise DataError(f"data file {path} does not exist.")
        if path.stat().st_size == 0:
            raise DataError(f"data file {path} is empty; give at least one example.")
        examples = _load_file(path)
    else:
        examples = _load_hub(spec, split)
    if n is not None and len(examples) > n:
        rng = random.Random(seed)
        examples = rng.sample(examples, n)
    return examples


def text_file_passages(path: Path, min_chars: int = 200, max_chars: int = 500) -> list[str]:
    """A ``.txt`` file is one document: its paragraphs merged into passages, as for a corpus document."""
    text = _read_utf8(path).replace("\r\n", "\n")
    out: list[str] = []
    buf = ""
    for para in _PARA.split(text):
        para = para.strip()
        if not para:
            continue
        buf = f"{buf}\n\n{para}" if buf else para
        if len(buf) >= min_chars:
            out.append(buf[:max_chars])
            buf = ""
    if buf.strip() and (len(buf) >= 20 or not out):
        out.append(buf[:max_chars])
    out = [p for p in out if len(p.strip()) >= 20]
    if not out:
        raise DataError(f"{path} holds no passage of 20+ characters.")
    return out


def _read_utf8(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} is not UTF-8 text (byte {exc.start}); give a UTF-8 encoded data file."
        ) from None


def _load_file(path: Path) -> list[Example]:
    if path.suffix == ".txt":
        return continuation_examples(text_file_passages(path), prompt_fraction=0.4)
    _read_utf8(path)  # a binary file fails here with a clear message, not inside datasets
    import datasets

    kind = "csv" if path.suffix == ".csv" else "json"
    try:
        ds = datasets.load_dataset(kind, data_files=str(path.resolve()), split="train")
    except Exception as exc:  # datasets raises many types for malformed files
        raise DataError(
            f"cannot parse {path} as {kind.upper()}: {exc}. Fix the file's syntax."
        ) from exc
    return _from_records(list(ds), str(path))


def _load_hub(name: str, split: str) -> list[Example]:
    import datasets

    hub = {"alpaca": "tatsu-lab/alpaca"}.get(name, name)
    try:
        ds = datasets.load_dataset(hub, split=split)
    except Exception as exc:
        raise DataError(
            f"cannot load dataset {hub!r} ({type(exc).__name__}: {exc}). Offline, pass 'offline' or a local "
            "JSON/JSONL/CSV/TXT file."
        ) from exc
    return _from_records(list(ds), hub)


def split_examples(
    examples: Sequence[Example], val_fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Seeded train/validation split (at least one validation example when there are two or more)."""
    items = list(examples)
    random.Random(seed).shuffle(items)
    n_val = max(1, round(len(items) * val_fraction)) if len(items) > 1 and val_fraction > 0 else 0
    return items[n_val:], items[:n_val]


def encode(
    tokenizer, examples: Sequence[Example], max_length: int, *, targets: Targets = "response"
) -> list[Encoded]:
    """Tokenize prompt + response; the mask marks the scored tokens. Truncates at ``max_length``.

    ``targets="response"`` scores the response tokens only (the LM objective on instructions);
    ``"all"`` scores every token after the first, prompt included (distillation on whole passages).
    Raises DataError when no example keeps a scored token (e.g. prompts longer than max_length).
    """
    out: list[Encoded] = []
    dropped = 0
    for ex in examples:
        p_ids = tokenizer(ex.prompt, add_special_tokens=True)["input_ids"]
        full = tokenizer(ex.prompt + ex.response, add_special_tokens=True)["input_ids"]
        n_prompt = _common_prefix(p_ids, full) if targets == "response" else min(1, len(p_ids))
        full = full[:max_length]
        mask = [0] * min(n_prompt, len(full)) + [1] * max(0, len(full) - n_prompt)
        if sum(mask) == 0 or n_prompt == 0:
            dropped += 1
            continue
        out.append(Encoded(full, mask))
    if not out:
        raise DataError(
            f"no example has response tokens within max_length={max_length}: the template or prompt "
            "leaves nothing to train on. Raise --max-length or shorten the prompts."
        )
    if dropped:
        logger.warning("dropped %d of %d examples with no response tokens", dropped, len(examples))
    return out


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def collate(
    batch: Sequence[Encoded], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask, response_mask) tensors."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(batch), width), dtype=torch.long)
    resp = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        attn[i, :n] = 1
        resp[i, :n] = torch.tensor(e.response_mask)
    return ids, attn, resp
