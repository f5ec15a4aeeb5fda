"""`python -m lucidlm` (and `torchrun -m lucidlm`) run the command line."""

import sys

from lucidlm.cli import main

sys.exit(main())
