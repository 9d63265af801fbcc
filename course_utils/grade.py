"""Grade learners' notebooks with the chapters' checks, outside the learners' code.

Usage: python -m course_utils.grade SUBMISSIONS_DIR [--csv grades.csv] [--timeout 300]
       [--memory-mb 8192] [--jobs 2] [--user auto|same|NAME]

For each notebook, a worker process (`course_utils._grade_worker`) runs the chapter's
import cell and the exercise cells only (no training), in quick mode, in a temporary
folder of its own that holds nothing but a copy of that notebook, in its own session
(process group), with a wall-clock limit, an address-space limit, a file-size limit and
its printout dropped past 20,000 characters. It records every call each check makes to
the learner's function. The grader then runs the real check in its own process on that
record (`course_utils._grade_replay`): no learner code runs here, so a notebook that
patches the checks, `CheckResult` or `print` gains nothing.

One point per exercise, the chapter's exercises only (the solved worked example is not
graded); an exercise missing from the notebook scores 0 with result "missing". The CSV
gets each learner's rows as soon as they are graded. Not a security sandbox: see the
instructors' guide."""

from __future__ import annotations

import argparse
import ast
import csv
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nbformat

from . import (
    checks as _checks,
)  # imported now: later changes on disk cannot reach this process
from ._grade_replay import Replayer, decode
from .budget import QUICK_ENV

# The exercises of each chapter, in order (a test keeps this equal to the chapters'
# stubs).
CHAPTER_EXERCISES = {
    1: ("check_beta_end", "check_noise_to_snr", "check_snr_crossing"),
    2: ("check_x0_from_eps", "check_ddpm_step", "check_mix_factors"),
    3: ("check_transform", "check_sdedit", "check_ema_update"),
    4: ("check_posterior_variance", "check_posterior_mean", "check_q_sample_from"),
    5: ("check_frechet_diagonal", "check_eps_from_v", "check_fewest_nfe"),
    6: ("check_guided_eps", "check_heun_step", "check_guidance_choice"),
    7: ("check_kl_divergence", "check_masked_cross_attention", "check_inpaint_step"),
}
# Chapter objects a check takes besides the learner's function: small stand-ins of the
# same form, used by the worker and by the grader alike (never the learner's own
# values), so that grading runs no training. Each is a Python expression.
STAND_INS = {
    "sweep": (
        "{'DDIM': [(5, 4.0, 0.1), (10, 2.0, 0.2), (20, 1.5, 0.4)], "
        "'Heun': [(5, 3.0, 0.1), (9, 1.2, 0.2)]}"
    ),
    "guidance_table": "{0: (0.2, 1.5), 1: (0.8, 1.1), 2: (0.95, 1.3), 4: (0.97, 2.0)}",
}
# Chapter objects the exercise cells use from earlier cells, made before them.
PREAMBLES = {
    1: (
        "from diffusers import DDPMScheduler\nddpm_scheduler ="
        " DDPMScheduler(num_train_timesteps=1000, beta_schedule='linear')\n"
    )
}
RESULTS = ("pass", "fail", "error", "timeout", "missing")


@dataclass
class Grade:
    """One exercise of one learner: its result, points and the check's message."""

    learner: str
    exercise: str
    result: str
    points: float
    max_points: float
    message: str


@dataclass
class Limits:
    """What one notebook may use: wall-clock seconds, address space, file size, user."""

    timeout: float = 300.0
    memory_mb: int = 8192
    file_mb: int = 64
    user: str | None = None

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.memory_mb <= 0 or self.file_mb <= 0:
            raise ValueError(
                f"limits must be positive, got timeout={self.timeout}, "
                f"memory_mb={self.memory_mb}, file_mb={self.file_mb}"
            )


# CPython 3.11's parser is not safe to call from several threads at once: under load,
# ast.parse raised "SystemError: AST constructor recursion depth mismatch" in one of
# the --jobs threads (CI, 2026-11-30), and that learner's notebook was reported
# unreadable. Every parse and unparse here holds this lock; the notebooks still run in
# parallel (each in its own worker process).
_PARSE_LOCK = threading.Lock()


def check_call(source: str) -> ast.Call | None:
    """The last top-level `check_...(...)` call in a code cell, if any."""
    try:
        with _PARSE_LOCK:
            tree = ast.parse(source)
    except SyntaxError:
        return None
    calls = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Name)
        and node.value.func.id.startswith("check_")
    ]
    return calls[-1] if calls else None


def chapter_of(checks_called: set[str]) -> int | None:
    """The chapter whose exercises the notebook's check calls match best, or None."""
    overlap = {
        chapter: len(checks_called & set(names))
        for chapter, names in CHAPTER_EXERCISES.items()
    }
    best = max(overlap.values())
    chosen = [chapter for chapter, n in overlap.items() if n == best]
    return chosen[0] if best and len(chosen) == 1 else None


def _job(nb: nbformat.NotebookNode, chapter: int) -> tuple[dict, set[str]]:
    """The worker's job for one notebook, and the exercises found in it.

    The job runs the import cell, then each exercise cell with its check call's
    arguments.
    """
    wanted = set(CHAPTER_EXERCISES[chapter])
    code = [(i, cell) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    cells, found = [], set()
    imports = next(
        (
            (i, c)
            for i, c in code
            if "import torch" in c.source or "course_utils" in c.source
        ),
        None,
    )
    for i, cell in code:
        call = check_call(cell.source)
        exercise = (
            call is not None and call.func.id in wanted and call.func.id not in found
        )
        if not exercise and (imports is None or i != imports[0]):
            continue
        entry = {"index": i, "source": cell.source, "exercises": []}
        if exercise:
            found.add(call.func.id)
            with _PARSE_LOCK:
                args = [ast.unparse(arg) for arg in call.args]
            entry["exercises"].append({
                "check": call.func.id,
                "args": args,
                "stand_ins": {a: STAND_INS[a] for a in args if a in STAND_INS},
            })
        cells.append(entry)
    preamble = [PREAMBLES[chapter]] if chapter in PREAMBLES else []
    return {"preamble": preamble, "cells": cells, "checks": sorted(found)}, found


def _environment(job_dir: Path) -> dict[str, str]:
    """A small environment: no tokens or paths of the grader's beyond what Python needs.
    """
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(job_dir),
        "TMPDIR": str(job_dir),
        QUICK_ENV: "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "MPLBACKEND": "Agg",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
        "COURSE_CACHE_DIR": str(job_dir / "cache"),
    }
    for name in ("COURSE_DATA_DIR", "LANG", "LC_ALL"):
        if name in os.environ:
            env[name] = os.environ[name]
    # course_utils alone (a link to the grader's copy), never the folder above it, which
    # in a clone of the course also holds the tests and their reference answers
    lib = job_dir / "lib"
    lib.mkdir()
    (lib / "course_utils").symlink_to(
        Path(__file__).resolve().parent, target_is_directory=True
    )
    env["PYTHONPATH"] = str(lib)
    return env


def run_in_session(command: list[str], cwd: Path, env: dict[str, str], timeout: float
                   ) -> int | None:
    """Run `command` in a session of its own, with no input or output; when it ends, or
    at `timeout` seconds, kill its whole process group (what it left running too).

    Returns its exit status, or None when it ran past the timeout.
    """
    process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        code: int | None = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        code = None
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
    return code


def run_worker(job: dict, notebook: Path, limits: Limits) -> tuple[dict | None, str]:
    """Run the worker on `job` in a fresh folder; return (its record or None, what
    happened)."""
    job_dir = Path(tempfile.mkdtemp(prefix="course-grade-"))
    uid = gid = None
    try:
        shutil.copyfile(notebook, job_dir / "submission.ipynb")
        if limits.user is not None:
            entry = pwd.getpwnam(limits.user)
            uid, gid = entry.pw_uid, entry.pw_gid
        job = dict(
            job,
            limits={
                "seconds": limits.timeout,
                "memory_mb": limits.memory_mb,
                "file_mb": limits.file_mb,
                "uid": uid,
                "gid": gid,
            },
        )
        (job_dir / "job.json").write_text(json.dumps(job))
        env = _environment(job_dir)
        if uid is not None:
            for path in [job_dir, *job_dir.iterdir()]:
                os.chown(path, uid, gid, follow_symlinks=False)
        os.chmod(job_dir, 0o700)
        started = time.monotonic()
        code = run_in_session(
            [sys.executable, "-m", "course_utils._grade_worker", str(job_dir)],
            job_dir, env, limits.timeout)
        outcome = ("timeout" if code is None else "done" if code == 0
                   else f"the notebook's process ended with status {code}")
        elapsed = time.monotonic() - started
        error_path = job_dir / "worker-error.txt"
        if error_path.exists() and error_path.stat().st_size < 4096:
            outcome += f" ({error_path.read_text(errors='replace')})"
        record_path = job_dir / "result.json"
        if not record_path.exists():
            return None, outcome
        if record_path.stat().st_size > limits.file_mb << 20:
            return None, "the record is too large"
        try:
            record = json.loads(record_path.read_text())
        except (ValueError, UnicodeDecodeError):
            return None, "the record is not valid JSON"
        if isinstance(record, dict):
            record["seconds"] = round(elapsed, 2)
        return (record if isinstance(record, dict) else None), outcome
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)


def _stand_in(name: str) -> object:
    return eval(STAND_INS[name], {})  # the grader's own constants, never a learner's


def replay_check(exercise: str, record: dict) -> tuple[bool, str]:
    """Run the real check here on the recorded calls: (passed, message)."""
    checks = _checks
    if "error" in record:
        return False, f"could not call the check: {record['error']}"
    args = []
    try:
        for arg in record["args"]:
            if "function" in arg:
                args.append(Replayer(arg["function"]))
            elif "stand_in" in arg and arg["stand_in"] in STAND_INS:
                args.append(_stand_in(arg["stand_in"]))
            else:
                args.append(decode(arg["value"]))
    except (KeyError, TypeError, ValueError) as exc:
        return False, f"the notebook's record is malformed ({type(exc).__name__})"
    try:
        result = getattr(checks, exercise)(*args)
    except (
        Exception
    ) as exc:  # a check that cannot run on this record: not the learner's pass
        return (
            False,
            f"the check could not run on the record: {type(exc).__name__}: {exc}"[:300],
        )
    if not isinstance(result, checks.CheckResult):
        return False, "the check returned no result"
    return result.passed is True, result.message


def grade_notebook(path: Path, limits: Limits | None = None) -> list[Grade]:
    """Grade one learner notebook: one Grade per exercise of its chapter, plus notes."""
    limits = limits or Limits()
    learner = path.stem
    try:
        nb = nbformat.read(path, as_version=4)
        calls = {
            call.func.id
            for cell in nb.cells
            if cell.cell_type == "code"
            and (call := check_call(cell.source)) is not None
        }
    except Exception as exc:  # not a notebook: report it, never crash the run
        return [
            Grade(
                learner,
                "(notebook)",
                "error",
                0,
                0,
                f"cannot read the notebook: {exc}"[:200],
            )
        ]
    chapter = chapter_of(calls)
    if chapter is None:
        return [
            Grade(
                learner,
                "(notebook)",
                "error",
                0,
                0,
                "no chapter's exercise cells (check_...(...) calls) found",
            )
        ]
    job, found = _job(nb, chapter)
    record, outcome = run_worker(job, path, limits) if found else (None, "no exercises")
    recorded = (record or {}).get("exercises", {}) if isinstance(record, dict) else {}
    grades = []
    for exercise in CHAPTER_EXERCISES[chapter]:
        if exercise not in found:
            grades.append(
                Grade(
                    learner,
                    exercise,
                    "missing",
                    0,
                    1,
                    "the exercise cell (its check call) is not in the notebook",
                )
            )
        elif isinstance(recorded.get(exercise), dict):
            passed, message = replay_check(exercise, recorded[exercise])
            grades.append(
                Grade(
                    learner,
                    exercise,
                    "pass" if passed else "fail",
                    1 if passed else 0,
                    1,
                    message,
                )
            )
        elif outcome == "timeout":
            grades.append(
                Grade(
                    learner,
                    exercise,
                    "timeout",
                    0,
                    1,
                    f"the notebook ran past {limits.timeout:g} s before this exercise",
                )
            )
        else:
            grades.append(
                Grade(
                    learner,
                    exercise,
                    "error",
                    0,
                    1,
                    f"not reached: {outcome}" if outcome != "done" else "not reached",
                )
            )
    for cell in (record or {}).get("cells", []) if isinstance(record, dict) else []:
        if isinstance(cell, dict) and cell.get("error"):
            grades.append(
                Grade(
                    learner,
                    "(notebook)",
                    "error",
                    0,
                    0,
                    f"cell {cell.get('index')}: {cell['error']}"[:300],
                )
            )
    return grades


def print_table(grades: list[Grade]) -> None:
    """Learners down, exercises across, then each learner's total."""
    learners = list(dict.fromkeys(g.learner for g in grades))
    exercises = [
        e for e in dict.fromkeys(g.exercise for g in grades) if e != "(notebook)"
    ]
    width = max([len(name) for name in learners] + [7])
    names = [e.removeprefix("check_") for e in exercises]
    print(f"{'learner':<{width}}  " + "  ".join(names) + "  total")
    for learner in learners:
        mine = [g for g in grades if g.learner == learner]
        row = {g.exercise: g.result for g in mine}
        cells = [row.get(e, "-").ljust(len(n)) for e, n in zip(exercises, names)]
        total = f"{sum(g.points for g in mine):g}/{sum(g.max_points for g in mine):g}"
        print(f"{learner:<{width}}  " + "  ".join(cells) + f"  {total}")
    for g in grades:
        if g.exercise == "(notebook)":
            print(f"note: {g.learner}: {g.result}: {g.message}")


CSV_HEADER = ["learner", "exercise", "result", "points", "max_points", "message"]


def append_csv(grades: list[Grade], path: Path) -> None:
    """Append one learner's rows and their total, then flush them to disk."""
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        writer.writerows(
            [g.learner, g.exercise, g.result, g.points, g.max_points, g.message]
            for g in grades
        )
        if grades:
            scored = [g for g in grades if g.exercise != "(notebook)"]
            writer.writerow([
                grades[0].learner,
                "(total)",
                "",
                sum(g.points for g in scored),
                sum(g.max_points for g in scored),
                "",
            ])
        f.flush()
        os.fsync(f.fileno())


def user_can_run_python(user: str) -> bool:
    """Whether `user` can start this Python and import the course's libraries (an
    interpreter under /root, say, is out of another user's reach). Needs root; takes a
    few seconds."""
    entry = pwd.getpwnam(user)
    probe = "import http.cookiejar, json, numpy, torch, course_utils.checks"
    with tempfile.TemporaryDirectory(prefix="course-grade-probe-") as folder:
        os.chown(folder, entry.pw_uid, entry.pw_gid)
        env = _environment(Path(folder))
        try:
            done = subprocess.run(
                [sys.executable, "-c", probe],
                cwd=folder,
                env=env,
                user=entry.pw_uid,
                group=entry.pw_gid,
                extra_groups=[],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=120,
            )
        except (OSError, subprocess.SubprocessError):
            return False
    return done.returncode == 0


def default_user() -> str | None:
    """'nobody' when the grader runs as root, that user exists and can run this Python;
    else None (the notebooks run as the grader's own user)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        return None
    return "nobody" if user_can_run_python("nobody") else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "submissions", type=Path, help="a folder of learner notebooks (*.ipynb)"
    )
    parser.add_argument(
        "--csv", type=Path, default=None, help="also write the grades here"
    )
    parser.add_argument(
        "--timeout", type=float, default=300, help="seconds per notebook (300)"
    )
    parser.add_argument(
        "--memory-mb", type=int, default=8192, help="address space per notebook"
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="notebooks graded at once (1)"
    )
    parser.add_argument(
        "--user",
        default="auto",
        help=(
            "run learners' code as this user; 'auto' (default): 'nobody' when "
            "the grader runs as root, else the grader's own user; 'same': the "
            "grader's own user"
        ),
    )
    args = parser.parse_args(argv)
    if not args.submissions.is_dir():
        parser.error(f"{args.submissions} is not a folder of notebooks")
    notebooks = sorted(args.submissions.glob("*.ipynb"))
    if not notebooks:
        parser.error(f"no .ipynb files in {args.submissions}")
    user = (
        default_user()
        if args.user == "auto"
        else None if args.user == "same" else args.user
    )
    if args.user not in ("auto", "same"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            parser.error(f"--user: no user named {user!r}")
        if os.geteuid() != 0:
            parser.error(
                "--user needs the grader to run as root (to switch to that user)"
            )
        if not user_can_run_python(user):
            parser.error(
                f"--user: {user!r} cannot run {sys.executable} with the course's "
                "libraries (install them where that user can read them)"
            )
    if user is None:
        print(
            "note: the notebooks run as the grader's own user: they can read what it"
            " can (see the instructors' guide)",
            flush=True,
        )
    elif args.submissions.stat().st_mode & 0o007:
        print(
            f"warning: {args.submissions} is readable by other users, so by {user}: "
            f"chmod o-rwx {args.submissions} keeps learners' notebooks from each other",
            flush=True,
        )
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    limits = Limits(timeout=args.timeout, memory_mb=args.memory_mb, user=user)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            csv.writer(f).writerow(CSV_HEADER)
    everyone: list[Grade] = []

    def grade(path: Path) -> list[Grade]:
        print(f"grading {path.name} ...", flush=True)
        return grade_notebook(path, limits)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        # in order; each learner's rows are written as soon as they and those before are
        done = (map(grade, notebooks) if args.jobs == 1 else pool.map(grade, notebooks))
        for grades in done:
            everyone += grades
            if args.csv:
                append_csv(grades, args.csv)
    print_table(everyone)
    if args.csv:
        print(f"grades written to {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
