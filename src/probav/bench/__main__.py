"""``python -m probav.bench CONFIG.json OUT.json PART [PART …]``: run parts in this process."""
import sys

from probav.bench.run import _main_subprocess

sys.exit(_main_subprocess(sys.argv[1:]))
