import sys

from vigil.sim.cli import main

sys.exit(main())
