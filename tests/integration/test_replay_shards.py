"""The replay's scoring actors on the shared local Ray: each adds up one shard of the stream,
and the driver's total is the same as scoring every batch in one process."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dnr.config import GateConfig
from dnr.evaluation.replay import score_day
from dnr.evaluation.scoring import ReplayScorer
from dnr.storage import Lake
from tests.unit.test_replay_scoring import CFG, _checkpoint, _spec, day  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration


def test_two_scorers_add_up_their_shards_to_the_single_process_sums(ray_cluster, day, tmp_path):  # noqa: F811
    import ray.data

    lake = Lake(str(tmp_path))
    spec = _spec({"candidate": _checkpoint(tmp_path / "c")})
    cfg = dataclasses.replace(CFG, gate=GateConfig(num_scorers=2, batch_size=64))
    blocks = [day.slice(i, 50) for i in range(0, day.num_rows, 50)]  # 8 blocks for 2 shards
    state = score_day(ray.data.from_arrow(blocks), spec, lake, cfg)

    scorer = ReplayScorer(spec, lake.root)
    direct = sum(scorer(day.slice(i, 64)).column("state")[0].values.to_numpy()
                 for i in range(0, day.num_rows, 64))
    assert state.accumulators["candidate"].compute()["requests"] == day.num_rows
    # the same sums, added in another order: equal to rounding
    np.testing.assert_allclose(state.to_vector(), direct, rtol=1e-9, atol=1e-9)
