"""Loading a checkpoint or a serving artifact never runs code from the file.

Each plant is a live exploit: the test first shows that the payload does create its marker file
when given to plain ``pickle`` / ``torch.export.load``, then that our loaders refuse the same bytes
and the marker file is not there. The attacker is assumed to rewrite the manifest's sha256 too
(the sha256 catches accidental or partial tampering, not an attacker with write access).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from dnr.checkpoints.reader import load_reranker
from dnr.config import DataConfig, JobConfig, config_to_json
from dnr.models import build_reranker
from dnr.storage import Lake
from dnr.serving import ARTIFACT_FILE, MANIFEST_FILE, ArtifactError, export_reranker, load_artifact
from dnr.training import checkpoint
from dnr.training.step import build_train_parts
from tests.unit.rerank_helpers import one_thread, tiny_model  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = JobConfig(data=DataConfig(max_list_len=8, history_len=4, num_buckets=64), model=tiny_model("denoise"))


class Plant:
    """Unpickling this opens ``marker`` for writing, which creates the file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickled(marker: Path) -> bytes:
    return pickle.dumps(Plant(marker))


def _torch_saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def clean_artifact(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return export_reranker(build_reranker(CFG.model, CFG.data), CFG, tmp_path_factory.mktemp("clean"))


@pytest.fixture
def artifact(clean_artifact, tmp_path) -> Path:
    """A fresh copy of the exported artifact for one test to tamper with."""
    return Path(shutil.copytree(clean_artifact, tmp_path / "artifact"))


def _plant_artifact(directory: Path, data: bytes) -> None:
    """Replace reranker.pt2 by ``data`` and give the manifest its sha256, as an attacker with
    write access to the artifact directory would."""
    (directory / ARTIFACT_FILE).write_bytes(data)
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    manifest["artifact"]["sha256"] = hashlib.sha256(data).hexdigest()
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))


def _rewrite(data: bytes, changes: dict[str, bytes]) -> bytes:
    """The pt2 archive ``data`` with the entries ``changes`` (relative to its root) replaced."""
    source = zipfile.ZipFile(io.BytesIO(data))
    root = source.namelist()[0].split("/", 1)[0] + "/"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            if info.filename[len(root):] not in changes:
                target.writestr(info.filename, source.read(info))
        for name, content in changes.items():
            target.writestr(root + name, content)
    return out.getvalue()


def _entry(data: bytes, name: str) -> bytes:
    archive = zipfile.ZipFile(io.BytesIO(data))
    return archive.read(archive.namelist()[0].split("/", 1)[0] + "/" + name)


# ---- checkpoints ------------------------------------------------------------------------------

def _genuine_checkpoint(tmp_path) -> tuple[Path, object]:
    parts = build_train_parts(CFG.model, CFG.data, CFG.dnr, CFG.optim)
    directory = checkpoint.save(tmp_path / "ckpt", parts, checkpoint.TrainingProgress(), config_to_json(CFG), {})
    checkpoint.restore(parts, checkpoint.load(directory))  # the genuine checkpoint loads
    return directory, parts


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("target, writer", [
    (checkpoint.DENSE_STATE_FILE, "torch.save"),
    (checkpoint.DENSE_STATE_FILE, "pickle.dump"),
    (f"{checkpoint.MODEL_DIR}/{checkpoint.METADATA_FILE}", "pickle.dump"),  # DCP's index, a pickle
])
def test_checkpoint_load_refuses_a_malicious_file(tmp_path, target, writer):
    directory, _ = _genuine_checkpoint(tmp_path)
    marker = tmp_path / "pwned-checkpoint"
    payload = {"reranker": Plant(marker)}
    data = _torch_saved(payload) if writer == "torch.save" else pickle.dumps(payload)
    pickle.loads(pickle.dumps(payload))  # the plant is live: plain unpickling creates the marker
    assert marker.exists()
    marker.unlink()

    (directory / target).write_bytes(data)
    with pytest.raises(checkpoint.UnsafeCheckpointError, match=f"{target}: refused") as refused:
        checkpoint.load(directory)
    assert "weights_only=False" in str(refused.value) and "Do not load it" in str(refused.value)
    assert not marker.exists()


def test_checkpoint_load_refuses_a_pickled_entry_among_the_tensors(tmp_path):
    """A well-formed DCP checkpoint whose entry is a pickled object, not a tensor: DCP itself
    would torch.load it with weights_only=False."""
    directory, parts = _genuine_checkpoint(tmp_path)
    marker = tmp_path / "pwned-entry"
    state = {"reranker": dict(parts.reranker.state_dict())}
    state["reranker"]["head.2.bias"] = Plant(marker)
    import torch.distributed.checkpoint as dcp

    shutil.rmtree(directory / checkpoint.MODEL_DIR)
    with pytest.warns(UserWarning):
        dcp.save(state, checkpoint_id=directory / checkpoint.MODEL_DIR, no_dist=True)
    with pytest.raises(checkpoint.UnsafeCheckpointError, match="'reranker.head.2.bias' is not a tensor"):
        checkpoint.restore(parts, checkpoint.load(directory))
    with pytest.raises(checkpoint.UnsafeCheckpointError, match="is not a tensor"):
        load_reranker(str(directory), Lake(str(tmp_path)))
    assert not marker.exists()


# ---- serving artifacts ------------------------------------------------------------------------

def test_a_pickle_in_place_of_the_artifact_is_refused(artifact, tmp_path):
    marker = tmp_path / "pwned-artifact"
    _plant_artifact(artifact, _pickled(marker))
    with pytest.raises(ArtifactError, match="not a pt2"):
        load_artifact(artifact)
    assert not marker.exists()


def _pickled_weight(data: bytes, marker: Path) -> bytes:
    """A weight whose payload config says use_pickle: torch.load(weights_only=False) in torch."""
    config = json.loads(_entry(data, "data/weights/model_weights_config.json"))
    name = next(iter(config["config"]))
    config["config"][name]["use_pickle"] = True
    return _rewrite(data, {"data/weights/model_weights_config.json": json.dumps(config).encode(),
                           "data/weights/" + config["config"][name]["path_name"]: _torch_saved(Plant(marker))})


def _pickled_example_inputs(data: bytes, marker: Path) -> bytes:
    """Example inputs are loaded weights_only=True, then silently again with weights_only=False."""
    return _rewrite(data, {"data/sample_inputs/model.pt": _torch_saved(Plant(marker))})


def _eval_in_a_shape(data: bytes, marker: Path) -> bytes:
    """Symbolic shapes are parsed with sympy.sympify, i.e. Python eval."""
    program = json.loads(_entry(data, "models/model.json"))
    symbol = next(iter(program["range_constraints"]))
    text = json.dumps(program).replace(
        f"Symbol('{symbol}', positive=True", f"Symbol('{symbol}', positive=[open('{marker}', 'w'), True][1]", 1)
    return _rewrite(data, {"models/model.json": text.encode()})


@pytest.mark.parametrize("plant", [_pickled_weight, _pickled_example_inputs, _eval_in_a_shape],
                         ids=["pickled-weight", "pickled-example-inputs", "eval-in-a-shape"])
def test_a_malicious_pt2_archive_runs_code_in_torch_but_is_refused_by_load_artifact(artifact, tmp_path, plant):
    marker = tmp_path / "pwned"
    data = plant((artifact / ARTIFACT_FILE).read_bytes(), marker)

    with contextlib.suppress(Exception):  # torch may fail after the payload ran, or load fine
        torch.export.load(io.BytesIO(data))
    assert marker.exists(), "the plant should be live in plain torch.export.load"
    marker.unlink()

    _plant_artifact(artifact, data)
    with pytest.raises(ArtifactError):
        load_artifact(artifact)
    assert not marker.exists()


@pytest.mark.parametrize("change, message", [
    (lambda p: p["graph_module"]["graph"]["nodes"][0].update(target="torch.os.system"), "torch.os.system"),
    (lambda p: p["graph_module"]["graph"]["nodes"][0].update(target="torch.ops.aten.from_file.default"),
     "from_file"),
    (lambda p: p["guards_code"].append("__import__('os').system('touch pwned') == 0"), "input guard"),
], ids=["python-call", "aten-file-op", "guard-code"])
def test_program_reaching_beyond_aten_compute_is_refused(artifact, change, message):
    data = (artifact / ARTIFACT_FILE).read_bytes()
    program = json.loads(_entry(data, "models/model.json"))
    change(program)
    _plant_artifact(artifact, _rewrite(data, {"models/model.json": json.dumps(program).encode()}))
    with pytest.raises(ArtifactError, match=message):
        load_artifact(artifact)


def test_unexpected_archive_entries_are_refused(artifact):
    data = _rewrite((artifact / ARTIFACT_FILE).read_bytes(), {"data/aotinductor/model/model.so": b"\x7fELF"})
    _plant_artifact(artifact, data)
    with pytest.raises(ArtifactError, match="unexpected entries.*aotinductor"):
        load_artifact(artifact)


def test_a_tampered_artifact_fails_the_sha256_check(artifact):
    data = bytearray((artifact / ARTIFACT_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (artifact / ARTIFACT_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        load_artifact(artifact)


def test_an_unknown_format_version_is_refused(artifact):
    manifest = json.loads((artifact / MANIFEST_FILE).read_text())
    manifest["format_version"] = 2
    (artifact / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="format version 2 unknown"):
        load_artifact(artifact)


def test_the_untouched_artifact_loads_after_a_rewrite_of_its_zip(artifact):
    """The checks refuse content, not our own archive re-packed: the refusals above are specific."""
    _plant_artifact(artifact, _rewrite((artifact / ARTIFACT_FILE).read_bytes(), {}))
    serving = load_artifact(artifact)
    assert serving.score([[1, 2, 3]], [[0.9, 0.5, 0.1]], [[4, 5]]).shape == (1, 3)
