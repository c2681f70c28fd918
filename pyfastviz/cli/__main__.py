"""`python -m pyfastviz.cli ...` (what torchrun runs): the command line."""

import sys

from pyfastviz.cli import main

sys.exit(main())
