import sys

from genbound.cli import main

sys.exit(main())
