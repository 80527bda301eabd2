"""Models: the PRM reranker backbone, its score modes, the DNR noise generators, and DeGRe
(lookahead evaluator, beam-search mining, greedy generator).

Models take tensors (a ``RerankBatch``) and return tensors; they know nothing of losses, Ray or
distribution. Any process may import them (a Train worker, a replay scorer, the export); they
touch nothing outside the process.
"""

from dnr.models.degre import DeGReGenerator, LookaheadEvaluator
from dnr.models.degre_search import beam_search, evaluator_ranking
from dnr.models.factory import RERANKERS, build_reranker
from dnr.models.generators import GENERATORS, build_generator, synthesize_scores
from dnr.models.prm import PAD_LOGIT, PRMReranker, RerankerContext
from dnr.models.score_modes import SCORE_MODES, score_logit

__all__ = [
    "DeGReGenerator",
    "GENERATORS",
    "LookaheadEvaluator",
    "PAD_LOGIT",
    "PRMReranker",
    "RERANKERS",
    "RerankerContext",
    "SCORE_MODES",
    "beam_search",
    "build_generator",
    "build_reranker",
    "evaluator_ranking",
    "score_logit",
    "synthesize_scores",
]
