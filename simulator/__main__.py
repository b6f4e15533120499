"""`python -m simulator`: run the simulator with settings from the environment."""

import os
import sys

from simulator.main import run

sys.exit(run(os.environ))
