"""One recipe per reranker family (:class:`~dnr.training.recipes.recipe.Recipe`): :mod:`.prm`
(PRM, with or without DNR) and :mod:`.degre`. :data:`dnr.training.step.FAMILIES` maps
``model.family`` to its recipe; the loop never branches on the family."""
