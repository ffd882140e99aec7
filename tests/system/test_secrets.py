"""The Bluesky app password and session never reach logs, reports, the database, errors or --json output.

Every `walter` command (and the `varro` ones that read the same data folder) runs
in a subprocess against the local XRPC server of tests/support/bluesky.py, with a
distinctive fake BSKY_APP_PASSWORD and DEBUG logging switched on for the
commands that talk to Bluesky (so httpx, httpcore and SDK logs are included).
Then every captured stdout / stderr and every file under VARRO_HOME is searched
for the password (plain and base64) and for the session's JWTs, which may only
be in the 0600 session file. A wrong password (401) and a server that answers
500 are run too, each in a data folder of its own. The reading commands, which
never log in, are forked from a preloaded Python (tests/support/preloaded.py);
the ones that log in are each a fresh Python.
"""

from __future__ import annotations

import base64
import gc
import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest
from atproto import Session

from support.bluesky import FakeBluesky, Handler, Server, add, answer, feed_item, make_post
from support.preloaded import run as run_preloaded
from walter.bsky import APPVIEW_URL_ENV, HANDLE_ENV, PASSWORD_ENV, PDS_URL_ENV, SESSION_FILE

PASSWORD = "pw-Zq81-SECRET-canary-7Kx3"  # only in the environment of the subprocesses
WRONG_PASSWORD = "pw-Wr0ng-SECRET-canary-4Tj9"  # a rejected password is a secret too
DOMAIN = "nytimes.com"
TODAY = datetime.now(timezone.utc).date()  # the subprocesses read the real clock (in UTC), so the days follow it
POSTED = TODAY - timedelta(days=4)  # the posts' day: over 24 h old, so their counts are final
STEP_DAY = (TODAY - timedelta(days=3)).isoformat()
NIGHTLY_DAY = (TODAY - timedelta(days=2)).isoformat()
AUTHORS = [f"did:plc:author{j}" for j in range(4)]
MODEL_OPTIONS = ["--embedder", "hash", "--max-tokens", "8", "--articles-per-day", "2", "--lora-layers", "2",
                 "--domains", DOMAIN]
# The real CLI with every logger at DEBUG on stderr: a leak in a library's debug log shows up too.
DEBUG_CLI = ("import logging, sys; logging.basicConfig(level=logging.DEBUG, stream=sys.stderr); "
             "from {app}.cli import cli; cli(prog_name='{app}')")


# -- the server and the commands ----------------------------------------------------------


def start_server(fake: FakeBluesky) -> Server:
    server = Server(("127.0.0.1", 0), Handler)
    server.fake = fake
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def stop_server(server: Server) -> None:
    server.shutdown()
    server.server_close()


def news_server() -> FakeBluesky:
    """Four articles on DOMAIN, each posted by a winner (far above their usual) and one ordinary author.

    Every author's feed holds three older posts with engagement 2, their baseline.
    """
    fake = FakeBluesky()
    fake.password = PASSWORD
    created = f"{POSTED.isoformat()}T10:00:00.000Z"
    older = f"{(POSTED - timedelta(days=2)).isoformat()}T10:00:00.000Z"
    own: dict[str, list[dict]] = {did: [] for did in AUTHORS}
    search = []
    for i in range(4):
        link = f"https://www.{DOMAIN}/2026/story-{i}.html"
        for did, counts in ((AUTHORS[i], (40, 5, 3, 2)), (AUTHORS[(i + 1) % 4], (1, 0, 0, 0))):
            post = make_post(f"s{i}{did[-1]}", did=did, link=link, counts=counts, created=created,
                             text=f"story {i} explained by author {did[-1]}: what changes for readers")
            own[did].append(post)
            search.append(post)
    for did, posts in own.items():
        fillers = [make_post(f"f{k}{did[-1]}", did=did, link=None, kind="none", counts=(2, 0, 0, 0),
                             created=older, text=f"an ordinary day, note {k}") for k in range(3)]
        fake.feeds[(did, "")] = ([feed_item(p) for p in posts + fillers], None)
        add(fake, *fillers)
    uris = add(fake, *search)
    fake.search[(DOMAIN, "")] = (uris[:5], "page2")
    fake.search[(DOMAIN, "page2")] = (uris[5:], None)
    return fake


def env_for(home: Path, fake: FakeBluesky, password: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BSKY_", "WALTER_"))}
    env.update({"VARRO_HOME": str(home), HANDLE_ENV: fake.handle, PASSWORD_ENV: password,
                PDS_URL_ENV: fake.url + "/pds", APPVIEW_URL_ENV: fake.url + "/appview", "HF_HUB_OFFLINE": "1",
                "TZ": "UTC"})  # the machine's zone decides a post's day
    return env


def argv(app: str, args: list[str], debug: bool) -> list[str]:
    if debug:
        return [sys.executable, "-c", DEBUG_CLI.format(app=app), *args]
    return [sys.executable, "-m", f"{app}.cli", *args]


@dataclass
class Ran:
    name: str
    returncode: int
    stdout: str
    stderr: str


@dataclass
class World:
    home: Path
    fake: FakeBluesky
    ran: dict[str, Ran] = field(default_factory=dict)
    failure_homes: list[Path] = field(default_factory=list)
    failing_calls: list = field(default_factory=list)  # what the 500 server was asked
    outputs: Path | None = None  # where the preloaded children's output files go (outside every home)


def run(world: World, name: str, app: str, args: list[str], debug: bool = False, env=None,
        timeout: float = 300, server=None) -> Ran:
    """Run the command as a new Python, or forked from `server` (tests/support/preloaded.py) when given: only the
    reading commands, which never log in. The commands that log in start a fresh Python with the password in
    their environment before anything is imported, so a library that leaked it at import would show there."""
    env = env or env_for(world.home, world.fake, PASSWORD)
    if server is not None:
        assert not debug, name
        out = run_preloaded(server, argv(app, args, debug), env, world.outputs / name.replace(" ", "-"), timeout)
    else:
        out = subprocess.run(argv(app, args, debug), env=env, capture_output=True, text=True, timeout=timeout)
    world.ran[name] = Ran(name, out.returncode, out.stdout, out.stderr)
    return world.ran[name]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_path, preloaded) -> Iterator[World]:
    model = tiny_model_path  # vocab_size=512, built once per session (conftest)
    home = tmp_path_factory.mktemp("home")
    reader = preloaded("reference")  # the reading commands: forked from a Python with torch imported
    good = start_server(news_server())
    failing = FakeBluesky()  # answers 500 to everything; the client retries 3 times with backoff
    failing.password = PASSWORD
    failing_server = start_server(failing)
    failing.faults["com.atproto.server.createSession"] = [answer(500, {"error": "InternalServerError",
                                                                        "message": "boom"})] * 50
    world = World(home, good.fake, outputs=tmp_path_factory.mktemp("outputs"))
    slow = None
    try:
        # The 500 path sleeps through its backoff (about 14 s): started first, collected last.
        home_500 = tmp_path_factory.mktemp("home500")
        world.failure_homes.append(home_500)
        slow = subprocess.Popen(argv("walter", ["step", "--date", STEP_DAY, "--model", str(model), *MODEL_OPTIONS],
                                     debug=False),
                                env=env_for(home_500, failing, PASSWORD), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

        model_args = ["--model", str(model), *MODEL_OPTIONS]
        run(world, "step", "walter", ["step", "--date", STEP_DAY, "--source", "bluesky", *model_args], debug=True)
        run(world, "nightly", "walter", ["nightly", "--date", NIGHTLY_DAY, "--source", "bluesky", "--quiet",
                                         *model_args], debug=True)
        listed = run(world, "rollouts", "walter", ["rollouts", "--json"], server=reader)
        first_id = json.loads(listed.stdout)[0]["id"]
        run(world, "show", "walter", ["rollouts", "show", str(first_id), "--json"], server=reader)
        run(world, "report", "walter", ["report", "--json"], server=reader)
        run(world, "metrics", "walter", ["metrics", "--json"], server=reader)
        run(world, "compare", "walter", ["compare", "--embedder", "hash", "--n", "2", "--samples", "2",
                                         "--html", str(home / "compare.html")], server=reader)
        run(world, "cron", "walter", ["cron"], server=reader)
        # Walter's run named to Varro's reading commands (each app has its own default run)
        run(world, "varro rollouts", "varro", ["rollouts", "--json", "--run", "walter"], server=reader)
        run(world, "varro report", "varro", ["report", "--json", "--run", "walter"], server=reader)
        run(world, "varro cron", "varro", ["cron"], server=reader)
        run(world, "varro metrics", "varro", ["metrics", "--json", "--run", "walter"], server=reader)

        home_401 = tmp_path_factory.mktemp("home401")
        world.failure_homes.append(home_401)
        env_401 = env_for(home_401, world.fake, WRONG_PASSWORD)
        run(world, "wrong password step", "walter", ["step", "--date", STEP_DAY, *model_args], env=env_401)
        run(world, "wrong password nightly", "walter", ["nightly", "--date", STEP_DAY, "--quiet", *model_args],
            debug=True, env=env_401)

        out, err = slow.communicate(timeout=300)
        world.ran["server 500"] = Ran("server 500", slow.returncode, out, err)
        world.failing_calls = failing.calls
        yield world
    finally:
        if slow is not None and slow.poll() is None:
            slow.kill()
            slow.wait()
        stop_server(good)
        stop_server(failing_server)


# -- searching --------------------------------------------------------------------------------


def forms(secret: str) -> list[bytes]:
    """`secret` as plain UTF-8 and as base64 at each of the three byte alignments (edges trimmed)."""
    raw = secret.encode()
    found = [raw]
    for pad in range(3):
        enc = base64.b64encode(b"\0" * pad + raw)
        # only the characters whose 6 bits all come from `secret`
        found.append(enc[-(-8 * pad // 6):8 * (pad + len(raw)) // 6])
    return found


def leaks(secret: str, texts: dict[str, str] | None = None, root: Path | None = None,
          skip: set[Path] | frozenset = frozenset()) -> list[str]:
    """Where `secret` (plain or base64) occurs: names of `texts` entries and files under `root`."""
    needles = forms(secret)
    where = [name for name, text in (texts or {}).items() if any(n in text.encode() for n in needles)]
    if root is not None:
        gc.collect()  # close unreferenced SQLite connections now, not halfway through the walk
        for path in sorted(p for p in root.rglob("*") if p.is_file() and p not in skip):
            try:
                data = path.read_bytes()
            except FileNotFoundError:  # a -shm/-wal file removed as a connection closed: no longer there to leak
                continue
            if any(n in data for n in needles):
                where.append(str(path))
    return where


def captured(world: World) -> dict[str, str]:
    return {f"{r.name} {stream}": text for r in world.ran.values()
            for stream, text in (("stdout", r.stdout), ("stderr", r.stderr))}


def session_file(home: Path) -> Path:
    return home / "data" / SESSION_FILE


# -- the commands really ran --------------------------------------------------------------------


def test_every_command_ran_and_did_its_job(world):
    r = world.ran
    for name in ("step", "nightly", "rollouts", "show", "report", "metrics", "compare", "cron", "varro cron"):
        assert r[name].returncode == 0, (name, r[name].stdout[-2000:], r[name].stderr[-2000:])
    assert "bluesky: 8 new posts" in r["step"].stdout
    assert f"{STEP_DAY}: ingested 8, sampled 16" in r["step"].stdout  # two articles, 8 posts each
    log = (world.home / "runs" / "walter" / "logs" / f"{NIGHTLY_DAY}.log").read_text()
    assert f"{NIGHTLY_DAY}: done: ingested 0, sampled 16" in log
    rollouts = json.loads(r["rollouts"].stdout)
    assert len(rollouts) == 32 and {x["day"] for x in rollouts} == {STEP_DAY, NIGHTLY_DAY}
    assert json.loads(r["show"].stdout)["id"] == rollouts[0]["id"]
    report = json.loads(r["report"].stdout)
    assert [d["day"] for d in report["days"]] == [STEP_DAY, NIGHTLY_DAY]
    assert Path(report["html"]).is_file() and list((world.home / "runs" / "walter").rglob("*.png"))
    assert [json.loads(line)["day"] for line in r["metrics"].stdout.splitlines()] == [STEP_DAY, NIGHTLY_DAY]
    assert "difference (after - before)" in r["compare"].stdout
    assert "walter nightly --run walter" in r["cron"].stdout
    # the run is Walter's: Varro's reading commands say so in one line and name no Varro run
    for name in ("varro rollouts", "varro report"):
        assert r[name].returncode == 1 and r[name].stdout == ""
        [line] = r[name].stderr.splitlines()
        verb = name.split()[1]
        assert line == f"error: run 'walter' is a walter run, not a varro one: use `walter {verb} --run walter`"
    # one login for the whole data folder (the nightly reused the stored session), with the password
    logins = [c.body["password"] for c in world.fake.calls if c.nsid == "com.atproto.server.createSession"]
    assert logins == [PASSWORD, WRONG_PASSWORD, WRONG_PASSWORD]


def test_a_wrong_password_and_a_failing_server_stop_with_one_clear_line(world):
    for name in ("wrong password step", "server 500"):
        out = world.ran[name]
        assert out.returncode == 1, (name, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr
    assert world.ran["wrong password step"].stderr.strip() == (
        f"error: createSession at {world.fake.url}/pds rejected {HANDLE_ENV}='walter.test' (401 "
        f"AuthenticationRequired): check the handle and that {PASSWORD_ENV} holds a valid app password")
    *retries, last = world.ran["server 500"].stderr.strip().splitlines()
    assert [line.split(": 500, retrying in ")[1] for line in retries] == [
        "2.0 s (attempt 1)", "4.0 s (attempt 2)", "8.0 s (attempt 3)"]
    assert last.startswith("error: com.atproto.server.createSession at http://127.0.0.1:")
    assert last.endswith("/pds failed 4 times, last with 500")
    assert [c.nsid for c in world.failing_calls] == ["com.atproto.server.createSession"] * 4
    nightly = world.ran["wrong password nightly"]
    assert nightly.returncode == 1 and nightly.stderr.strip().splitlines()[-1].startswith(
        "error: createSession at")
    log = (world.failure_homes[1] / "runs" / "walter" / "logs" / f"{STEP_DAY}.log").read_text()
    assert "FAILED: BlueskyAuthError: createSession at" in log
    assert not any(session_file(h).exists() for h in world.failure_homes)


def test_varro_metrics_ignores_walter_rollouts_of_the_same_run(world):
    # regression: `varro metrics` read Walter's rollouts of the same run and failed on KeyError 'semantic'
    out = world.ran["varro metrics"]
    assert (out.returncode, out.stdout) == (1, "") and "KeyError" not in out.stderr
    [line] = out.stderr.splitlines()  # the run is Walter's: one line naming that, no crash
    assert line.startswith("error: run 'walter' is a walter run, not a varro one")


# -- the secrets --------------------------------------------------------------------------------


def test_the_password_is_in_no_output_and_no_file(world):
    texts = captured(world)
    assert sum(len(t) for t in texts.values()) > 10_000  # the DEBUG logs really were captured
    assert "HTTP Request: POST" in world.ran["step"].stderr
    for secret in (PASSWORD, WRONG_PASSWORD):
        assert leaks(secret, texts) == []
        for home in (world.home, *world.failure_homes):
            assert leaks(secret, root=home) == []


def test_the_searched_files_include_the_database_logs_reports_checkpoints_and_session(world):
    files = {p.relative_to(world.home).as_posix() for p in world.home.rglob("*") if p.is_file()}
    assert {"data/varro.db", f"data/{SESSION_FILE}", "runs/walter/report.html", "compare.html",
            f"runs/walter/logs/{NIGHTLY_DAY}.log"} <= files
    assert any(f.startswith("runs/walter/report_files/") and f.endswith(".png") for f in files)
    assert any(f.startswith(f"runs/walter/checkpoints/{STEP_DAY}/") and f.endswith(".json") for f in files)
    with sqlite3.connect(world.home / "data" / "varro.db") as conn:  # the posts were stored, so it was written
        assert conn.execute("select count(*) from bsky_posts").fetchone()[0] == 8


def test_the_session_file_is_private_and_the_only_place_with_the_tokens(world):
    path = session_file(world.home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    session = Session.decode(path.read_text().strip())
    assert session.handle == world.fake.handle and session.access_jwt in world.fake.access
    tokens = world.fake.access | world.fake.refresh  # every token the server ever issued
    assert len(tokens) >= 2
    texts = captured(world)
    for token in tokens:
        assert leaks(token, texts) == []
        assert leaks(token, root=world.home, skip={path}) == []


def test_the_search_finds_a_planted_secret(world, tmp_path):
    """The searches above can fail: they find the secrets where they are put on purpose."""
    path = session_file(world.home)
    assert leaks(Session.decode(path.read_text().strip()).access_jwt, root=world.home) == [str(path)]
    assert leaks(PASSWORD, {"clean": "nothing here", "planted": f"login failed for {PASSWORD}!"}) == ["planted"]
    planted = tmp_path / "planted"
    (planted / "runs" / "x" / "logs").mkdir(parents=True)
    (planted / "runs" / "x" / "logs" / "day.log").write_text("ok\n")
    with sqlite3.connect(planted / "v.db") as conn:
        conn.execute("create table t (v blob)")
        conn.execute("insert into t values (?)", [json.dumps({"auth": PASSWORD}).encode("utf-8")])
    (planted / "basic.txt").write_text("Authorization: Basic "
                                       + base64.b64encode(f"walter.test:{PASSWORD}".encode()).decode())
    assert leaks(PASSWORD, root=planted) == [str(planted / "basic.txt"), str(planted / "v.db")]
    assert leaks(WRONG_PASSWORD, root=planted) == []
