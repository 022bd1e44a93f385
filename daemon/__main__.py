import sys

from rsubd.app import main

sys.exit(main())
