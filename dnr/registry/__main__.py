"""``python -m dnr.registry ...``: the registry's command line (:mod:`dnr.registry.cli`)."""

from dnr.registry.cli import main
from dnr.runtime import exit_process

exit_process(main())  # not sys.exit: see dnr.runtime.exit_process
