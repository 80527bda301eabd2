"""How a daily run sits on Ray: the Train workers it asks for (checked before anything runs),
how the training stream is fed to them, and ``fit`` made interruptible."""

from __future__ import annotations

import copy
import os
import threading

from dnr.config import JobConfig


def scaling_config(cfg: JobConfig):
    """The Ray Train workers of a run: ``num_workers`` x (CPUs, a GPU if ``use_gpu``, and one
    unit of ``train.worker_resource`` when set)."""
    from ray.train import ScalingConfig

    resources = {"CPU": cfg.train.cpus_per_worker}
    if cfg.train.worker_resource:
        resources[cfg.train.worker_resource] = 1.0
    if cfg.train.use_gpu:
        resources["GPU"] = 1.0
    return ScalingConfig(num_workers=cfg.train.num_workers, use_gpu=cfg.train.use_gpu,
                         resources_per_worker=resources)


def check_schedulable(cfg: JobConfig, say=print) -> None:
    """Refuse, before anything runs, Train workers that the Ray cannot place (Ray Train would
    otherwise retry starting them without end), naming the settings and what the Ray has.

    On an embedded or test Ray (fixed resources) it is an error, and one CPU must stay free for
    Ray Data's reads (a full node makes them hang). On a cluster (``RAY_ADDRESS`` set) an
    autoscaler may still add nodes: a warning.
    """
    import ray

    workers = cfg.train.num_workers
    per_worker = scaling_config(cfg).resources_per_worker
    have = ray.cluster_resources()
    need = {k: v * workers for k, v in per_worker.items()}
    need["CPU"] = need.get("CPU", 0) + (0 if "RAY_ADDRESS" in os.environ else 1)
    short = {k: (v, have.get(k, 0)) for k, v in need.items() if v > have.get(k, 0) + 1e-9}
    if not short:
        return
    listed = ", ".join(f"{k} {n:g} (the Ray has {h:g})" for k, (n, h) in short.items())
    message = (f"train.num_workers={workers} x {per_worker} per worker (train.cpus_per_worker, "
               f"train.use_gpu, train.worker_resource) needs {listed}, one CPU left for Ray Data "
               "included on a fixed-size Ray")
    if "RAY_ADDRESS" in os.environ:
        say(f"[daily] WARNING {message}: waiting for the autoscaler")
        return
    raise ValueError(f"{message}. Lower train.num_workers or train.cpus_per_worker, or give the "
                     "embedded Ray more logical CPUs (--num-cpus).")


def ingest_config(cfg: JobConfig):
    """How Ray Train feeds the workers: the training stream split between them, its read-ahead
    capped at ``data.object_store_budget_mb`` of object-store memory."""
    from ray.data import DataContext, ExecutionResources
    from ray.train import DataConfig

    options = copy.deepcopy(DataContext.get_current().execution_options)  # Ray Train's default
    if cfg.data.object_store_budget_mb:
        options.resource_limits = ExecutionResources(
            object_store_memory=cfg.data.object_store_budget_mb * 1024**2)
    return DataConfig(execution_options=options)


def fit_interruptibly(trainer):
    """``trainer.fit()`` in a helper thread, so that Ctrl-C raises ``KeyboardInterrupt`` here at
    once: the lease is released on the way out and a re-run resumes the run's checkpoints. (In
    the main thread, Ray Train's own SIGINT handler asks the controller to abort and waits for
    it, which a controller stuck starting workers never answers; its third Ctrl-C exits 0.)"""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=run, name="ray-train-fit", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.5)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]
