"""Where request logs come from when no platform writes them: the synthetic world
(:mod:`.synth_world`, written day by day by :mod:`.synth`) and public interaction datasets turned
into request logs (:mod:`.interactions` reads ml-1m, gowalla and ratings files;
:mod:`.public_retriever` trains the first-stage retriever; :mod:`.public` and :mod:`.public_lines`
build the logs; :mod:`.public_config` says how).

Run by the driver of ``jobs/generate_logs.py`` and ``jobs/prepare_public.py`` (and by Ray tasks
that write a synthetic day's files). They write ``request_logs`` into a lake through
:mod:`dnr.data.delta_files`; nothing in the training or replay pipeline imports them.
"""
