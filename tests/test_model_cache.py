"""The model cache under concurrency: grid jobs start side by side on a fresh machine and share it."""

import multiprocessing
import time
from pathlib import Path

import pytest

from owl.models import build_once


def _slow_build(directory: Path, counter: Path) -> None:
    with open(counter, "a") as handle:  # one line per build that ran
        handle.write("built\n")
    time.sleep(0.5)  # long enough that a second process arrives mid-build
    (directory / "config.json").write_text("{}")


def _worker(target: str, counter: str, start, results) -> None:
    start.wait()
    built = build_once(Path(target), lambda d: _slow_build(d, Path(counter)))
    results.put((built / "config.json").read_text())


def test_concurrent_first_use_builds_once_and_every_process_sees_it(tmp_path):
    target, counter = tmp_path / "models" / "tiny", tmp_path / "builds.txt"
    target.parent.mkdir()
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(str(target), str(counter), start, results)) for _ in range(3)]
    for w in workers:
        w.start()
    start.set()
    seen = [results.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    assert counter.read_text().count("built") == 1
    assert seen == ["{}"] * 3
    assert sorted(p.name for p in target.parent.iterdir()) == ["tiny", "tiny.lock"]  # no temp dir left


def test_failed_build_leaves_nothing_that_looks_finished(tmp_path):
    target = tmp_path / "tiny"

    def broken(directory: Path) -> None:
        (directory / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        build_once(target, broken)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.lock"]
    assert build_once(target, lambda d: (d / "config.json").write_text("ok")) == target
    assert (target / "config.json").read_text() == "ok"
