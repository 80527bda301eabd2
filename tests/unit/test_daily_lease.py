"""Two daily runs never train at once on the same lake: the second is refused before any work."""

from __future__ import annotations

import pytest

from dnr.config import load_config
from dnr.lease import LakeLease, LeaseHeld
from dnr.storage import Lake
from dnr.daily.run import run_daily


def test_a_second_run_on_the_same_lake_and_model_is_refused(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    with LakeLease(lake, "train_daily/dnr", ttl_s=60, owner="the 02:00 run"):
        with pytest.raises(LeaseHeld, match="the 02:00 run"):
            run_daily(lake, load_config(), verbose=False)
    # another model line on the same lake has its own lease
    with LakeLease(lake, "train_daily/dnr", ttl_s=60), LakeLease(lake, "train_daily/other", ttl_s=60):
        pass
