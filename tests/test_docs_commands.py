"""Every shell command in README.md, docs/*.md and the conf/ header comments that calls a script of this
project works as written: a renamed key, a wrong option or an unquoted ``<placeholder>`` fails here.

Commands are collected from bash code blocks, from inline code that starts with ``python scripts/`` (or
``bash scripts/``) and from ``#   python scripts/...`` comment lines of conf/. Placeholders are filled from a
real tiny run: ``<time>_<id>`` is its folder name (under ``outputs/train/runs/``, and under
``outputs/train/multiruns/`` as a sweep of two copies of it), ``RUN`` and ``.../`` its folder. Then:

* Hydra scripts: every job the command line would start (``-m`` sweeps expanded) is composed in-process,
  after ``resume=`` is applied as ``scripts/train.py`` does; ``--help``, ``-sc`` and ``--info`` run for real;
* ``scripts/summarize.py`` runs for real on the sweep; ``scripts/wandb_dashboard.py`` parses its arguments;
* shell scripts must exist and know every option the command gives them.

Files the docs create in the same breath (``# my_conf/...`` code blocks, ``cat > FILE <<'YAML'``) are written
first, so the commands that use them compose as a reader's would.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.config_compose import Composer
from tests.helpers.overrides import TINY_DENOISE as TINY
from tests.helpers.paths import CONF_DIR, REPO_ROOT
from tests.helpers.runs import run_script

DOC_FILES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
HYDRA_FLAGS_RUN = {"--help", "-h", "--hydra-help", "--info", "-i", "-sc", "--shell-completion"}
HYDRA_FLAGS_DROP = {"-m", "--multirun", "--resolve"}
HYDRA_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p"}
ELLIPSIS_KEYS = {  # what `key=...` stands for in the docs
    "ckpt_path": "{ckpt}",
    "finetuned_ckpt_path": "{ckpt}",
    "model.checkpoint_path": "{ckpt}",
    "distill.teacher": "{ckpt}",
    "input": "photo.png",
}
PLACEHOLDERS = {"<sweep id>": "sweep1", "<name>": "workspace", "<you>": "me"}


@dataclass
class DocCommand:
    """One script invocation found in a file: where it is and its shell text."""

    where: str
    text: str


def _fenced_blocks(text: str) -> Iterator[tuple[int, str, list[str]]]:
    """(first line number, language, lines) of every fenced code block."""
    lines, block, lang, start = text.splitlines(), None, "", 0
    for number, line in enumerate(lines, 1):
        fence = re.match(r"^\s*```(\w*)", line)
        if fence and block is None:
            block, lang, start = [], fence.group(1), number + 1
        elif fence:
            yield start, lang, block
            block = None
        elif block is not None:
            block.append(line)


def _shell_lines(lines: list[str], start: int) -> Iterator[tuple[int, str]]:
    """Logical shell lines (backslash continuations joined) with their first line number."""
    pending, first = "", start
    for number, line in enumerate(lines, start):
        if not pending:
            first = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield first, pending + line
        pending = ""


def _script_text(line: str) -> str | None:
    """The part of a shell line that calls a project script, without a trailing comment; None if none."""
    if not re.search(r"(python3?|bash)\s+scripts/\w+\.(py|sh)", line):
        return None
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError as exc:
        raise AssertionError(f"not valid shell: {line}: {exc}") from None
    return line if tokens else None


def collect_commands() -> tuple[list[DocCommand], dict[str, str]]:
    """Every documented script invocation, and the files the docs tell the reader to create."""
    commands: list[DocCommand] = []
    files: dict[str, str] = {}
    for doc in DOC_FILES:
        text = doc.read_text()
        name = doc.relative_to(REPO_ROOT)
        for start, lang, lines in _fenced_blocks(text):
            header = re.match(r"^#\s+((?:my_\w+)/\S+\.(?:py|yaml))", lines[0]) if lines else None
            if header:  # a file the reader writes: "# my_pkg/speckle.py", "# my_conf/data/noise/speckle.yaml"
                files[header.group(1)] = "\n".join(lines[1:]) + "\n"
            if lang not in ("bash", "sh", "shell", ""):
                continue
            heredoc = re.search(r"cat > (\S+) <<'(\w+)'\n(.*?)\n\2", "\n".join(lines), re.S)
            if heredoc:
                files[heredoc.group(1)] = heredoc.group(3) + "\n"
            for number, line in _shell_lines(lines, start):
                for inner in re.findall(
                    r"\$\(([^)]*)\)", line
                ):  # eval "$(python scripts/... -sc install=bash)"
                    if _script_text(inner):
                        commands.append(DocCommand(f"{name}:{number}", inner))
                line = re.sub(r"\$\([^)]*\)", "x", line)
                if _script_text(line):
                    commands.append(DocCommand(f"{name}:{number}", line))
        for number, line in enumerate(text.splitlines(), 1):
            for span in re.findall(r"`((?:\S+=\S+ )*(?:python3?|bash) scripts/[^`]+)`", line):
                commands.append(DocCommand(f"{name}:{number}", span))
    for conf in sorted(CONF_DIR.rglob("*.yaml")):
        for number, line in enumerate(conf.read_text().splitlines(), 1):
            match = re.match(r"^#\s+((?:python3?|bash) scripts/.*)$", line)
            if match:  # a header example; "  (note)" or "  # note" after the command is prose
                command = re.split(r"\s{2,}[(#]", match.group(1))[0]
                commands.append(DocCommand(f"{conf.relative_to(REPO_ROOT)}:{number}", command))
    return commands, files


COMMANDS, DOC_FILES_TO_WRITE = collect_commands()


def test_the_docs_have_commands_to_check() -> None:
    by_file = {c.where.split(":")[0] for c in COMMANDS}
    assert {"README.md", "docs/sweeps.md", "docs/deployment.md", "conf/export.yaml"} <= by_file
    assert len(COMMANDS) > 100


@pytest.mark.parametrize("command", COMMANDS, ids=[c.where for c in COMMANDS])
def test_no_unquoted_placeholder_reaches_the_shell(command: DocCommand) -> None:
    """``<time>`` outside quotes is a redirection in bash: placeholders must be quoted."""
    if "<TAB>" in command.text:  # a key to press, shown after a completion command
        return
    lexer = shlex.shlex(command.text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    tokens = list(lexer)
    assert "<" not in tokens and "<<" not in tokens, f"{command.where}: unquoted < in {command.text}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A launch folder with a real tiny run, a sweep made of two copies of it, and the docs' own files."""
    root = tmp_path_factory.mktemp("docs_commands")
    run_script("train.py", *TINY, cwd=root)
    (run,) = (root / "outputs" / "train" / "runs").iterdir()
    sweep = root / "outputs" / "train" / "multiruns" / run.name
    for job in ("0", "1"):
        shutil.copytree(run, sweep / job)
    shutil.copytree(run, root / "outputs" / "train" / "wandb_sweeps" / PLACEHOLDERS["<sweep id>"] / "r1")
    for relative, content in DOC_FILES_TO_WRITE.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(content)
    (root / "home").mkdir()
    previous = os.getcwd()
    os.chdir(root)
    try:
        yield root
    finally:
        os.chdir(previous)


def _fill(text: str, root: Path) -> str:
    """The command with its placeholders filled from the tiny run in ``root``."""
    (run,) = (root / "outputs" / "train" / "runs").glob("*_*")
    ckpt = f"outputs/train/runs/{run.name}/checkpoints/best.ckpt"
    text = text.replace("<time>_<id>", run.name)
    text = re.sub(r"(?<![\w/])RUN/", f"outputs/train/runs/{run.name}/", text)
    text = re.sub(r"\.\.\./(?=\w)", f"outputs/train/runs/{run.name}/checkpoints/", text)
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    text = text.replace("$PWD", str(root)).replace("$HOME", str(root / "home"))
    for key, value in ELLIPSIS_KEYS.items():
        text = re.sub(
            rf"(?<![\w.]){re.escape(key)}=\.\.\.(?=\s|\]|$)", f"{key}={value.format(ckpt=ckpt)}", text
        )
    return text


def _invocations(text: str) -> Iterator[tuple[str, list[str]]]:
    """(script path, arguments) of every project script a shell line calls."""
    tokens = shlex.split(text, comments=True)
    segment: list[str] = []
    for token in [*tokens, ";"]:
        if token in (";", "&&", "||", "|", "&"):
            while segment and re.match(r"^\w+=", segment[0]):  # VAR=value before the command
                segment.pop(0)
            if (
                len(segment) >= 2
                and segment[0] in ("python", "python3", "bash")
                and segment[1].startswith("scripts/")
            ):
                args = [re.sub(r"^\[(\S+=\S+)\]$", r"\1", a) for a in segment[2:] if a != "..."]
                yield segment[1], args
            segment = []
        else:
            segment.append(token.rstrip(";&") if token not in ("&",) else token)


def _config_name(script: Path) -> str | None:
    match = re.search(r'config_name="(\w+)"', script.read_text())
    return match.group(1) if match else None


def _load_script(script: Path) -> object:
    spec = importlib.util.spec_from_file_location(f"doc_script_{script.stem}", script)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_hydra_script(script: Path, args: list[str], composer: Composer, root: Path) -> None:
    if set(args) & HYDRA_FLAGS_RUN:
        proc = subprocess.run([sys.executable, str(script), *args], cwd=root, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return
    overrides, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in HYDRA_FLAGS_WITH_VALUE:
            skip = True
        elif arg not in HYDRA_FLAGS_DROP:
            assert not arg.startswith("-"), f"unknown flag {arg}"
            overrides.append(arg)
    if script.name == "train.py" and any(a.startswith("resume=") for a in overrides):
        from imagelab.tasks.resume import resume_argv

        overrides = resume_argv([str(script), *overrides])[1:]
    composer.command(_config_name(script) or "", overrides)


def _check_shell_script(script: Path, args: list[str]) -> None:
    text = script.read_text()
    for arg in args:
        if arg.startswith("-"):
            assert re.search(rf"^\s*{re.escape(arg)}\)", text, re.M), f"{script.name} has no option {arg}"


def check_command(command: DocCommand, composer: Composer, root: Path) -> int:
    """Check every script call of one documented command; the number of calls checked."""
    calls = 0
    for script_text, args in _invocations(_fill(command.text, root)):
        script = REPO_ROOT / script_text
        assert script.is_file(), f"{script_text} does not exist"
        if script.suffix == ".sh":
            _check_shell_script(script, args)
        elif _config_name(script):
            _check_hydra_script(script, args, composer, root)
        elif script.name == "summarize.py":
            with contextlib.redirect_stdout(io.StringIO()):
                assert _load_script(script).main(args) == 0
        elif script.name == "wandb_dashboard.py":
            _load_script(script).parse_args([a for a in args if a not in ("-h", "--help")])
        else:
            raise AssertionError(f"no check for {script_text}: add one to tests/test_docs_commands.py")
        calls += 1
    return calls


@pytest.mark.slow  # one real tiny run fills the placeholders
def test_every_documented_command_composes(workdir: Path, tmp_path: Path) -> None:
    """All commands in one test: one Hydra initialisation, one tiny run (the collection is checked above)."""
    composer = Composer(tmp_path)
    failures, calls = [], 0
    sys.path.insert(0, str(workdir))  # my_pkg/... written from the docs, as PYTHONPATH=$PWD does
    try:
        with composer.session():
            for command in COMMANDS:
                if "<TAB>" in command.text:
                    continue
                try:
                    calls += check_command(command, composer, workdir)
                except Exception as exc:  # report them all at once
                    failures.append(
                        f"{command.where}: {command.text.strip()}\n    {type(exc).__name__}: {exc}"
                    )
    finally:
        sys.path.remove(str(workdir))
    print(
        f"\ntest_docs_commands: {len(COMMANDS)} commands, {calls} script calls, {composer.composed} jobs composed"
    )
    assert not failures, "\n".join(failures)
    assert calls >= len(COMMANDS) - 2
