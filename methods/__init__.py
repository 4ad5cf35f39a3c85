"""Every module in methods/<family>/ is one paper's method; importing this package registers them all.

Import errors propagate on purpose: a broken method must fail loudly, not vanish from the registry.
"""

import importlib
import pkgutil
from pathlib import Path

FAMILY_DIRS = ("adapters", "optimizers", "tta", "continual")

for _family in FAMILY_DIRS:
    for _mod in pkgutil.iter_modules([str(Path(__file__).parent / _family)]):
        if not _mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{_family}.{_mod.name}")
