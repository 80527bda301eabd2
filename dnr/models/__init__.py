"""Models: the PRM reranker backbone, its score modes, and the DNR noise generators.

Models take tensors (a ``RerankBatch``) and return tensors; they know nothing of losses, Ray or
distribution.
"""

from dnr.models.factory import RERANKERS, build_reranker
from dnr.models.generators import GENERATORS, build_generator, synthesize_scores
from dnr.models.prm import PAD_LOGIT, PRMReranker, RerankerContext
from dnr.models.score_modes import SCORE_MODES, score_logit

__all__ = [
    "GENERATORS",
    "PAD_LOGIT",
    "PRMReranker",
    "RERANKERS",
    "RerankerContext",
    "SCORE_MODES",
    "build_generator",
    "build_reranker",
    "score_logit",
    "synthesize_scores",
]
