import sys

from storyteller_core.cli.main import main

sys.exit(main())
