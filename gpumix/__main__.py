"""`python -m gpumix ...` is `gpumix ...`."""

from scaler.cli import main

raise SystemExit(main())
