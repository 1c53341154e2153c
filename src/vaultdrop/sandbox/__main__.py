"""`python -m vaultdrop.sandbox`: the same flags as `vaultdrop sandbox`."""

import argparse
import sys

from ..logs import verbosity_options
from .cli import add_sandbox_arguments, run_sandbox


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m vaultdrop.sandbox", description="SesameVault + ScaleEngine sandbox",
                                     parents=[verbosity_options(formats=False)])
    add_sandbox_arguments(parser)
    return run_sandbox(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
