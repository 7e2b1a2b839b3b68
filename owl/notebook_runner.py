"""Run a workflow notebook with papermill, as every rule does, starting its kernel again if it died
before it ran anything.

Jupyter picks a kernel's ports, releases them, and only then does the kernel bind them, so two
kernels starting at once can collide ("Address already in use", then "Kernel died before replying
to kernel_info": jupyter/jupyter_client#154, nteract/papermill#511, still open). Nothing has run at
that point, so a new start is safe; without it one collision ends a grid that runs for hours. Any
other failure is the notebook's own and is raised at once.

``python -m owl.notebook_runner NOTEBOOK EXECUTED -f PARAMS.yaml`` is ``papermill NOTEBOOK EXECUTED
-f PARAMS.yaml -k python3 --log-output --no-progress-bar`` with that one retry rule.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

KERNEL_START_FAILURE = "Kernel died before replying to kernel_info"
ATTEMPTS = 3

log = logging.getLogger(__name__)


def is_kernel_start_failure(error: BaseException) -> bool:
    """Whether ``error`` is a kernel that died while starting (before any cell ran)."""
    return KERNEL_START_FAILURE in str(error)


def run_notebook(notebook: str | Path, executed: str | Path, parameters: dict, *, attempts: int = ATTEMPTS,
                 execute: Callable | None = None) -> None:
    """Execute ``notebook`` into ``executed`` with ``parameters`` on the ``python3`` kernel, cell
    outputs to the log; up to ``attempts`` starts when the kernel dies while starting."""
    if execute is None:
        import papermill

        execute = papermill.execute_notebook
    for attempt in range(1, attempts + 1):
        try:
            execute(str(notebook), str(executed), parameters=parameters, kernel_name="python3",
                    log_output=True, progress_bar=False)
            return
        except Exception as error:  # papermill raises RuntimeError for a dead kernel; be exact by message
            if attempt == attempts or not is_kernel_start_failure(error):
                raise
            log.warning("the kernel died while starting (attempt %d of %d): %s; starting it again", attempt, attempts, error)


def main(argv: list[str] | None = None) -> int:
    import argparse

    import yaml

    parser = argparse.ArgumentParser(prog="python -m owl.notebook_runner", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook")
    parser.add_argument("executed")
    parser.add_argument("-f", "--parameters_file", required=True, help="YAML file of the notebook's parameters")
    args = parser.parse_args(argv)
    try:
        parameters = yaml.safe_load(Path(args.parameters_file).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        parser.exit(2, f"python -m owl.notebook_runner: error: {args.parameters_file}: {err}".replace("\n", " ") + "\n")
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # what papermill's CLI does for --log-output
    run_notebook(args.notebook, args.executed, parameters)
    return 0


if __name__ == "__main__":
    sys.exit(main())
