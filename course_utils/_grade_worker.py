"""The grader's worker: runs one learner's notebook cells and records each exercise's
calls.

Usage (by `course_utils.grade` only): python -m course_utils._grade_worker JOB_DIR

JOB_DIR holds job.json (the cells to run, the exercises to record); the worker writes
result.json there after each exercise (replacing it whole, so a worker killed half-way
leaves the exercises it finished). It forks first and runs the learner's code in the
child: a notebook that kills its parent kills this small waiting process, never the
grader. The worker's verdicts are not trusted: the grader replays the recorded calls to
the real checks in its own process (see `_grade_replay`)."""

from __future__ import annotations

import ast
import io
import json
import os
import sys
import time
import traceback
from pathlib import Path

OUTPUT_KEPT = 20_000  # characters of a cell's printout kept for the report


class _CappedText(io.TextIOBase):
    """A stdout that keeps the first OUTPUT_KEPT characters and drops the rest."""

    def __init__(self) -> None:
        self.kept: list[str] = []
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self.size < OUTPUT_KEPT:
            self.kept.append(text[: OUTPUT_KEPT - self.size])
        self.size += len(text)
        return len(text)


def _without_magics(source: str) -> str:
    """The cell's Python: IPython magics and shell lines (%, !) become `pass`."""
    lines = []
    for line in source.splitlines():
        stripped = line.lstrip()
        lines.append(
            line[: len(line) - len(stripped)] + "pass" if stripped[:1] in "%!" else line
        )
    return "\n".join(lines)


def _write(job_dir: Path, result: dict) -> None:
    tmp = job_dir / "result.json.tmp"
    tmp.write_text(json.dumps(result))
    os.replace(tmp, job_dir / "result.json")


def run(job_dir: Path) -> None:
    """Run the job's cells in order; after each exercise cell, record its check's calls.
    """
    job = json.loads((job_dir / "job.json").read_text())
    # the course's code first, before any learner code can change it
    import course_utils.checks as checks

    from ._grade_replay import Recorder, encode

    check_functions = {name: getattr(checks, name) for name in job["checks"]}
    out = _CappedText()
    sys.stdout = sys.stderr = out
    namespace: dict = {"__name__": "__main__"}
    result: dict = {"cells": [], "exercises": {}}
    for code in job["preamble"]:
        exec(compile(code, "<grader preamble>", "exec"), namespace)
    for cell in job["cells"]:
        start = time.monotonic()
        error = None
        try:
            exec(
                compile(
                    _without_magics(cell["source"]), f"<cell {cell['index']}>", "exec"
                ),
                namespace,
            )
        except (
            BaseException
        ) as exc:  # KeyboardInterrupt and SystemExit too: the run goes on
            error = f"{type(exc).__name__}: {exc}"[:300]
        result["cells"].append({
            "index": cell["index"],
            "error": error,
            "seconds": round(time.monotonic() - start, 3),
        })
        for exercise in cell.get("exercises", []):
            result["exercises"][exercise["check"]] = _record(
                exercise, namespace, check_functions, Recorder, encode
            )
            _write(job_dir, result)
    result["output"] = "".join(out.kept)[:OUTPUT_KEPT]
    result["done"] = True
    _write(job_dir, result)


def _record(
    exercise: dict, namespace: dict, check_functions: dict, Recorder, encode
) -> dict:
    """Evaluate the check call's arguments and run the check with a Recorder on the
    learner's function; the check's own verdict here is not kept (the grader computes
    its own)."""
    args, recorders = [], []
    for expression in exercise["args"]:
        if expression in exercise["stand_ins"]:
            args.append(("stand_in", expression))
            continue
        try:
            value = eval(
                compile(ast.parse(expression, mode="eval"), "<arg>", "eval"), namespace
            )
        except BaseException as exc:
            return {"error": f"{expression}: {type(exc).__name__}: {exc}"[:300]}
        if callable(value):
            recorder = Recorder(value)
            recorders.append(recorder)
            args.append(("function", recorder))
        else:
            args.append(("value", value))
    stand_ins = {name: eval(code, {}) for name, code in exercise["stand_ins"].items()}
    call_args = [stand_ins[v] if kind == "stand_in" else v for kind, v in args]
    try:
        check_functions[exercise["check"]](*call_args)
    except BaseException:  # the record is what counts, not how the check ended here
        traceback.print_exc()
    record: dict = {"args": []}
    functions = iter(recorders)
    for kind, value in args:
        if kind == "function":
            record["args"].append({"function": next(functions).calls})
        elif kind == "stand_in":
            record["args"].append({"stand_in": value})
        else:
            record["args"].append({"value": encode(value)})
    return record


def _confine(limits: dict) -> None:
    """Apply the job's limits, then become its user (when the grader ran as root)."""
    import resource

    memory, size = int(limits["memory_mb"]) << 20, int(limits["file_mb"]) << 20
    cpu = int(float(limits["seconds"])) + 5
    for which, value in (
        (resource.RLIMIT_AS, memory),
        (resource.RLIMIT_FSIZE, size),
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(which, (value, value))
    if limits.get("uid") is not None:
        os.setgroups([])
        os.setgid(int(limits["gid"]))
        os.setuid(int(limits["uid"]))


def main() -> None:
    job_dir = Path(sys.argv[1])
    _confine(json.loads((job_dir / "job.json").read_text())["limits"])
    child = os.fork()
    if (
        child == 0
    ):  # the learner's code runs here; its parent is this small waiting process
        code = 0
        try:
            run(job_dir)
        except BaseException as exc:  # the grader's own failure here: say what it was
            code = 3
            try:
                (job_dir / "worker-error.txt").write_text(
                    f"{type(exc).__name__}: {exc}"[:500]
                )
            except OSError:
                pass
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


if __name__ == "__main__":
    main()
