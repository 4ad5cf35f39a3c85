"""Methods, one paper per file: ``methods/<family>/<name>.py`` registers ``<name>`` (adapters,
optimizers, tta, continual). ``adaptbench.registry`` imports them by name when asked (import errors
propagate: a broken method fails loudly, it never vanishes from the registry); ``manifest.json`` beside
this file is their torch-free summary for parse-time checks (``adaptbench manifest --write`` renews it).
"""

FAMILY_DIRS = {"adapter": "adapters", "optimizer": "optimizers", "tta": "tta", "continual": "continual"}
