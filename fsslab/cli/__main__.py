"""``python -m fsslab.cli`` (and ``torchrun -m fsslab.cli``): the ``fsslab`` command."""

from fsslab.cli import main

raise SystemExit(main())
