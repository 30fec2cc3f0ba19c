"""The user guide runs: every code block in docs/ and every script in examples/ is executed here.

Each docs page runs top to bottom in its own temporary folder (so `./microw_store` is the page's own store)
and one Python namespace, so later blocks use what earlier ones made:

* ```python blocks are executed as written;
* ```bash blocks run their `microw ...` commands through the CLI's `main()` in this process (exit code 0
  required; `export NAME=value` lines set environment variables for the rest of the page); a
  `python examples/...` or `python benchmarks/experiments.py` line must name an existing script (those
  are run by test_examples and test_experiments_script);
* a block right after a `<!-- no-test -->` line is not run: only installing and `microw app` may use it;
* a bash block right after `<!-- parse-only -->` (commands that reproduce long experiments) is checked against
  the CLI's argument parser but not run.

Other fences (text, json, csv) are output or data and are not run. The Troubleshooting page must list
every MicrowError subclass and every message microw raises (see test_troubleshooting_*).
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import runpy
import shlex
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

import microw_core
import microw_core.errors as errors
import microw_core.model

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
PAGES = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py"))
NO_TEST = "<!-- no-test -->"
PARSE_ONLY = "<!-- parse-only -->"
RUN_LANGUAGES = ("python", "bash")
DATA_LANGUAGES = ("text", "json", "csv")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
FENCE = re.compile(r"^(\s*)```\s*([\w-]*)\s*$")


@dataclass
class Block:
    page: str
    line: int        # line of the opening fence (1-based)
    language: str
    code: str
    no_test: bool
    parse_only: bool


def blocks(page: str) -> list[Block]:
    """The fenced code blocks of a docs page, in order."""
    lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
    out, i, previous = [], 0, ""
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            if lines[i].strip():
                previous = lines[i].strip()
            i += 1
            continue
        indent, language, start = len(match.group(1)), match.group(2), i
        body = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        if i == len(lines):
            raise AssertionError(f"docs/{page}:{start + 1}: the code fence is never closed")
        out.append(Block(page, start + 1, language, "\n".join(body) + "\n", previous == NO_TEST,
                         previous == PARSE_ONLY))
        previous, i = "", i + 1
    return out


def commands(code: str) -> list[str]:
    """Shell commands of a bash block: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def script_named(command: str) -> Path | None:
    """The example or experiments script a `python ...` line runs, if it is one."""
    words = shlex.split(command)
    if len(words) >= 2 and words[0] == "python" and (
            words[1].startswith("examples/") or words[1] == "benchmarks/experiments.py"):
        return ROOT / words[1]
    return None


def demo_model_ready() -> None:
    """Skip without the demo model (it is trained once and ships in the repo); on CI that is a failure."""
    if (microw_core.model.DEMO_MODEL_DIR / "config.json").exists():
        return
    message = "the demo model is not built yet (python -m microw_core.demo.train)"
    if IN_CI:
        pytest.fail(f"The docs cannot run on CI: {message}.")
    pytest.skip(message)


# ----- static checks ------------------------------------------------------------------------------------


def test_docs_and_examples_exist():
    for page in ("index.md", "installation.md", "quickstart.md", "core-concepts.md", "troubleshooting.md",
                 "best-practices.md", "examples.md", "experiments.md", "app.md"):
        assert page in PAGES, f"docs/{page} is missing"
    assert any(p.startswith("hooks/") for p in PAGES) and any(p.startswith("workflows/") for p in PAGES)
    assert len(SCRIPTS) >= 4, "examples/ should hold the learning-path scripts"


@pytest.mark.parametrize("page", PAGES)
def test_every_block_is_run_or_allowed(page):
    """No code block escapes testing: only data fences, runnable blocks and marked install / app blocks."""
    for block in blocks(page):
        where = f"docs/{page}:{block.line}"
        assert block.language in RUN_LANGUAGES + DATA_LANGUAGES, (
            f"{where}: give the fence a language ({', '.join(RUN_LANGUAGES + DATA_LANGUAGES)})")
        if block.language in DATA_LANGUAGES:
            assert not (block.no_test or block.parse_only), f"{where}: {NO_TEST} / {PARSE_ONLY} apply to bash only"
            continue
        if block.no_test or block.parse_only:
            marker = NO_TEST if block.no_test else PARSE_ONLY
            assert block.language == "bash", f"{where}: Python blocks always run; remove {marker}"
        if block.no_test:
            assert all(c.startswith(("pip ", "python -c", "microw app", "export ", "git ", "apt-get "))
                       or "pip install" in c for c in commands(block.code)), (
                f"{where}: {NO_TEST} is only for installing and `microw app`")
        if block.language != "bash":
            continue
        for command in commands(block.code):
            script = script_named(command)
            if script is not None:
                assert script.is_file(), f"{where}: {script.relative_to(ROOT)} does not exist"
            elif command.startswith("microw "):
                parse_cli(command, where)
            elif not block.no_test:
                assert command.startswith("export "), (
                    f"{where}: `{command}` cannot run in the docs test; only `microw ...` commands run "
                    f"(mark install / `microw app` blocks with {NO_TEST})")
        if block.parse_only:
            assert all(c.startswith("microw ") for c in commands(block.code)), (
                f"{where}: {PARSE_ONLY} is only for `microw ...` commands")


def parse_cli(command: str, where: str) -> None:
    """The command and its options exist (argparse exits on an unknown one)."""
    from microw_core.cli import build_parser

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            build_parser().parse_args(shlex.split(command)[1:])
    except SystemExit:
        raise AssertionError(f"{where}: `{command}` is not a valid microw command:\n{stderr.getvalue()}") from None


@pytest.mark.parametrize("page", PAGES)
def test_links_resolve(page):
    """Relative links and images point at files that exist."""
    text = (DOCS / page).read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = ((DOCS / page).parent / target.split("#")[0]).resolve()
        assert path.exists(), f"docs/{page} links to {target}, which does not exist"


# ----- running the pages ------------------------------------------------------------------------------------


def run_cli(command: str, where: str) -> None:
    from microw_core.cli import main

    words = shlex.split(command)
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = main(words[1:])
        except SystemExit as exit:  # argparse: unknown command or option
            code = exit.code
    assert code == 0, f"{where}: `{command}` exited with {code}:\n{stderr.getvalue()}{stdout.getvalue()[-2000:]}"


def run_block(block: Block, namespace: dict, monkeypatch) -> None:
    where = f"docs/{block.page}:{block.line}"
    if block.language == "python":
        try:
            exec(compile(block.code, f"<{where}>", "exec"), namespace)
        except Exception:
            raise AssertionError(f"{where}: the Python block failed:\n{block.code}\n{traceback.format_exc()}") from None
        return
    for command in commands(block.code):
        if command.startswith("export "):
            name, _, value = command[len("export "):].partition("=")
            monkeypatch.setenv(name, value)
        elif script_named(command) is None:
            run_cli(command, where)


def runnable(block: Block) -> bool:
    return block.language in RUN_LANGUAGES and not block.no_test and not block.parse_only


@pytest.mark.parametrize("page", [p for p in PAGES if any(runnable(b) for b in blocks(p))])
def test_page_runs(page, tmp_path, monkeypatch):
    demo_model_ready()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MICROW_STORE", raising=False)  # the docs use the default ./microw_store
    namespace = {"__name__": "__main__"}
    for block in blocks(page):
        if runnable(block):
            run_block(block, namespace, monkeypatch)


def test_examples_run_in_order(tmp_path, monkeypatch):
    """The learning path: examples/*.py in order, in one folder, so later ones use the store the earlier made."""
    demo_model_ready()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MICROW_STORE", raising=False)
    for script in SCRIPTS:
        monkeypatch.setattr(sys, "argv", [str(EXAMPLES / script)])
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                runpy.run_path(str(EXAMPLES / script), run_name="__main__")
        except BaseException:  # SystemExit included: an example that gives up is a failure
            raise AssertionError(f"examples/{script} failed:\n{traceback.format_exc()}") from None


def test_experiments_script(tmp_path, monkeypatch):
    """benchmarks/experiments.py (which writes docs/experiments_results.md) runs end to end on tiny budgets."""
    demo_model_ready()
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results.md"
    monkeypatch.setattr(sys, "argv", ["experiments.py", "--smoke", "--store", str(tmp_path / "store"),
                                      "--out", str(out)])
    with contextlib.redirect_stdout(io.StringIO()):
        runpy.run_path(str(ROOT / "benchmarks" / "experiments.py"), run_name="__main__")
    text = out.read_text()
    assert "Explained variance" in text and "concept" in text.lower() and "steer" in text.lower()


# ----- troubleshooting covers every error -------------------------------------------------------------------


def microw_error_classes() -> set[str]:
    return {name for name, value in vars(errors).items()
            if isinstance(value, type) and issubclass(value, errors.MicrowError)}


def _message_template(node: ast.AST) -> str | None:
    """A message's text with each `{...}` placeholder as \\x00 (None when it is not a string expression)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "\x00" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _message_template(node.left), _message_template(node.right)
        return None if left is None or right is None else left + right
    if isinstance(node, ast.IfExp):  # either branch may be shown; the condition's text is a placeholder
        return "\x00"
    return None


def normalise(text: str) -> str:
    text = re.sub(r"[`*\\]", "", text.lower())
    return re.sub(r"\s+", " ", text).strip(" .,;:")


def raised_messages() -> list[tuple[str, str, str]]:
    """(where, class, key phrase) for every MicrowError constructed with a message in microw_core.

    The key phrase is the longest literal stretch of the message between placeholders.
    """
    classes = microw_error_classes()
    found = []
    for path in sorted((ROOT / "microw_core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in classes
                    and node.args):
                continue
            template = _message_template(node.args[0])
            if template is None:
                continue
            key = normalise(max(template.split("\x00"), key=len))
            if len(key.split()) >= 3:
                found.append((f"{path.relative_to(ROOT)}:{node.lineno}", node.func.id, key))
    return found


def troubleshooting_text() -> str:
    return (DOCS / "troubleshooting.md").read_text(encoding="utf-8")


def test_troubleshooting_lists_every_error_class():
    text = troubleshooting_text()
    raised = set()
    for path in (ROOT / "microw_core").rglob("*.py"):
        raised |= set(re.findall(r"raise (\w+Error)\(", path.read_text(encoding="utf-8")))
    for name in sorted(microw_error_classes() | (raised & microw_error_classes())):
        assert f"`{name}`" in text, f"docs/troubleshooting.md does not describe {name}"


def test_troubleshooting_lists_every_message():
    text = normalise(troubleshooting_text())
    missing = [f"{where} {cls}: ...{key}..." for where, cls, key in raised_messages() if key not in text]
    assert not missing, ("docs/troubleshooting.md lacks these error messages (add each with its cause and fix):\n"
                         + "\n".join(missing))
