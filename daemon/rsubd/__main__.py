import sys

from rsubd.app import main

if __name__ == "__main__":  # the HTCondor workers are spawned processes that re-import __main__
    sys.exit(main())
