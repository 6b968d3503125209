"""``lcc fit --calibration-domains`` chooses the prune's calibration text (issue 23).

The run's one data spec names the calibration domains; a prune on the shipped corpora reads exactly
those documents, so another choice is another calibration identity, another cached prune and other
masks, while the default domains keep the plain ``corpora`` name (and the cached prune's key).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from lcc_lens.corpora import SOURCES, split_documents
from lcc_lens.errors import DataError
from lcc_lens.fit import FitConfig
from lcc_lens.fit.stages import prune_config, resolve_pruned
from lcc_lens.pruning.data import calibration_identity, corpora_domains, load_calibration_texts


def _fit(dense, **data) -> FitConfig:
    prune = {"method": "wanda", "n_samples": 4, "seq_len": 32}
    return FitConfig.from_dict({"dense": str(dense), "prune": prune, "data": data})


def test_a_corpora_source_names_its_domains():
    assert corpora_domains("corpora") == SOURCES
    assert corpora_domains("corpora:dialogue, python_docs") == ("dialogue", "python_docs")
    assert corpora_domains("c4") is None
    with pytest.raises(DataError, match="unknown text domain"):
        corpora_domains("corpora:klingon")
    with pytest.raises(DataError, match="names no domain"):
        corpora_domains("corpora:")
    texts = load_calibration_texts("corpora:python_docs")
    assert texts == [d.text for d in split_documents("calibration", ("python_docs",))]
    assert calibration_identity("corpora:python_docs") != calibration_identity("corpora")


def test_the_fit_prunes_on_its_calibration_domains(llama_pair_dirs):
    dense = llama_pair_dirs[0]
    default = _fit(dense)
    assert prune_config(default).calibration == "corpora"  # the default domains: the plain name
    other = _fit(dense, calibration_domains=["python_docs"])
    assert prune_config(other).calibration == "corpora:python_docs"
    a, b = resolve_pruned(default), resolve_pruned(other)
    assert a != b  # another calibration text: another cached prune
    wa, wb = load_file(f"{a}/model.safetensors"), load_file(f"{b}/model.safetensors")
    masks_differ = [n for n in wa if wa[n].dim() == 2 and not torch.equal(wa[n] == 0, wb[n] == 0)]
    assert masks_differ  # and other Wanda masks
