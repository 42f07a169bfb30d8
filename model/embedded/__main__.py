"""``python -m model.embedded build NAME``: build (or find) a backbone, print its folder."""

from model.embedded.build import main

raise SystemExit(main())
