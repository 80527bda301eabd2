"""The serving export: the artifact scores exactly as the eager model on the training collate's
batch, in every score mode and at shapes other than the export example's; the in-program hash is
bit-exact with training's; the manifest says what serving needs; a registry version round-trips."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from dnr.config import SCORE_MODES, DataConfig, JobConfig, config_from_dict, config_to_json
from dnr.data import hashing as np_hashing
from dnr.data.collate import collate
from dnr.models import PAD_LOGIT, build_reranker
from dnr.registry import ModelVersion, Registry
from dnr.storage import Lake
from dnr.serving import (
    ARTIFACT_FILE,
    MANIFEST_FILE,
    ArtifactError,
    export_reranker,
    load_artifact,
    max_abs_difference,
)
from dnr.serving import hashing as torch_hashing
from dnr.training import checkpoint
from dnr.training.step import build_train_parts
from tests.factories import make_rows, to_table, write_logs
from tests.unit.rerank_helpers import one_thread, tiny_model  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = DataConfig(max_list_len=12, history_len=6, num_buckets=97, hash_seed=7)
TOLERANCE = 1e-5
"""Exported and eager graphs may pick different attention kernels: float rounding, not logic."""


def _config(score_mode: str, family: str = "prm") -> JobConfig:
    return JobConfig(data=DATA, model=dataclasses.replace(tiny_model(score_mode), family=family))


def _trained_like(cfg: JobConfig, seed: int = 0) -> torch.nn.Module:
    """A reranker moved away from its initialisation (PRM's head starts at zero, which would make
    every score mode a fixed function of the score), so that the logits depend on the items."""
    torch.manual_seed(seed)
    model = build_reranker(cfg.model, cfg.data)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.3 * torch.randn_like(param))
    return model


def _rows_table(seed: int = 0) -> pa.Table:
    """Requests with 3, 7 and 12 candidates (padding in the batch), 0 to 9 history items (an
    empty history, and histories longer than data.history_len that collate cuts to the tail)."""
    rows = make_rows(4, list_len=12, seed=seed, history_len=9) + make_rows(3, list_len=7, seed=seed + 1)
    rows += make_rows(2, list_len=3, seed=seed + 2, history_len=0)
    rows[0]["candidate_item_ids"][0] = -(2**63)  # extreme ids hash like any other
    rows[1]["history_item_ids"][-1] = 2**63 - 1
    return to_table(rows)


@pytest.fixture(scope="module", params=SCORE_MODES)
def exported(request, tmp_path_factory):
    """(config, eager model, loaded artifact, artifact directory): one export per score mode."""
    cfg = _config(request.param)
    model = _trained_like(cfg)
    model.train()  # export must switch to eval itself, and give the mode back
    directory = export_reranker(model, cfg, tmp_path_factory.mktemp(request.param), version="test-v1")
    assert model.training
    return cfg, model.eval(), load_artifact(directory), directory


def test_artifact_equals_eager_model_on_collated_request_logs(exported):
    cfg, model, serving, _ = exported
    table = _rows_table()
    batch = collate(table, cfg.data)
    assert batch.list_len == 12 and not batch.history_mask[-1].any()  # padding and an empty history

    with torch.no_grad():
        eager = model(batch)
    served = serving.score_table(table)

    assert served.shape == eager.shape == (9, 12)
    assert torch.allclose(served, eager, atol=TOLERANCE, rtol=0)
    assert (served[~batch.mask] == PAD_LOGIT).all()
    assert max_abs_difference(serving, model, table) <= TOLERANCE
    # the logits do depend on the items: the comparison is not between two constants
    assert served[batch.mask].std() > 1e-3


@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 12, 6), (3, 4, 0)], ids=["B1-L1-H1", "max-L-H", "no-history"])
def test_dynamic_shapes_on_raw_arrays(exported, shape):
    """Export used B=L=H=2: other batch sizes, list lengths (1..max) and history lengths work."""
    cfg, model, serving, _ = exported
    batch, length, history = shape
    rng = np.random.default_rng(sum(shape))
    ids = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, (batch, length), dtype=np.int64)
    hist = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, (batch, history), dtype=np.int64)
    scores = rng.random((batch, length), dtype=np.float32)
    mask = np.ones((batch, length), dtype=bool)
    mask[0, (length + 1) // 2:] = False
    hist_mask = np.ones((batch, history), dtype=bool)
    if history:
        hist_mask[-1, :] = False

    served = serving.score(ids, scores, hist, mask, hist_mask)

    from dnr.data.batch import RerankBatch

    def buckets(x, m):
        return torch.from_numpy(np.where(m, np_hashing.bucketize(x, DATA.num_buckets, DATA.hash_seed), 0))

    if not history:  # what collate makes of an empty history: one masked slot
        hist, hist_mask = np.zeros((batch, 1), np.int64), np.zeros((batch, 1), bool)
    reference = RerankBatch(
        item_ids=buckets(ids, mask), scores=torch.from_numpy(np.where(mask, scores, 0)),
        labels=torch.zeros(batch, length), mask=torch.from_numpy(mask), label_mask=torch.from_numpy(mask),
        history_ids=buckets(hist, hist_mask), history_mask=torch.from_numpy(hist_mask),
    )
    with torch.no_grad():
        eager = model(reference)
    assert served.shape == (batch, length)
    assert torch.allclose(served, eager, atol=TOLERANCE, rtol=0)


def test_inputs_beyond_the_trained_ranges_are_refused(exported):
    _, _, serving, _ = exported
    ids, scores = np.ones((2, 13), np.int64), np.full((2, 13), 0.5, np.float32)
    with pytest.raises(ValueError, match="max_list_len=12"):
        serving.score(ids, scores, np.ones((2, 3), np.int64))
    with pytest.raises(ValueError, match="history_len=6"):
        serving.score(ids[:, :4], scores[:, :4], np.ones((2, 7), np.int64))
    with pytest.raises(ValueError, match="same shape"):
        serving.score(ids[:, :4], scores[:, :3], np.ones((2, 3), np.int64))


def test_manifest_describes_the_artifact(exported):
    cfg, _, serving, directory = exported
    manifest = json.loads((Path(directory) / MANIFEST_FILE).read_text())

    assert manifest["format_version"] == 1 and manifest["model_version"] == "test-v1"
    assert (manifest["family"], manifest["score_mode"]) == (cfg.model.family, cfg.model.score_mode)
    assert config_from_dict(manifest["config"]) == cfg == serving.config
    hashing = manifest["hashing"]
    assert (hashing["algorithm"], hashing["num_buckets"], hashing["hash_seed"]) == ("splitmix64", 97, 7)
    assert [(i["name"], i["dtype"], i["shape"]) for i in manifest["inputs"]] == [
        ("item_ids", "int64", ["B", "L"]), ("mask", "bool", ["B", "L"]), ("scores", "float32", ["B", "L"]),
        ("history_ids", "int64", ["B", "H"]), ("history_mask", "bool", ["B", "H"])]
    assert (manifest["output"]["name"], manifest["output"]["shape"]) == ("logits", ["B", "L"])
    assert manifest["dynamic_dims"]["L"] == {"min": 1, "max": 12}
    assert manifest["dynamic_dims"]["H"] == {"min": 1, "max": 6}
    assert (manifest["max_list_len"], manifest["history_len"]) == (12, 6)
    assert manifest["torch_version"] == torch.__version__
    data = (Path(directory) / ARTIFACT_FILE).read_bytes()
    assert manifest["artifact"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["artifact"]["bytes"] == len(data)
    # the generator is training-only: no generator weight in the artifact
    assert b"generator" not in data


@pytest.mark.slow
def test_the_degre_family_exports_too(tmp_path):
    """The served DeGRe generator decodes its list greedily: the loop over L must survive export
    with L dynamic (its graph is larger: 5-15 s to export here, hence marked slow)."""
    cfg = _config("none", family="degre")
    model = _trained_like(cfg).eval()
    serving = load_artifact(export_reranker(model, cfg, tmp_path))
    for seed in (0, 1):
        assert max_abs_difference(serving, model, _rows_table(seed)) <= TOLERANCE
    served = serving.score([[5, 6, 7]], [[0.9, 0.5, 0.2]], [[8]])
    assert served.shape == (1, 3) and torch.isfinite(served).all()


@pytest.mark.parametrize("num_buckets", [2, 3, 97, 1 << 16, (1 << 18) + 3, 1 << 31])
@pytest.mark.parametrize("seed", [0, 7, -1, 2**64 - 1, 123456789012345])
def test_in_program_hash_is_bit_exact_with_training(num_buckets, seed):
    rng = np.random.default_rng(num_buckets % 1000 + 1)
    extremes = [0, 1, -1, 2**63 - 1, -(2**63), 2**62, -(2**62), 2**32, 2**32 - 1, -(2**32), 2**31]
    ids = np.concatenate([np.array(extremes, dtype=np.int64),
                          rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, 20_000,
                                       dtype=np.int64, endpoint=True)])
    expected = np_hashing.bucketize(ids, num_buckets, seed)
    got = torch_hashing.bucketize(torch.from_numpy(ids), num_buckets, seed).numpy()
    assert np.array_equal(got, expected)
    assert np.array_equal(torch_hashing.splitmix64(torch.from_numpy(ids), seed).numpy().view(np.uint64),
                          np_hashing.splitmix64(ids, seed))


@pytest.mark.parametrize("kind", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_export_version_round_trip_through_the_registry(kind, request, tmp_path, capsys):
    """A checkpoint registered as production -> jobs/export_model.py -> <lake>/serving/<version>/,
    scoring like the checkpoint's reranker on the lake's newest rows; on S3 the artifact is read
    back from the bucket, and a tampered one is refused there too."""
    local_lake = request.getfixturevalue(f"{kind}_lake")
    cfg = _config("denoise")
    torch.manual_seed(1)
    parts = build_train_parts(cfg.model, cfg.data, cfg.dnr, cfg.optim)
    torch.nn.init.normal_(parts.reranker.head[-1].weight, std=0.5)
    where = local_lake.uri("checkpoints", "dnr-2026-01-01") if kind == "local" else tmp_path / "ckpt"
    ckpt = checkpoint.save(where, parts,
                           checkpoint.TrainingProgress(global_step=3), config_to_json(cfg), lineage={})
    Registry(local_lake).register(ModelVersion(
        version="dnr-v0001", model_name="dnr", family="prm", status="production", checkpoint_uri=str(ckpt),
        config_json=config_to_json(cfg), created_at=dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)))
    write_logs(local_lake, make_rows(5, ds="2026-01-01", list_len=4) + make_rows(6, ds="2026-01-02", list_len=9))

    job = _load_job()
    assert job.main(["--lake", local_lake.root, "--version", "production"]) == 0

    out = capsys.readouterr().out
    target = local_lake.uri("serving", "dnr-v0001")
    assert f"wrote {target}" in out and "6 rows of request_logs ds=2026-01-02" in out
    assert float(out.rsplit("=", 1)[1]) <= TOLERANCE
    serving = load_artifact(target)
    assert serving.manifest["model_version"] == "dnr-v0001"
    assert max_abs_difference(serving, parts.reranker, _rows_table(seed=5)) <= TOLERANCE
    if kind == "s3":
        fs, key = local_lake.filesystem(), local_lake.fs_path(f"{target}/{ARTIFACT_FILE}")
        with fs.open_input_stream(key) as f:
            data = f.read()
        with fs.open_output_stream(key) as f:  # one byte changed after export
            f.write(data[:-1] + bytes([data[-1] ^ 1]))
        with pytest.raises(ArtifactError, match="differs from the manifest"):
            load_artifact(target)
        with pytest.raises(FileNotFoundError, match="dnr-v0009/manifest.json: no such object"):
            load_artifact(local_lake.uri("serving", "dnr-v0009"))
        return
    # a lake without request logs: the parity check falls back to synthetic requests
    rows, source = job.parity_rows(Lake(str(tmp_path / "empty")), cfg.data)
    assert source == f"{job.SYNTHETIC_ROWS} synthetic requests" and rows.num_rows == job.SYNTHETIC_ROWS
    assert max_abs_difference(serving, parts.reranker, rows) <= TOLERANCE


def _load_job():
    spec = importlib.util.spec_from_file_location("export_model", Path(__file__).parents[2] / "jobs/export_model.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    return job
