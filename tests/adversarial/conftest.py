"""The standing adversarial suite: hostile inputs, servers, files and kills. Helpers of tests/ are importable."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
