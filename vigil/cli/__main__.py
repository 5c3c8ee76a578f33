"""`python -m vigil.cli`, as the `vigil` script."""
from vigil.cli import main

main()
