"""Sharded checkpoints, without Ray: real gloo process groups of 2 and 1 processes.

A checkpoint written by 2 workers loads onto 1 and back onto 2 (resharding on load) with every
tensor equal: the table rows, the fused row-wise Adagrad state, the dense weights and AdamW.
This is the path both a resumed run (``ray.train.get_checkpoint()``) and a daily warm start
take in ``dnr.training.loop._start``. The sharded checkpoint also loads whole into one process
(replay scoring, serving export) with the logits the sharded model gave, and a tampered index
is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dnr.checkpoints.reader import load_reranker
from dnr.config import config_to_json, load_config
from dnr.serving import export_reranker, load_artifact
from dnr.storage import Lake
from dnr.training import checkpoint as ckpt
from dnr.training.checkpoint import MODEL_DIR, read_metadata
from dnr.training.sharding import distribute
from dnr.training.step import build_train_parts, train_step, unwrap
from tests.unit.rerank_helpers import make_batch

pytestmark = pytest.mark.integration

CFG = load_config(None, ["data.num_buckets=64", "data.max_list_len=16", "data.history_len=8",
                         "model.d_model=16", "model.n_layers=1", "model.n_heads=2", "model.ff_dim=32",
                         "model.dropout=0", "dnr.lambda_e=2", "dnr.generator_hidden=16"])


def _worker(rank: int, world: int, store: str, job: dict) -> None:
    """Build -> distribute -> (restore) -> (train) -> save, as the Train loop does."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        torch.manual_seed(10 + rank)  # different on purpose: DDP and the checkpoint must align them
        parts = build_train_parts(CFG.model, CFG.data, CFG.dnr, CFG.optim, table_device="meta")
        parts = distribute(parts, torch.device("cpu"), CFG.train, CFG.optim)
        progress = ckpt.TrainingProgress()
        if job.get("load"):
            loaded = ckpt.load(job["load"])
            ckpt.restore(parts, loaded)
            progress = loaded.progress
        for step in range(job.get("steps", 0)):  # each rank its own requests, as from its data shard
            train_step(make_batch(seed=100 * step + rank), parts, progress.global_step, CFG.model, CFG.dnr,
                       CFG.optim)
            progress.global_step += 1
        ckpt.save(Path(job["save"]) / f"rank{rank}", parts, progress, config_to_json(CFG), {}, rank=rank)
        unwrap(parts.reranker).eval()
        with torch.no_grad():
            logits = parts.reranker(make_batch(seed=7))  # collective: both ranks score the same batch
        weight = parts.reranker.state_dict()["item_embedding.collection.embeddings.item.weight"]
        torch.save({"logits": logits, "shards": [(s.metadata.shard_offsets, s.metadata.shard_sizes)
                                                 for s in weight.local_shards()]},
                   Path(job["save"]) / f"out{rank}.pt")
    finally:
        dist.destroy_process_group()


def _run(world: int, tmp_path: Path, name: str, **job) -> Path:
    """Run ``_worker`` on ``world`` processes; returns the checkpoint, gathered as Ray Train does."""
    out = tmp_path / name
    out.mkdir()
    mp.start_processes(_worker, args=(world, str(tmp_path / f"{name}.store"), {**job, "save": str(out)}),
                       nprocs=world, start_method="spawn")
    merged = out / "checkpoint"
    for rank in range(world):  # Ray Train uploads every rank's directory into one checkpoint
        for path in (out / f"rank{rank}").rglob("*"):
            if path.is_file():
                target = merged / path.relative_to(out / f"rank{rank}")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(path.read_bytes())
    return merged


def _whole(checkpoint: Path) -> dict[str, torch.Tensor]:
    """Every DCP tensor of a checkpoint as one whole tensor (read in one process)."""
    metadata = read_metadata(checkpoint / MODEL_DIR)
    target = {key: torch.zeros(tuple(md.size), dtype=md.properties.dtype)
              for key, md in metadata.state_dict_metadata.items()}
    ckpt.load_tensors(checkpoint, target)
    return target


@pytest.fixture(scope="module")
def two_rank_checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    """5 steps on 2 workers (2 heuristic, 3 adversarial): (checkpoint, worker outputs)."""
    tmp = tmp_path_factory.mktemp("sharded")
    return _run(2, tmp, "two", steps=5), tmp / "two"


def test_a_checkpoint_reshards_from_two_workers_to_one_and_back(two_rank_checkpoint, tmp_path):
    two, outputs = two_rank_checkpoint
    shards = [torch.load(outputs / f"out{r}.pt", weights_only=True)["shards"] for r in (0, 1)]
    assert shards == [[([0, 0], [32, 16])], [([32, 0], [32, 16])]]  # row-wise: half the rows each
    one = _run(1, tmp_path, "one", load=str(two))
    back = _run(2, tmp_path, "back", load=str(one))

    reference = _whole(two)
    table_opt = "reranker_table_opt.item_embedding.collection.embeddings.item.weight.item.momentum1"
    assert table_opt in reference and reference[table_opt].abs().sum() > 0  # the fused Adagrad state
    for other in (one, back):
        loaded = _whole(other)
        assert loaded.keys() == reference.keys()
        for key, value in reference.items():
            assert torch.equal(loaded[key], value), f"{key} changed across the resharding"
        dense, ref_dense = (torch.load(d / ckpt.DENSE_STATE_FILE, weights_only=True) for d in (other, two))
        for slot in ("reranker_opt", "generator_opt"):
            for index, state in ref_dense[slot]["state"].items():
                for name, tensor in state.items():
                    assert torch.equal(dense[slot]["state"][index][name], tensor), f"{slot}.{index}.{name}"
        assert json.loads((other / ckpt.PROGRESS_FILE).read_text())["global_step"] == 5


def test_the_sharded_checkpoint_loads_whole_in_one_process_and_exports(two_rank_checkpoint, tmp_path):
    two, outputs = two_rank_checkpoint
    sharded_logits = torch.load(outputs / "out0.pt", weights_only=True)["logits"]
    model, cfg = load_reranker(str(two), Lake(str(tmp_path)))
    with torch.no_grad():
        assert torch.allclose(model(make_batch(seed=7)), sharded_logits, atol=1e-5)
    served = load_artifact(export_reranker(model, cfg, tmp_path / "serving"))
    from tests.unit.test_export import TOLERANCE, _rows_table, max_abs_difference

    assert max_abs_difference(served, model, _rows_table(seed=3)) <= TOLERANCE


def test_a_tampered_index_of_a_sharded_checkpoint_is_refused(two_rank_checkpoint, tmp_path):
    two, _ = two_rank_checkpoint
    copy = tmp_path / "copy"
    for path in two.rglob("*"):
        if path.is_file():
            (copy / path.relative_to(two)).parent.mkdir(parents=True, exist_ok=True)
            (copy / path.relative_to(two)).write_bytes(path.read_bytes())
    assert len(list((copy / MODEL_DIR).glob("*.distcp"))) == 2
    marker = tmp_path / "pwned"
    (copy / MODEL_DIR / ckpt.METADATA_FILE).write_bytes(
        b"cbuiltins\nopen\n(S" + repr(str(marker)).encode() + b"\nS'w'\ntR.")
    with pytest.raises(ckpt.UnsafeCheckpointError, match="refused to load builtins.open"):
        ckpt.load(copy)
    assert not marker.exists()


def test_the_fused_table_optimizer_updates_rows_like_the_plain_one(tmp_path):
    """One process: the same model and batch, one step unsharded (torchrec.optim.RowWiseAdagrad
    over the whole table) and one sharded (fused EXACT_ROWWISE_ADAGRAD): the same rows."""
    cfg = load_config(None, [f"{k}={v}" for k, v in {
        "data.num_buckets": 64, "data.max_list_len": 16, "data.history_len": 8, "model.d_model": 16,
        "model.n_layers": 1, "model.n_heads": 2, "model.ff_dim": 32, "model.dropout": 0,
        "model.score_mode": "concat", "dnr.enabled": "false"}.items()])
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        plain = build_train_parts(cfg.model, cfg.data, cfg.dnr, cfg.optim)
        ckpt.save(tmp_path / "start", plain, ckpt.TrainingProgress(), config_to_json(cfg), {})
        sharded = distribute(build_train_parts(cfg.model, cfg.data, cfg.dnr, cfg.optim, table_device="meta"),
                             torch.device("cpu"), cfg.train, cfg.optim)
        start = {"reranker": sharded.reranker.state_dict()}
        ckpt.load_tensors(tmp_path / "start", start, distributed=True)
        sharded.reranker.load_state_dict(start["reranker"])
        for parts in (plain, sharded):  # the head starts at zero: rows move from the second step on
            for step in range(3):
                train_step(make_batch(seed=step), parts, step, cfg.model, cfg.dnr, cfg.optim)
        key = "item_embedding.collection.embeddings.item.weight"
        plain_rows = plain.reranker.state_dict()[key]
        after = torch.cat([s.tensor for s in sharded.reranker.state_dict()[key].local_shards()])
        moved = (after - _whole(tmp_path / "start")[f"reranker.{key}"]).abs().sum(dim=1) > 0
        assert 10 < int(moved.sum()) < 64  # the rows of the batch moved, the others did not
        assert torch.allclose(after, plain_rows, atol=1e-6)
        dense = {k: v for k, v in unwrap(sharded.reranker).state_dict().items() if "item_embedding" not in k}
        for name, value in dense.items():
            assert torch.allclose(value, plain.reranker.state_dict()[name], atol=1e-6), name
    finally:
        dist.destroy_process_group()
