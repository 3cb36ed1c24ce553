"""Every fenced shell block of README.md and docs/**/*.md runs as written, or says why it is not run here.

Shell blocks are fenced ```sh, ```bash, ```shell or ```console (in a console block the lines starting with
``$ `` are the commands, with their ``\\`` continuation lines; the rest is output). An HTML comment on the line
directly above the fence marks a block that is not executed here:

- ``<!-- docs-test: aws -->``: it needs an AWS account (the prose around it says so); it must name AWS
  (``--region``, ``s3://``, ``aws ...``, ``cdk deploy``...);
- ``<!-- docs-test: covered-by tests/test_x.py -->``: that test runs it; the file must exist and name the doc;
- ``<!-- docs-test: skip REASON -->``: not run, for the reason given.

Every other block is executed: per doc file, one workspace (a temporary folder holding a copy of the session's
workspace, in which the main job ran: ``make run``'s three commands, its endpoint ``diagnosa`` started again on
:8080 before the file's first block, as a reader has it after ``make run``) and one bash session
for the file's blocks in order, so a block can use what an earlier one made (files, variables), as in a
terminal; ``set -e -o pipefail``. The venv's ``diagnosa`` is first on the PATH (``.venv`` in the workspace
is the venv, for ``source .venv/bin/activate``), no AWS credentials, no region. ``diagnosa serve`` and
``diagnosa app``, which run until stopped, are started in the background as in a second terminal, and the
block goes on once they listen. Where the machine allows it (``unshare``), a file's session runs in network,
PID and mount namespaces of its own: offline (loopback only), the documented ports 8080, 8081 and 8501 free, and
every process it started ends with it. Elsewhere it runs on this machine's network with proxies that refuse
every connection, needs 8080, 8081 and 8501 free, and its processes and endpoints are stopped at the end.

``python tests/test_docs_examples.py --list`` prints the inventory: which blocks run, which are marked and why;
``--run docs/x.md`` runs one doc's blocks as this test does and prints what they print.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/**/*.md")
SHELL_LANGUAGES = ("sh", "bash", "shell", "console")
MARKER = re.compile(r"^<!--\s*docs-test:\s*(?P<kind>aws|covered-by|skip)\b\s*(?P<detail>.*?)\s*-->\s*$")
AWS_WORDS = re.compile(r"--region\b|s3://|\baws\s|\bAWS_|\bcdk (deploy|bootstrap)\b|\bsts\b")
# An unlabelled block that starts like a command is a shell block whose fence lost its language.
LOOKS_LIKE_SHELL = re.compile(r"^\s*(\$ |diagnosa |python3? -m |make |pip |curl |npx |export |source )")
DOCUMENTED_PORTS = (8080, 8081, 8501)
FILE_TIMEOUT = 900  # seconds for one doc file's blocks
BACKGROUND_READY_TIMEOUT = 120  # seconds a background command may take to listen


@dataclass(frozen=True)
class Block:
    doc: str  # path relative to the repository
    line: int  # the line of the opening fence
    language: str
    text: str  # the commands (for a console block: without prompts and output)
    marker: str | None = None  # aws | covered-by | skip
    detail: str = ""

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def doc_files() -> list[Path]:
    found = {ROOT / "README.md"} | set((ROOT / "docs").rglob("*.md"))
    return sorted(found)


def _console_commands(lines: list[str]) -> str:
    commands, continuing = [], False
    for line in lines:
        if line.startswith("$ ") or continuing:
            command = line[2:] if line.startswith("$ ") and not continuing else line
            commands.append(command)
            continuing = command.rstrip().endswith("\\")
    return "\n".join(commands)


def parse_blocks(path: Path, doc: str | None = None) -> tuple[list[Block], list[str]]:
    """The shell blocks of one Markdown file, and the problems of its fences and markers."""
    doc = doc or path.relative_to(ROOT).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    problems: list[str] = []
    i = 0
    while i < len(lines):
        fence = re.match(r"^(```+|~~~+)\s*([\w+-]*)", lines[i])
        if not fence:
            if MARKER.match(lines[i]) and not (i + 1 < len(lines) and lines[i + 1].startswith(("```", "~~~"))):
                problems.append(f"{doc}:{i + 1}: a docs-test marker must be the line directly above a fence")
            i += 1
            continue
        opening, language = fence.group(1), fence.group(2).lower()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith(opening)), len(lines))
        body = lines[i + 1:end]
        marker = MARKER.match(lines[i - 1]) if i else None
        if language in SHELL_LANGUAGES:
            text = _console_commands(body) if language == "console" else "\n".join(body)
            block = Block(doc, i + 1, language, text, marker["kind"] if marker else None,
                          marker["detail"] if marker else "")
            blocks.append(block)
            problems += _marker_problems(block)
        elif marker:
            problems.append(f"{doc}:{i + 1}: a docs-test marker above a ```{language or '(no language)'} block")
        elif not language and any(LOOKS_LIKE_SHELL.match(line) for line in body[:1]):
            problems.append(f"{doc}:{i + 1}: a block of commands without a language: fence it as ```bash (or "
                            "```console with $ prompts) so this test runs it")
        i = end + 1
    return blocks, problems


def _marker_problems(block: Block) -> list[str]:
    if block.marker == "aws" and not AWS_WORDS.search(block.text):
        return [f"{block.where}: marked aws, but nothing in it talks to AWS"]
    if block.marker == "covered-by":
        test = ROOT / block.detail
        if not block.detail.startswith("tests/") or not test.is_file():
            return [f"{block.where}: covered-by names {block.detail!r}, which is not a test file"]
        if block.doc not in test.read_text(encoding="utf-8"):
            return [f"{block.where}: {block.detail} does not mention {block.doc}: say there which block it runs"]
    if block.marker == "skip" and len(block.detail.split()) < 4:
        return [f"{block.where}: a skip needs its reason (a few words a reviewer can check)"]
    return []


def all_blocks() -> tuple[list[Block], list[str]]:
    blocks, problems = [], []
    for path in doc_files():
        found, wrong = parse_blocks(path)
        blocks += found
        problems += wrong
    return blocks, problems


def runnable_docs() -> list[str]:
    blocks, _ = all_blocks()
    return sorted({b.doc for b in blocks if b.marker is None})


# ------------------------------------------------------------------------------------------------ running

PRELUDE = r"""
set -e -o pipefail
__docs_n=0
__docs_block() { printf '\n::docs-block %s::\n' "$1"; printf '\n::docs-block %s::\n' "$1" >&2; }
__docs_subcommand() {  # the first word after the global options (--workspace DIR, --lake URI)
  while [ $# -gt 0 ]; do
    case "$1" in --workspace|--lake) shift 2 ;; -*) shift ;; *) printf '%s' "$1"; return ;; esac
  done
}
__docs_background() {  # a command that runs until stopped: in the background, as in a second terminal
  __docs_n=$((__docs_n + 1))
  local log="$DOCS_LOGS/background-$__docs_n.log" pid url hostport i
  command diagnosa "$@" >"$log" 2>&1 &
  pid=$!
  echo "[docs-test] in the background (pid $pid, log $log): diagnosa $*"
  for i in $(seq 1 $((DOCS_READY_TIMEOUT * 5))); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "[docs-test] it ended instead of serving: diagnosa $*" >&2; cat "$log" >&2; return 1
    fi
    # The line each prints when it serves (not the server log's "listening on ... (model loading)").
    url=$(grep -E -o -m1 "^(local endpoint '[^']*'|Diagnosa app) on http://[0-9.]+:[0-9]+" "$log" || true)
    url=${url##* on }
    if [ -n "$url" ]; then
      hostport=${url#http://}
      if (: <>"/dev/tcp/${hostport%:*}/${hostport##*:}") 2>/dev/null; then
        echo "[docs-test] serving: $url"; return 0
      fi
    fi
    sleep 0.2
  done
  echo "[docs-test] not listening after $DOCS_READY_TIMEOUT s: diagnosa $*" >&2; cat "$log" >&2; return 1
}
diagnosa() {
  case "$(__docs_subcommand "$@")" in
    serve|app) __docs_background "$@" ;;
    *) command diagnosa "$@" ;;
  esac
}
if [ -n "$DOCS_TRACE" ]; then PS4='+ ${EPOCHREALTIME} '; set -x; fi  # every command with its start time
"""


def _venv() -> Path:
    """The virtual environment running the tests (its bin/ holds the `diagnosa` command)."""
    venv = Path(sys.prefix)
    if not (venv / "bin" / "diagnosa").exists():
        raise AssertionError(f"no `diagnosa` command in {venv / 'bin'}: install the project (pip install -e .)")
    return venv


def _namespaces_work() -> bool:
    if os.environ.get("DOCS_TEST_NO_NAMESPACES") or not shutil.which("unshare") or not shutil.which("ip"):
        return False  # (the variable tries the other way on a machine that has namespaces)
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--net", "--pid", "--fork", "--mount",
                            "--mount-proc", "--kill-child", "ip", "link", "set", "lo", "up"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


NAMESPACES = None  # decided once per session


def _isolated() -> bool:
    global NAMESPACES
    if NAMESPACES is None:
        NAMESPACES = _namespaces_work()
    return NAMESPACES


def _environment(workspace: Path) -> dict[str, str]:
    """What a newcomer's shell has: the venv first on the PATH, a home, no AWS credentials or region."""
    home = workspace.parent / "home"
    home.mkdir(exist_ok=True)
    refuse = "http://127.0.0.1:9"  # nothing listens there: any connection beyond loopback fails at once
    return {
        "PATH": f"{_venv() / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TMPDIR": str(workspace.parent),
        "PYTHONPATH": str(ROOT),  # this checkout's code, whichever checkout the venv was installed from
        "OMP_WAIT_POLICY": "PASSIVE",  # as in conftest.py: spinning OpenMP threads starve each other on 2 cores
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true",
        "HTTP_PROXY": refuse, "HTTPS_PROXY": refuse, "http_proxy": refuse, "https_proxy": refuse,
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
        "DOCS_LOGS": str(workspace.parent), "DOCS_READY_TIMEOUT": str(BACKGROUND_READY_TIMEOUT),
        "DOCS_TRACE": os.environ.get("DOCS_TRACE", ""),
    }


@dataclass
class Session:
    returncode: int
    output: str  # stdout and stderr together, in order
    blocks: list[Block]

    def failure(self) -> str:
        """The failing block, what it was and what it printed."""
        parts = re.split(r"\n::docs-block (\d+)::\n", self.output)
        shown = {int(n): text for n, text in zip(parts[1::2], parts[2::2])}
        last = max(shown) if shown else 0
        block = self.blocks[last - 1] if last else None
        head = f"{block.where} failed (exit status {self.returncode}):\n{block.text}\n--- its output:\n" if block \
            else f"failed before the first block (exit status {self.returncode}):\n"
        return head + (shown.get(last) or self.output)[-6_000:]


def run_blocks(blocks: list[Block], workspace: Path, *, timeout: int = FILE_TIMEOUT) -> Session:
    """Run the blocks in order in one bash session in ``workspace``."""
    script = [PRELUDE, f"cd {sh_quote(str(workspace))}"]
    for number, block in enumerate(blocks, start=1):
        script += [f"__docs_block {number}", block.text]
    script.append("__docs_block done")
    path = workspace.parent / "session.sh"
    path.write_text("\n".join(script) + "\n", encoding="utf-8")
    env = _environment(workspace)
    if _isolated():
        argv = ["unshare", "--user", "--map-root-user", "--net", "--pid", "--fork", "--mount", "--mount-proc",
                "--kill-child", "bash", "-c", 'ip link set lo up && exec bash "$0"', str(path)]
    else:
        busy = [port for port in DOCUMENTED_PORTS if _port_taken(port)]
        if busy:
            raise AssertionError(f"ports {busy} are taken and this machine cannot give the docs a network of their "
                                 "own (unshare): stop what listens there (e.g. `diagnosa endpoint stop diagnosa`)")
        argv = ["bash", str(path)]
    process = subprocess.Popen(argv, cwd=workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, errors="replace", start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        output += f"\n[docs-test] stopped after {timeout} s"
    finally:
        if not _isolated():
            _stop_leftovers(process.pid, workspace)
    return Session(process.returncode, output, blocks)


def sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _port_taken(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _stop_leftovers(group: int, workspace: Path) -> None:
    """Without namespaces: the session's process group, and the local endpoints it deployed (own sessions)."""
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        pass
    subprocess.run(["bash", "-c", "for f in .diagnosa/endpoints/*/endpoint.json; do [ -f \"$f\" ] && "
                    "diagnosa endpoint stop \"$(basename \"$(dirname \"$f\")\")\"; done; true"],
                   cwd=workspace, env=_environment(workspace), capture_output=True, timeout=120)


# ------------------------------------------------------------------------------------------------ the tests

# What `make run` does (Makefile, `run`): the state a reader of the docs has after the README's first command,
# the approved champion registered and deployed as endpoint `diagnosa` on :8080. No server outlives the setup (its
# endpoint is stopped at the end); each doc's session starts it again first (MAIN_JOB_ENDPOINT), so the docs'
# blocks run beside it, as a reader's do: one that serves on :8080 or as `diagnosa` again collides with it.
MAIN_JOB = Block("Makefile", 0, "bash", textwrap.dedent("""\
    diagnosa data generate --patients 20000 --seed 7
    diagnosa data ingest --batch cohort-n20000-s7
    diagnosa run --local --port 8080 --param ModelApprovalStatus=Approved
    diagnosa endpoint stop diagnosa
    """))
MAIN_JOB_ENDPOINT = Block("Makefile", 0, "bash", "diagnosa endpoint start diagnosa  # make run's endpoint, on :8080")


def make_main_job_workspace(parent: Path) -> Path:
    folder = parent / "project"
    folder.mkdir(parents=True)
    session = run_blocks([MAIN_JOB], folder)
    assert session.returncode == 0, session.failure()
    return folder / ".diagnosa"


def run_doc(doc: str, main_job: Path, parent: Path) -> Session:
    """The executed blocks of ``doc``, in a fresh workspace holding a copy of ``main_job``, with make run's endpoint
    serving on :8080 as a reader has it."""
    blocks = [MAIN_JOB_ENDPOINT] + [b for b in parse_blocks(ROOT / doc)[0] if b.marker is None]
    workspace = parent / "project"
    workspace.mkdir()
    shutil.copytree(main_job, workspace / ".diagnosa", symlinks=True)
    (workspace / ".venv").symlink_to(_venv())
    return run_blocks(blocks, workspace)


@pytest.fixture(scope="session")
def main_job_workspace(tmp_path_factory) -> Path:
    return make_main_job_workspace(tmp_path_factory.mktemp("docs-main-job"))


def test_every_shell_block_is_run_or_marked_with_a_reason():
    blocks, problems = all_blocks()
    assert blocks, "no shell blocks found: the parser is wrong"
    assert problems == []


@pytest.mark.slow
@pytest.mark.parametrize("doc", runnable_docs())
def test_the_shell_blocks_of(doc, main_job_workspace, tmp_path):
    session = run_doc(doc, main_job_workspace, tmp_path)
    assert session.returncode == 0 and "::docs-block done::" in session.output, session.failure()


# ------------------------------------------------------------------------------------------------ the checker itself

def test_blocks_markers_and_console_prompts_are_read(tmp_path):
    (tmp_path / "tests").mkdir()
    doc = tmp_path / "guide.md"
    doc.write_text(textwrap.dedent("""\
        ```bash
        diagnosa executions
        ```
        <!-- docs-test: aws -->
        ```sh
        diagnosa pipeline start --bucket b --region eu-west-1
        ```
        ```console
        $ diagnosa data ingest \\
            --batch b
        dataset patients version 1
        $ diagnosa executions
        ```
        ```python
        print("not a shell block")
        ```
        """), encoding="utf-8")
    blocks, problems = parse_blocks(doc, "docs/guide.md")
    assert problems == []
    assert [(b.line, b.language, b.marker) for b in blocks] == [(1, "bash", None), (5, "sh", "aws"), (8, "console", None)]
    assert blocks[2].text == "diagnosa data ingest \\\n    --batch b\ndiagnosa executions"


@pytest.mark.parametrize("text, problem", [
    ("<!-- docs-test: aws -->\n```bash\ndiagnosa executions\n```\n", "marked aws, but nothing in it talks to AWS"),
    ("<!-- docs-test: covered-by tests/nowhere.py -->\n```bash\nx\n```\n", "which is not a test file"),
    ("<!-- docs-test: covered-by tests/test_lint.py -->\n```bash\nx\n```\n",
     "tests/test_lint.py does not mention docs/guide.md"),
    ("<!-- docs-test: skip slow -->\n```bash\nx\n```\n", "a skip needs its reason"),
    ("<!-- docs-test: skip a reason of enough words -->\n\n```bash\nx\n```\n", "must be the line directly above"),
    ("<!-- docs-test: aws -->\n```python\nx = 1\n```\n", "a docs-test marker above a ```python block"),
    ("```\n$ diagnosa executions\n```\n", "a block of commands without a language"),
    ("```\ndiagnosa run --local\n```\n", "a block of commands without a language"),
])
def test_a_wrong_or_missing_marker_is_a_problem(tmp_path, text, problem):
    doc = tmp_path / "guide.md"
    doc.write_text(text, encoding="utf-8")
    _, problems = parse_blocks(doc, "docs/guide.md")
    assert len(problems) == 1 and problem in problems[0], problems


def _session(tmp_path, *texts: str) -> Session:
    workspace = tmp_path / "project"
    workspace.mkdir()
    return run_blocks([Block("docs/guide.md", 10 * n, "bash", text) for n, text in enumerate(texts, start=1)],
                      workspace, timeout=120)


def test_a_failing_command_fails_its_block_with_its_place_and_output(tmp_path):
    session = _session(tmp_path, "echo first", "echo second\nfalse\necho never")
    assert session.returncode == 1 and "never" not in session.output
    failure = session.failure()
    assert failure.startswith("docs/guide.md:20 failed (exit status 1):\necho second\nfalse") and "second" in failure


def test_the_blocks_of_a_doc_share_one_shell_without_aws_credentials_or_network(tmp_path):
    session = _session(tmp_path, "mkdir sub && cd sub && NAME=kept",
                       'test "$NAME" = kept && test "$(basename "$PWD")" = sub',
                       'test -z "$AWS_ACCESS_KEY_ID$AWS_REGION$AWS_DEFAULT_REGION" && type -P diagnosa',
                       "! python -c \"import urllib.request; urllib.request.urlopen('http://example.org', timeout=5)\"")
    assert session.returncode == 0 and "::docs-block done::" in session.output, session.failure()
    assert f"{_venv() / 'bin' / 'diagnosa'}" in session.output


def test_a_server_that_does_not_come_up_fails_the_block_with_its_log(tmp_path):
    session = _session(tmp_path, "diagnosa serve --model nowhere\necho never")
    assert session.returncode == 1 and "never" not in session.output
    assert "[docs-test] it ended instead of serving: diagnosa serve --model nowhere" in session.output
    assert "model not found: nowhere" in session.output


# ------------------------------------------------------------------------------------------------ inventory

def inventory() -> str:
    blocks, problems = all_blocks()
    lines = []
    for title, kind in (("executed", None), ("needs an AWS account", "aws"), ("run by another test", "covered-by"),
                        ("not run", "skip")):
        chosen = [b for b in blocks if b.marker == kind]
        lines.append(f"{title} ({len(chosen)}):")
        for b in chosen:
            first = next((line.strip() for line in b.text.splitlines() if line.strip()), "")
            lines.append(f"  {b.where:<28} {first[:70]}" + (f"\n  {'':<28} → {b.detail}" if b.detail else ""))
    if problems:
        lines += ["problems:"] + [f"  {p}" for p in problems]
    lines.append(f"isolation: {'network, PID and mount namespaces (unshare)' if _isolated() else 'none (unshare unavailable)'}")
    return "\n".join(lines)


if __name__ == "__main__":
    import tempfile

    if sys.argv[1:] == ["--list"]:
        print(inventory())
    elif len(sys.argv) == 3 and sys.argv[1] == "--run":  # one doc's blocks and everything they print
        with tempfile.TemporaryDirectory(prefix="docs-test-") as scratch:
            main_job = make_main_job_workspace(Path(scratch) / "main")
            result = run_doc(sys.argv[2], main_job, Path(scratch))
            print(result.output)
            sys.exit(result.returncode)
    else:
        sys.exit("usage: python tests/test_docs_examples.py --list | --run DOC (e.g. docs/serving.md)")
