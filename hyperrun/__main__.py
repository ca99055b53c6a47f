import sys

from hyperrun.cli import main

sys.exit(main())
