"""``python -m pywino3d.experiments`` is ``python -m pywino3d experiment``."""
import sys

from .cli import main

sys.exit(main())
