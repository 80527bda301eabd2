"""The daily job as its driver runs it: plan the window (:mod:`.plan`), scan and quarantine it,
start the Train workers (:mod:`.placement`) and draw their progress (:mod:`.progress`), register
the best checkpoint and prune the others (:mod:`.register`), replay and gate, and print the
summary (:mod:`.report`); :func:`dnr.daily.run.run_daily` runs the phases (:mod:`.run`).

Runs in the job's driver process only (``jobs/train_daily.py``, under ``ray job submit`` or on an
embedded Ray). It may touch the lake (the Delta log, the registry, the lease, the quarantine
commit), start Ray Data executions, the ``TorchTrainer`` and actors (the progress board, the
replay's scorers), and hold their handles. It never joins a process group or steps a model:
what runs inside a Train worker is :mod:`dnr.training`.
"""
