"""``python -m mlip.cli``: the ``mlip`` command."""

from mlip.cli import main

raise SystemExit(main())
