import sys

from svlora.cli.app import main

sys.exit(main())
