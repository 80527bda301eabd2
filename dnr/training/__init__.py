"""What runs inside a Ray Train worker: the entry point and its loop (:mod:`.loop`, given a
:class:`~dnr.training.worker_spec.WorkerSpec`), the pure-PyTorch step of each family
(:mod:`.step`), the sharding of item tables (:mod:`.sharding`), the optimizers and schedule,
in-run validation (:mod:`.validation`), the TensorBoard log and the checkpoint writer
(:mod:`.checkpoint`).

Every Train worker runs it, in its own process. It may touch the process group (all-reduces,
DDP, TorchRec sharding), its dataset shard, the lake's ``checkpoints``/``tensorboard`` prefixes
through Ray Train, and the progress board it was handed. It never reads the registry or holds
the lake's lease: the driver (:mod:`dnr.daily`) does.
"""
