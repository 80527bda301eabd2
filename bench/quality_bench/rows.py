"""The rows of the quality table: what each ranks with and how it is trained, the baseline and
the metrics reported at K."""

from __future__ import annotations

from dataclasses import dataclass

K = 6
METRICS = (f"H@{K}", f"N@{K}", f"M@{K}", f"F1@{K}", "AUC")


DNR_BASE = "<dnr base>"
"""A DNR row's score mode placeholder: the run's ``--dnr-mode`` (BenchConfig.dnr_mode)."""


@dataclass(frozen=True)
class Row:
    """One line of the table: a fixed ranking (``scorer``) or a reranker trained with a score mode."""

    name: str
    scorer: str = "model"
    """retriever (score = retriever score), oracle (score = true_click_prob), model (the served
    model) or evaluator (the DeGRe evaluator decoding greedily, from the same training run)."""
    score_mode: str = ""
    """The reranker's ``model.score_mode`` (model rows only)."""
    dnr: tuple[tuple[str, object], ...] = ()
    """``DNRConfig`` fields this row overrides on top of the preset's."""
    family: str = "prm"
    """``model.family``: prm or degre."""
    degre: tuple[tuple[str, object], ...] = ()
    """``DeGReConfig`` fields this row overrides on top of the preset's."""

    @property
    def training(self) -> tuple:
        """Rows with the same key share one training run per seed (evaluator vs generator rows)."""
        return (self.family, self.score_mode, self.dnr, self.degre)


NAIVE = (("enabled", False),)
"""The naive score modes: the same reranker trained with plain BCE (no DNR objectives)."""

ROWS: tuple[Row, ...] = (
    Row("retriever order", scorer="retriever"),
    Row("PRM none", score_mode="none", dnr=NAIVE),
    Row("PRM concat", score_mode="concat", dnr=NAIVE),
    Row("PRM add", score_mode="add", dnr=NAIVE),
    Row("PRM weight", score_mode="weight", dnr=NAIVE),
    Row("PRM denoise", score_mode="denoise", dnr=NAIVE),
    # DNR rows train the DNR objectives on the base score mode ``--dnr-mode`` (default denoise).
    Row("DNR-G", score_mode=DNR_BASE, dnr=(("heuristic", "gaussian"),)),
    Row("DNR-B", score_mode=DNR_BASE, dnr=(("heuristic", "beta"),)),
    # The ablations are of DNR-B (the config's default heuristic).
    Row("DNR-B w/o L_adv", score_mode=DNR_BASE, dnr=(("heuristic", "beta"), ("use_adv", False))),
    Row("DNR-B w/o L_x", score_mode=DNR_BASE, dnr=(("heuristic", "beta"), ("use_lx", False))),
    Row("DNR-B heuristic only", score_mode=DNR_BASE,
        dnr=(("heuristic", "beta"), ("use_generator", False))),
    # The cheaper-step option (not the default): the synthetic copy for half of each batch.
    Row("DNR-B half synthetic", score_mode=DNR_BASE,
        dnr=(("heuristic", "beta"), ("synthetic_fraction", 0.5))),
    Row("DNR-B 0.3 synthetic", score_mode=DNR_BASE,
        dnr=(("heuristic", "beta"), ("synthetic_fraction", 0.3))),
    # DeGRe on the same backbone size, with score mode add (starts at the retriever order).
    # The first two rows share one training run.
    Row("DeGRe evaluator greedy", scorer="evaluator", family="degre", score_mode="add", dnr=NAIVE),
    Row("DeGRe generator", family="degre", score_mode="add", dnr=NAIVE),
    Row("DeGRe generator w/o dense", family="degre", score_mode="add", dnr=NAIVE, degre=(("dense", False),)),
    Row("oracle (true_click_prob)", scorer="oracle"),
)
ROW_BY_NAME = {row.name: row for row in ROWS}
NAIVE_ROWS = ("PRM concat", "PRM add", "PRM weight", "PRM denoise")
DNR_ROWS = ("DNR-G", "DNR-B")
ABLATION_ROWS = ("DNR-B w/o L_adv", "DNR-B w/o L_x", "DNR-B heuristic only")
DEGRE_ROWS = ("DeGRe evaluator greedy", "DeGRe generator", "DeGRe generator w/o dense")
BASELINE = "retriever order"
"""The row every other is measured against in the main table (no training: what is served today)."""
