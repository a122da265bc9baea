"""Every code block in README.md and docs/*.md either runs here or says why it does not.

The convention (also in docs/doc-tests.md, for writers):

* A fenced block is **marked** by an HTML comment on a line above its opening fence
  (blank lines and other HTML comments may stand between them; the comment is invisible
  on GitHub):

  - ``<!-- doc-test: run -->`` — the block runs;
  - ``<!-- doc-test: run slow -->`` — it runs, and its page's test is marked ``slow``
    (outside the default ``-m 'not slow'`` run);
  - ``<!-- doc-test: skip (why) -->`` — an illustration: output, a sketch with names that
    are yours to supply, a reference list, a command that installs. The reason in
    parentheses is required.

  An unmarked block fails :func:`test_every_block_is_marked`.
* **A page is a script.** Its runnable blocks run in page order, in one fresh temporary
  folder (the current directory of every block), so a block may use what an earlier
  runnable block on the same page made (a spec, a running cluster) — and the page says
  so in prose, since the reader runs those blocks too. Pages do not share anything.
* ``python`` blocks are written to a file and run with this interpreter (the venv's), with
  a timeout; ``python file=NAME`` writes it to ``NAME`` in the folder, so a later block
  can run it again (``$ python NAME``).
* ``console`` blocks run each ``$ `` line (the lines after it are sample output, not
  compared); ``sh``/``bash``/``shell`` blocks run every line that is not a
  ``#`` comment. Each shell line runs alone under ``bash -c`` with the venv's ``bin`` first
  on ``PATH`` (so ``ruflo-consensus`` and ``python`` are the venv's) and must exit 0 —
  unless its trailing comment says ``# exits N``.
* Teardown always runs, also when a block failed: ``cluster down`` for every spec in the
  folder that has a run folder, then SIGKILL for any process a run folder still records
  whose command line names this temporary folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON_LANGS = {"python", "py"}
SHELL_LANGS = {"console", "sh", "bash", "shell"}
BLOCK_TIMEOUT_S = 90.0
SLOW_BLOCK_TIMEOUT_S = 600.0
# where pip put the `ruflo-consensus` script of this interpreter's install (the venv's bin)
_BIN_DIRS = list(dict.fromkeys([sysconfig.get_path("scripts"), str(Path(sys.executable).parent)]))

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_MARK = re.compile(r"<!--\s*doc-test:\s*(?P<what>.*?)\s*-->")
_COMMENT = re.compile(r"^\s*<!--.*-->\s*$")
_EXIT = re.compile(r"#.*\bexits? (\d+)\b")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page, with its doc-test mark (``None``: unmarked)."""

    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    info: str
    text: str
    mark: str | None  # "run" or "skip"
    reason: str
    slow: bool

    @property
    def where(self) -> str:
        page = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page
        return f"{page}:{self.line}"


def _mark_above(lines: list[str], fence_index: int) -> tuple[str | None, str, bool]:
    """The doc-test comment above the fence at ``fence_index``: (mark, reason, slow)."""
    i = fence_index - 1
    while i >= 0 and (not lines[i].strip() or _COMMENT.match(lines[i])):
        m = _MARK.search(lines[i])
        if m:
            what = m.group("what")
            if what in ("run", "run slow"):
                return "run", "", what == "run slow"
            skip = re.fullmatch(r"skip\s*\((?P<why>.*)\)", what, flags=re.S)
            if skip:
                return "skip", skip.group("why").strip(), False
            return "bad:" + what, "", False
        i -= 1
    return None, "", False


def parse_blocks(page: Path) -> list[Block]:
    """Every fenced block of ``page`` (CommonMark fences: a closing fence is the same
    character, at least as long, with nothing after it)."""
    lines = page.read_text().splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence = m.group("fence")
        info = m.group("info").strip()
        lang = info.split()[0].lower() if info else ""
        mark, reason, slow = _mark_above(lines, i)
        body = []
        j = i + 1
        while j < len(lines):
            close = lines[j].strip()
            if close.startswith(fence[0] * len(fence)) and not close.strip(fence[0]):
                break
            body.append(lines[j])
            j += 1
        text = "\n".join(body) + "\n"
        blocks.append(Block(page, i + 1, lang, info, text, mark, reason, slow))
        i = j + 1
    return blocks


def _all_blocks() -> list[Block]:
    return [b for page in PAGES for b in parse_blocks(page)]


def shell_commands(block: Block) -> list[tuple[str, int]]:
    """The commands of a shell block and the exit code each must give."""
    cmds = []
    for raw in block.text.splitlines():
        line = raw.strip()
        if block.lang == "console":
            if not line.startswith("$ "):
                continue  # sample output
            line = line[2:].strip()
        elif not line or line.startswith("#"):
            continue
        m = _EXIT.search(line)
        cmds.append((line, int(m.group(1)) if m else 0))
    return cmds


def test_every_block_is_marked() -> None:
    problems = []
    for b in _all_blocks():
        if b.mark is None:
            problems.append(
                f"{b.where}: no <!-- doc-test: run --> or <!-- doc-test: skip (why) -->"
            )
        elif b.mark.startswith("bad:"):
            problems.append(f"{b.where}: unknown doc-test mark {b.mark[4:]!r}")
        elif b.mark == "skip" and not b.reason:
            problems.append(f"{b.where}: a skip needs a reason: <!-- doc-test: skip (why) -->")
        elif b.mark == "run" and b.lang not in PYTHON_LANGS | SHELL_LANGS:
            problems.append(f"{b.where}: cannot run a {b.lang or 'plain'!r} block")
        elif b.mark == "run" and b.lang in SHELL_LANGS and not shell_commands(b):
            problems.append(f"{b.where}: a runnable shell block without a command")
    assert not problems, "\n".join(problems)


def test_parser_reads_the_convention(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text(
        "<!-- doc-test: run -->\n\n```console\n$ echo hi   # exits 0\nhi\n```\n"
        "<!-- doc-test: skip (a sketch) -->\n<!-- other -->\n````python\nx\n```\n````\n"
        "text\n\n```toml\na = 1\n```\n"
        "<!-- doc-test: run slow -->\n```sh\n# setup\nfalse  # exits 1\n```\n"
    )
    b = parse_blocks(page)
    assert [(x.lang, x.mark, x.reason, x.slow) for x in b] == [
        ("console", "run", "", False),
        ("python", "skip", "a sketch", False),
        ("toml", None, "", False),
        ("sh", "run", "", True),
    ]
    assert b[1].text == "x\n```\n"
    assert shell_commands(b[0]) == [("echo hi   # exits 0", 0)]
    assert shell_commands(b[3]) == [("false  # exits 1", 1)]


# --- running the pages ------------------------------------------------------------------


def _runnable_pages() -> list[object]:
    params: list[object] = []
    for page in PAGES:
        run = [b for b in parse_blocks(page) if b.mark == "run"]
        if run:
            marks = [pytest.mark.slow] if any(b.slow for b in run) else []
            params.append(pytest.param(page, id=page.name, marks=marks))
    return params


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([*_BIN_DIRS, env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONPATH", None)  # blocks see the installed package, as a reader does
    return env


def _run(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


def _node_logs(work: Path) -> str:
    tails = []
    for log in sorted(work.rglob(".ruflo-cluster/*/logs/*.log")):
        text = log.read_text(errors="replace").splitlines()[-8:]
        tails.append(f"--- {log.relative_to(work)}\n" + "\n".join(text))
    return "\n".join(tails)


def _run_block(block: Block, work: Path, index: int) -> None:
    timeout = SLOW_BLOCK_TIMEOUT_S if block.slow else BLOCK_TIMEOUT_S
    if block.lang in PYTHON_LANGS:
        named = re.search(r"\bfile=(\S+)", block.info)
        script = work / named.group(1) if named else work.parent / f"block{index}_{block.line}.py"
        script.write_text(block.text)
        steps = [([sys.executable, str(script)], 0, "python block")]
    else:
        steps = [(["bash", "-c", cmd], code, cmd) for cmd, code in shell_commands(block)]
    for args, want, what in steps:
        try:
            res = _run(args, work, timeout)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"{block.where}: {what!r} did not end in {timeout} s\n{exc}")
        print(f"{block.where}: {what}\n{res.stdout}", end="")
        if res.returncode != want:
            pytest.fail(
                f"{block.where}: {what!r} exited {res.returncode}, not {want}\n"
                f"stdout:\n{res.stdout[-3000:]}\nstderr:\n{res.stderr[-3000:]}\n"
                f"{_node_logs(work)}"
            )


def _teardown(work: Path) -> None:
    """Stop every cluster the page started: ``cluster down``, then SIGKILL what is left."""
    for state in sorted(work.rglob(".ruflo-cluster/*/cluster.json")):
        try:
            pids = [int(p) for p in json.loads(state.read_text())["pids"].values()]
        except (OSError, ValueError, KeyError, TypeError):
            pids = []
        spec = state.parent.parent.parent / f"{state.parent.name}.toml"
        if spec.is_file():
            with contextlib.suppress(subprocess.TimeoutExpired):
                _run(["ruflo-consensus", "cluster", "down", str(spec)], work, 60)
        for pid in pids:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if str(work).encode() in cmdline:  # still ours: never hit a recycled pid
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


def run_page(page: Path, work: Path) -> None:
    """The page's runnable blocks, in order, in ``work``; teardown always."""
    work.mkdir()
    started = time.monotonic()
    try:
        for index, block in enumerate(b for b in parse_blocks(page) if b.mark == "run"):
            _run_block(block, work, index)
    finally:
        _teardown(work)
    print(f"{page.name}: {time.monotonic() - started:.1f} s")


@pytest.mark.parametrize("page", _runnable_pages())
def test_page_runs(page: Path, tmp_path: Path) -> None:
    run_page(page, tmp_path / "work")


def test_a_failing_block_still_stops_the_cluster(tmp_path: Path) -> None:
    """A block fails after ``cluster up``: the page fails and no node is left running."""
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- doc-test: run -->\n```console\n"
        '$ python -c "from ruflo_consensus.runtime import write_local_spec; '
        "write_local_spec('demo')\"\n"
        "$ ruflo-consensus cluster up demo/cluster.toml --only n1\n"
        "$ false\n```\n"
    )
    work = tmp_path / "work"
    with pytest.raises(pytest.fail.Exception, match="'false' exited 1, not 0"):
        run_page(page, work)
    pids = json.loads((work / "demo/.ruflo-cluster/cluster/cluster.json").read_text())
    assert pids["pids"] == {}  # cluster down ran
    assert pids["spec"]
    ran = [p for p in Path("/proc").glob("[0-9]*") if _cmdline_names(p, work)]
    assert not ran, ran


def _cmdline_names(proc: Path, work: Path) -> bool:
    try:
        return str(work).encode() in (proc / "cmdline").read_bytes()
    except OSError:
        return False


def test_readme_embedding_without_its_cluster_ends_in_one_line(tmp_path: Path) -> None:
    """The README's embed.py with a spec but no other node running: a one-line message
    and exit 1 after its 5 s timeout, not a 30 s wait and a traceback."""
    block = next(b for b in parse_blocks(ROOT / "README.md") if "file=embed.py" in b.info)
    work = tmp_path / "work"
    work.mkdir()
    write = "from ruflo_consensus.runtime import write_local_spec; write_local_spec('demo')"
    try:
        assert _run([sys.executable, "-c", write], work, 60).returncode == 0
        (work / "embed.py").write_text(block.text)
        started = time.monotonic()
        res = _run([sys.executable, "embed.py"], work, 60)
        took = time.monotonic() - started
    finally:
        _teardown(work)
    assert res.returncode == 1, res.stderr
    assert "no quorum answered in 5 s" in res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert took < 25, took  # 5 s and start-up, far from the 30 s default
