"""``python -m ductile.app.sim --seed N``: one seed of a scenario, every invariant checked."""

import sys

from ductile.app.sim.scenarios import main

sys.exit(main())
