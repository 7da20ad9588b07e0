"""The bare wheel (``pip install healthtech_etl-*.whl`` without its ``runtime`` extra) answers
with the install command in one line instead of a ModuleNotFoundError traceback."""

import importlib.util
from typing import Optional

from .errors import ConfigError

# pyproject.toml [project.optional-dependencies] runtime, as (module, distribution).
RUNTIME = (("pandas", "pandas"), ("numpy", "numpy"), ("pg8000", "pg8000"), ("python_calamine", "python-calamine"),
           ("packaging", "packaging"))


def missing_runtime() -> Optional[ConfigError]:
    """None when every runtime dependency can be imported, else the error naming the missing ones."""
    missing = [distribution for module, distribution in RUNTIME if importlib.util.find_spec(module) is None]
    if not missing:
        return None
    return ConfigError(f"the runtime dependencies are not installed (missing: {', '.join(missing)}): "
                       "pip install 'healthtech-etl[runtime]'")
