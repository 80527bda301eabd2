"""A serving process needs torch, not the training stack: ``from dnr.serving import load_artifact``,
loading an exported artifact and scoring with it import torch (with numpy) and ``dnr.config``'s
pyyaml, never ray, deltalake, pyarrow, torchrec, fbgemm_gpu or tensorboard. Each check runs in a
fresh interpreter, where nothing else has imported them first."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch

from dnr.config import DataConfig, JobConfig
from dnr.models import build_reranker
from dnr.serving import export_reranker, load_artifact
from tests.unit.rerank_helpers import one_thread, tiny_model  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]
TRAINING_STACK = ("ray", "deltalake", "torchrec", "fbgemm_gpu", "pyarrow", "tensorboard")

# stdout: a JSON line with the training-stack modules in sys.modules, the third-party top-level
# packages the loader added to those of `import torch, numpy`, and the logits it computed
LOAD_AND_SCORE = """
import json, sys
import numpy, torch

def third_party():
    return {m.split(".")[0] for m in sys.modules
            if m.split(".")[0] not in sys.stdlib_module_names and not m.startswith("_")}

before = third_party()
from dnr.serving import load_artifact

serving = load_artifact(sys.argv[1])
logits = serving.score([[11, 12, 13], [14, 15, 0]], [[0.9, 0.5, 0.1], [0.7, 0.3, 0.0]], [[21, 22], [23, 0]],
                       mask=[[True, True, True], [True, True, False]], history_mask=[[True, True], [True, False]])
heavy = set(sys.argv[2].split(","))
print(json.dumps({"training_stack": sorted(m for m in sys.modules if m.split(".")[0] in heavy),
                  "added": sorted(third_party() - before), "logits": logits.tolist()}))
"""


def _python(code: str, *args: str) -> dict:
    """Run ``code`` in a fresh interpreter that imports this checkout's ``dnr``; its JSON line."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group()).lower()


def _modules_of(*roots: str) -> set[str]:
    """Top-level modules of the distributions ``roots`` and everything they require (extras aside)."""
    closure, todo = set(), [_name(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in closure:
            continue
        closure.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [_name(r) for r in requires if "extra ==" not in r]
    return {module for module, dists in metadata.packages_distributions().items()
            if any(_name(d) in closure for d in dists)}


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    """A tiny reranker, exported once (weights moved off their initialisation, as in test_export)."""
    cfg = JobConfig(data=DataConfig(max_list_len=4, history_len=3, num_buckets=31, hash_seed=5),
                    model=tiny_model("denoise"))
    torch.manual_seed(0)
    model = build_reranker(cfg.model, cfg.data)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.3 * torch.randn_like(param))
    return export_reranker(model.eval(), cfg, tmp_path_factory.mktemp("artifact"), version="imports-v1")


def test_loading_and_scoring_an_artifact_imports_no_training_stack(artifact):
    found = _python(LOAD_AND_SCORE, str(artifact), ",".join(TRAINING_STACK))

    assert found["training_stack"] == []
    # beyond torch and numpy: what torch itself requires (sympy, networkx, ... torch.export
    # imports them on first use), the package and pyyaml (dnr.config reads the manifest's config;
    # cython_runtime comes with its C extension): the base dependencies of pyproject.toml
    allowed = _modules_of("torch", "numpy", "pyyaml") | {"dnr", "cython_runtime"}
    assert set(found["added"]) - allowed == set()
    assert "dnr" in found["added"]
    # it did load and score: the same logits as the artifact loaded here
    expected = load_artifact(artifact).score(
        [[11, 12, 13], [14, 15, 0]], [[0.9, 0.5, 0.1], [0.7, 0.3, 0.0]], [[21, 22], [23, 0]],
        mask=[[True, True, True], [True, True, False]], history_mask=[[True, True], [True, False]])
    assert torch.allclose(torch.tensor(found["logits"]), expected, atol=1e-5, rtol=0)


def test_importing_dnr_imports_nothing_else():
    code = ("import json, sys\nimport dnr\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules if not m.startswith('_')}"
            " - set(sys.stdlib_module_names))))")
    assert _python(code) == ["dnr"]


def test_the_export_side_is_imported_on_first_use():
    import dnr.serving as serving

    for name in serving.__all__:
        assert getattr(serving, name) is not None, name
    assert set(serving.__all__) <= set(dir(serving))
    with pytest.raises(AttributeError, match="has no attribute 'export_everything'"):
        serving.export_everything  # noqa: B018


def test_the_loader_tells_s3_apart_as_the_lake_does():
    from dnr.serving.artifact import _S3_PREFIXES
    from dnr.storage import Lake

    for uri in ("s3://b/serving/v1", "s3a://b/v1", "/tmp/s3://x", "file:///tmp/a", "S3://b", "out/v1"):
        assert uri.startswith(_S3_PREFIXES) == Lake.is_s3_uri(uri), uri
