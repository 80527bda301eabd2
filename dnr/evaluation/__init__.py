"""The offline replay evaluation of a candidate on a held-out day (:mod:`.replay`): additive
scoring state per batch (:mod:`.scoring`), the paired bootstrap (:mod:`.bootstrap`), the gate
(:mod:`.gate`) and the report (:mod:`.report`).

Runs in a job's driver (``jobs/replay_eval.py``, or the daily job's last phase) and in the
scoring actors it starts, which load checkpoints through :mod:`dnr.checkpoints` only. It may
touch the lake (the day's rows, quarantine, ``replay_reports``, the registry when told to apply
its decision) and Ray Data; it never joins a process group or trains. The ranking metrics it
shares with in-run validation are :mod:`dnr.metrics`.
"""
