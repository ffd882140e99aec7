"""CLI processes for the tests that need a real process, forked from a Python that has imported torch already.

A `python -m varro.cli nightly` on the tiny model spends about 3 s of its 6 on a 2-core machine importing
torch and transformers (mlx-lm's tokenizer loader pulls them in), and the crash tests alone start about 80
such processes. A `Preloaded` server imports those third-party packages once, and forks one child per
command (tests/system/test_crash.py, test_faults.py, test_kills.py, test_nightly.py, test_daily_use.py,
test_health.py, test_distributed.py, and test_secrets.py's reading commands use it); the child
sets its own environment, working folder and output files, then runs the module as `python -m` would
(`runpy`, `__main__`), so mlx, mlx-lm and every module of ours are imported fresh in it, after its
environment is set. It is a real process: a failpoint's SIGKILL kills it alone, it exits through
Python's own shutdown, and its return code is the one subprocess would give (-9 when killed).

Two things a forked child shares with its server, and how the tests keep them from hiding a bug:
- the string hash seed: a server has one for life, where each fresh Python draws its own. The crash
  tests run the killed night and its re-run on two servers with different seeds (`PRELOADED_SEEDS`), and
  the uninterrupted reference run on a third, so a state that depends on set or dict order still differs;
- what torch and transformers read from the environment when imported (HF_HOME, HF_HUB_OFFLINE): the
  servers start with the test session's environment, which the nightly commands do not change (they set
  VARRO_HOME and VARRO_FAILPOINT, which our code reads when it runs, not when it is imported).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

# The third-party imports the server makes once (the bulk of a nightly's start-up); nothing of ours, no mlx.
PRELOAD = ("numpy", "torch", "transformers", "transformers.configuration_utils", "transformers.modeling_rope_utils",
           "transformers.tokenization_utils_base", "transformers.models.auto.tokenization_auto",
           "huggingface_hub.hf_api", "tokenizers", "sqlite_utils", "rich", "click", "httpx", "jinja2", "tqdm")

# One seed per role: the reference run, the killed run, its re-run (the three draw different string hashes).
PRELOADED_SEEDS = {"reference": 101, "killed": 202, "rerun": 303}

SERVER = r"""
import importlib, json, os, runpy, sys, time
for name in sys.argv[1:]:
    importlib.import_module(name)
requests = os.fdopen(os.dup(0), "rb", buffering=0)
replies = os.dup(1)
null = os.open(os.devnull, os.O_RDWR)
os.dup2(null, 0)
os.dup2(null, 1)
os.write(replies, b'{"ready": true}\n')
for line in iter(requests.readline, b""):
    req = json.loads(line)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        requests.close()
        os.close(replies)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        time.tzset()  # a TZ in the child's environment rules its local time, as in a fresh Python
        for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644), fd)
        sys.argv = [req["module"], *req["args"]]
        sys.path[0] = req["cwd"]
        runpy.run_module(req["module"], run_name="__main__", alter_sys=True)
        sys.exit(0)
    os.write(replies, (json.dumps({"pid": pid}) + "\n").encode())
    _, status = os.waitpid(pid, 0)
    os.write(replies, (json.dumps({"pid": pid, "returncode": os.waitstatus_to_exitcode(status)}) + "\n").encode())
"""


class Preloaded:
    """A server that forks nightly processes from a Python with PRELOAD imported; one child at a time."""

    def __init__(self, hash_seed: int, log: Path):
        env = {**os.environ, "PYTHONHASHSEED": str(hash_seed)}
        self.log = open(log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, *PRELOAD], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log)
        self.replies, self.pending = self.proc.stdout.fileno(), b""
        assert self.reply(timeout=300) == {"ready": True}, f"the preloaded server did not start; see {log}"
        self.current: Child | None = None

    def reply(self, timeout: float | None) -> dict | None:
        """The server's next reply line, or None when `timeout` seconds pass first. Read with os.read into our
        own buffer: a buffered readline could swallow the next line, which select would then never report."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.replies], [], [], left)[0]:
                return None
            chunk = os.read(self.replies, 65536)
            assert chunk, f"the preloaded server died; see {self.log.name}"
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)

    def start(self, cmd: list[str], env: dict, stdout: Path, stderr: Path) -> Child:
        """`cmd` ([python, "-m", module, *args]) as a child with `env`, its output appended to the two files."""
        assert cmd[1] == "-m", cmd
        if self.current is not None and self.current.returncode is None:  # a test that failed left it running
            self.current.kill()
            self.current.wait()
        req = {"module": cmd[2], "args": cmd[3:], "env": env, "cwd": os.getcwd(), "stdout": str(stdout),
               "stderr": str(stderr)}
        self.proc.stdin.write((json.dumps(req) + "\n").encode())
        self.proc.stdin.flush()
        self.current = Child(self, self.reply(timeout=60)["pid"])
        return self.current

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.log.close()


class Child:
    """The subprocess.Popen calls the tests use, on a forked child."""

    def __init__(self, server: Preloaded, pid: int):
        self.server, self.pid, self.returncode = server, pid, None

    def poll(self) -> int | None:
        return self.returncode if self.returncode is not None else self.wait(timeout=0, raise_on_timeout=False)

    def wait(self, timeout: float | None = None, raise_on_timeout: bool = True) -> int | None:
        if self.returncode is None:
            got = self.server.reply(timeout)
            if got is None:
                if raise_on_timeout:
                    raise subprocess.TimeoutExpired(f"preloaded child {self.pid}", timeout)
                return None
            assert got["pid"] == self.pid, got
            self.returncode = got["returncode"]
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def run(server: Preloaded, cmd: list[str], env: dict, folder: Path, timeout: float = 300
        ) -> subprocess.CompletedProcess:
    """subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout) on a forked child; the
    output goes through two files in `folder` (new for each call)."""
    folder.mkdir(parents=True, exist_ok=True)
    k = len(list(folder.glob("*.stdout")))
    out, err = folder / f"{k}.stdout", folder / f"{k}.stderr"
    child = server.start(cmd, env, out, err)
    try:
        code = child.wait(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        raise
    return subprocess.CompletedProcess(cmd, code, out.read_text(), err.read_text())
