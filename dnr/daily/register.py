"""What the driver does with a finished run's checkpoints: pick the one to register (the best by
its own validation score, else the last), then delete the run's others once it is registered."""

from __future__ import annotations

import pyarrow.fs as pafs

from dnr.storage import Lake
from dnr.training.validation import SCORE_KEY


def registered_checkpoint(fit, validating: bool) -> tuple:
    """(the checkpoint to register, the run's numeric metrics and validation curve) from a
    finished ``TorchTrainer`` result.

    Without validation, the last checkpoint. With it, the kept checkpoint with the best
    validation score of its own weights (the last one when none was scored: an empty hold-out);
    the metrics are the last report's, with the registered checkpoint's step and score."""
    last = fit.metrics or {}
    metrics = {k: v for k, v in last.items() if isinstance(v, (int, float))}
    if not validating:
        return fit.checkpoint, metrics
    metrics["valid/curve"] = last.get("valid/curve", [])
    scored = [(c, m) for c, m in (fit.best_checkpoints or [])
              if isinstance(m.get(SCORE_KEY), (int, float)) and m[SCORE_KEY] >= 0.0]
    if not scored:
        return fit.checkpoint, metrics
    checkpoint, best = max(scored, key=lambda pair: pair[1][SCORE_KEY])
    metrics.update({"train/last_global_step": metrics.get("global_step", 0),
                    "global_step": best["global_step"], "valid/registered": best[SCORE_KEY]})
    return checkpoint, metrics


def prune_run_checkpoints(lake: Lake, registered_uri: str) -> list[str]:
    """Delete the run's other ``checkpoint_*`` directories (earlier periodic ones, and those of
    interrupted attempts, which Ray Train's ``num_to_keep`` does not see), keeping the registered
    one; returns what was deleted. Called once the version is in the registry."""
    fs = lake.filesystem()
    keep = lake.fs_path(registered_uri).rstrip("/")
    run_dir = keep.rsplit("/", 1)[0]
    selector = pafs.FileSelector(run_dir, allow_not_found=True)
    deleted = []
    for info in fs.get_file_info(selector):
        name = info.path.rstrip("/").rsplit("/", 1)[-1]
        if info.type == pafs.FileType.Directory and name.startswith("checkpoint_") \
                and info.path.rstrip("/") != keep:
            fs.delete_dir(info.path)
            deleted.append(info.path)
    return deleted
