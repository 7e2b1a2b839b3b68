"""Every `snakemake` and `owl` command shown in README.md and docs/*.md runs as written.

Commands are taken from fenced code blocks (after a `$ ` prompt and `VAR=value` prefixes too,
backslash continuations joined, comments dropped). Snakemake commands run as dry runs (`-n`; a
`--report` builds into a temporary file); commands that differ only in their targets share one
dry run, and only when it fails is each rerun alone, to name the broken one. A command that acts on
the working directory even in a dry run (`snakemake --unlock` removes the lock of a workflow that
may be running there) is only parsed by Snakemake's own parser. `owl` commands are parsed by the
CLI's own parser and their settings validated, without loading a model.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TOOLS = ("snakemake", "owl")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Command:
    where: str  # file:line
    env: tuple  # (NAME, value) prefixes
    argv: tuple  # the tool's arguments

    def __str__(self):
        return f"{self.where}: {' '.join([*(f'{k}={v}' for k, v in self.env), *self.argv])}"


def documented_commands(path: Path) -> list[Command]:
    commands, in_block, pending, start = [], False, "", 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_block, pending = not in_block, ""
            continue
        if not in_block:
            continue
        start = start if pending else number
        text = pending + line.strip()
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        pending = ""
        text = text.removeprefix("$ ")
        try:
            tokens = shlex.split(text, comments=True)
        except ValueError:  # unbalanced quotes: broken if it is one of ours
            tokens = text.split()
            if tokens and tokens[0] in TOOLS:
                raise AssertionError(f"{path.name}:{start}: cannot be parsed by a shell: {text}") from None
            continue
        env = []
        while tokens and _ASSIGNMENT.match(tokens[0]):
            env.append(tuple(tokens.pop(0).split("=", 1)))
        if tokens and tokens[0] in TOOLS:
            commands.append(Command(f"{path.relative_to(REPO)}:{start}", tuple(env), tuple(tokens)))
    return commands


ALL = [c for path in DOCS for c in documented_commands(path)]
# Options that change the working directory even with -n: parsed, never run.
ACTS_ON_WORKDIR = ("--unlock", "--cleanup-metadata", "--cm", "--touch", "-t", "--delete-all-output", "--delete-temp-output")
SNAKEMAKE_PARSED_ONLY = [c for c in ALL if c.argv[0] == "snakemake" and any(a in ACTS_ON_WORKDIR for a in c.argv)]
SNAKEMAKE = [c for c in ALL if c.argv[0] == "snakemake" and c not in SNAKEMAKE_PARSED_ONLY]
OWL = [c for c in ALL if c.argv[0] == "owl"]


def test_the_commands_are_found():
    """The extraction itself: the README's own examples are among them (so it cannot find nothing)."""
    found = {" ".join(c.argv) for c in ALL}
    assert "snakemake -n reproduce_all --configfile config/paper.yaml" in found
    assert "snakemake --cores 2 --configfile config/tiny.yaml" in found  # after an OWL_DATA_DIR= prefix
    assert any(c.argv[:2] == ("owl", "rerun") for c in ALL)  # after a `$ ` prompt
    assert any(c.argv[:2] == ("owl", "prune") and "--save" in c.argv for c in ALL)  # backslash continuation
    assert any(c.argv[:2] == ("snakemake", "--unlock") for c in ALL)  # the resume advice
    assert len(SNAKEMAKE) >= 10 and len(OWL) >= 2


def _dry_run_argv(command: Command, tmp: Path) -> list[str]:
    """The command as a dry run: -n added; a --report written to ``tmp``; a profile whose executor
    plugin is not installed here (SLURM) copied without its executor, the rest of it still checked."""
    argv = list(command.argv[1:])
    if "--report" in argv:
        i = argv.index("--report") + 1
        argv[i] = str(tmp / f"report{Path(argv[i]).suffix}")
    elif "-n" not in argv and "--dry-run" not in argv and "--dryrun" not in argv:
        argv.append("-n")
    if "--profile" in argv:
        i = argv.index("--profile") + 1
        profile = yaml.safe_load((REPO / argv[i] / "config.yaml").read_text())
        executor = profile.get("executor")
        plugin = f"snakemake_executor_plugin_{executor}".replace("-", "_")
        if executor not in (None, "local", "dryrun") and not _importable(plugin):
            copy = tmp / "profile"
            shutil.copytree(REPO / argv[i], copy, dirs_exist_ok=True)
            (copy / "config.yaml").write_text(yaml.safe_dump({k: v for k, v in profile.items() if k != "executor"}))
            argv[i] = str(copy)
    return argv


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _start_snakemake(argv: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "snakemake", *argv], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, **env})


def _run_snakemake(argv: list[str], env: dict) -> tuple[int, str]:
    proc = _start_snakemake(argv, env)
    output = proc.communicate(timeout=300)[0]
    return proc.returncode, output


def _targets(argv: list[str]) -> list[str] | None:
    """The positional targets, by Snakemake's own parser; None if it rejects the arguments."""
    from contextlib import redirect_stderr
    from io import StringIO

    from snakemake.cli import get_argument_parser

    try:
        with redirect_stderr(StringIO()):
            return list(get_argument_parser().parse_args(argv).targets or [])
    except SystemExit:
        return None


def _grouped(commands: list[Command], tmp: Path) -> dict:
    """Commands that differ only in their targets: {(env, options): (targets, commands)}."""
    groups: dict = {}
    for command in commands:
        argv = _dry_run_argv(command, tmp)
        targets = _targets(argv)
        if targets is None:  # rejected: a group of its own, run as written, so that it fails with its message
            groups[(command.env, tuple(argv))] = ([], [command])
            continue
        options = tuple(a for a in argv if a not in targets)
        entry = groups.setdefault((command.env, options), ([], []))
        entry[0].extend(t for t in targets if t not in entry[0])
        entry[1].append(command)
    return groups


def test_documented_snakemake_commands_dry_run(tmp_path):
    groups = _grouped(SNAKEMAKE, tmp_path)
    # The groups' dry runs at once (each is mostly Python start-up and parsing); targets first, as
    # --configfile takes several values.
    running = {key: _start_snakemake([*targets, *key[1]], dict(key[0])) for key, (targets, _) in groups.items()}
    failures = []
    for key, proc in running.items():
        output = proc.communicate(timeout=300)[0]
        if proc.returncode == 0:
            continue
        targets, commands = groups[key]
        for command in commands:  # one of them is broken: which
            code, alone = _run_snakemake(_dry_run_argv(command, tmp_path), dict(command.env))
            if code != 0:
                last = [line for line in alone.strip().splitlines() if line.strip()][-1:]
                failures.append(f"{command}\n    -> {last[0] if last else f'exit {code}'}")
        if not any(str(c) in f for c in commands for f in failures):
            failures.append(f"{commands[0]} (with the others of its group: {targets})\n    -> {output.strip()[-500:]}")
    assert not failures, "documented commands that do not run:\n" + "\n".join(failures)


@pytest.mark.parametrize("command", SNAKEMAKE_PARSED_ONLY, ids=str)
def test_documented_snakemake_commands_that_act_on_the_workdir_parse(command):
    """`snakemake --unlock` and the like: Snakemake's parser accepts them (running them here could
    unlock a workflow running in this checkout)."""
    assert _targets(list(command.argv[1:])) is not None, f"{command}: rejected by Snakemake's parser"


@pytest.mark.parametrize("command", OWL, ids=str)
def test_documented_owl_commands_parse(command):
    """The owl CLI's parser accepts the command and its settings validate (no model is loaded)."""
    from owl.cli import _settings_from_args, build_parser
    from owl.results import read_result

    try:
        args = build_parser().parse_args(list(command.argv[1:]))
    except SystemExit as exc:
        pytest.fail(f"{command}: rejected by the owl parser (exit {exc.code})")
    if args.command == "prune":
        _settings_from_args(args).validate()
    elif args.command == "rerun":
        read_result(REPO / args.result)
