"""``python -m dnr.cli ...``: the ``dnr`` command without installing its console script."""

from dnr.cli import main

main()  # ends the process with the command's status (dnr.cli.finish)
