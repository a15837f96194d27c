import sys

from sipbridge.cli import main

sys.exit(main())
