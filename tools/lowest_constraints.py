"""Print `name==lower` for every `name>=lower` requirement in pyproject.toml.

`make lowest` installs vaultdrop with these as pip constraints in a throwaway venv and
runs tests there, so every lower bound we publish is one we have actually run.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

REQUIREMENT = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*>=\s*([^,;\s]+)")


def lower_bounds(pyproject: Path) -> dict[str, str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    requirements = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    return {match[1].lower(): match[2] for match in map(REQUIREMENT.match, requirements) if match}


if __name__ == "__main__":
    for name, version in sorted(lower_bounds(Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml")).items()):
        print(f"{name}=={version}")
