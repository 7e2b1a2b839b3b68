"""owl.notebook_runner: a kernel that dies while starting is started again; nothing else is retried."""

import logging

import pytest
import yaml

from owl import notebook_runner
from owl.notebook_runner import KERNEL_START_FAILURE, run_notebook


class FakeExecute:
    """Stands in for papermill.execute_notebook: raises the given errors in turn, then succeeds."""

    def __init__(self, *errors):
        self.errors, self.calls = list(errors), []

    def __call__(self, notebook, executed, **kwargs):
        self.calls.append((notebook, executed, kwargs))
        if self.errors:
            raise self.errors.pop(0)


def test_a_kernel_that_died_while_starting_is_started_again(caplog):
    execute = FakeExecute(RuntimeError(KERNEL_START_FAILURE), RuntimeError(KERNEL_START_FAILURE))
    with caplog.at_level(logging.WARNING):
        run_notebook("nb.ipynb", "out.ipynb", {"seed": 1}, execute=execute)
    assert len(execute.calls) == 3
    assert execute.calls[0] == ("nb.ipynb", "out.ipynb", {"parameters": {"seed": 1}, "kernel_name": "python3",
                                                          "log_output": True, "progress_bar": False})
    assert "attempt 2 of 3" in caplog.text


def test_the_notebooks_own_failure_is_raised_at_once():
    execute = FakeExecute(ValueError("a cell raised"))
    with pytest.raises(ValueError, match="a cell raised"):
        run_notebook("nb.ipynb", "out.ipynb", {}, execute=execute)
    assert len(execute.calls) == 1


def test_a_kernel_that_keeps_dying_fails_after_the_last_attempt():
    execute = FakeExecute(*[RuntimeError(KERNEL_START_FAILURE)] * 3)
    with pytest.raises(RuntimeError, match=KERNEL_START_FAILURE):
        run_notebook("nb.ipynb", "out.ipynb", {}, attempts=3, execute=execute)
    assert len(execute.calls) == 3


def test_the_command_reads_the_parameters_file_and_refuses_a_missing_one(tmp_path, monkeypatch, capsys):
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump({"model": "tiny", "seed": 3}))
    seen = {}
    monkeypatch.setattr(notebook_runner, "run_notebook", lambda nb, out, parameters: seen.update(parameters))
    assert notebook_runner.main(["nb.ipynb", "out.ipynb", "-f", str(params)]) == 0
    assert seen == {"model": "tiny", "seed": 3}
    with pytest.raises(SystemExit) as caught:
        notebook_runner.main(["nb.ipynb", "out.ipynb", "-f", str(tmp_path / "missing.yaml")])
    err = capsys.readouterr().err
    assert caught.value.code == 2 and err.count("\n") == 1 and "missing.yaml" in err
