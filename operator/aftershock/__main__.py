import sys

from aftershock.cli import main

sys.exit(main())
