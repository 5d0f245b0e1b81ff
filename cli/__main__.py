import sys

from svlora.cli.main import main

sys.exit(main())
