"""`python -m ottpay.simulator`: run the simulator with settings from the environment."""

import os
import sys

from ottpay.simulator.main import run

sys.exit(run(os.environ))
