"""The nightly command in a subprocess: the lock, a kill part-way, backfill, logs and cron. The nightly
processes are forked from preloaded servers (tests/support/preloaded.py), as the crash tests' are."""

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from support.preloaded import run as run_preloaded
from varro.engine import store as dbm
from varro.engine.run.checkpoints import list_checkpoints
from varro.engine.loop.nightly import RunLocked, run_lock
from varro.engine.core.paths import db_path
from varro.engine.core.paths import run_dir

DAYS = ["2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"]


def nightly_cmd(model, *extra):
    return [sys.executable, "-m", "varro.cli", "nightly", "--run", "n", "--source", "sample", "--quiet",
            "--model", str(model), "--embedder", "hash", "--max-tokens", "12", "--prompts-per-day", "4",
            "--lora-layers", "2", *extra]


def run(server, cmd, home):
    """`cmd` run to its end on data folder `home`, as a process forked from `server` (tests/support/preloaded.py)."""
    return run_preloaded(server, cmd, {**os.environ, "VARRO_HOME": str(home)}, Path(f"{home}.out"))


def test_second_concurrent_nightly_is_refused(tiny_model_path, varro_home, preloaded):
    with run_lock(run_dir("n")):
        with pytest.raises(RunLocked):
            with run_lock(run_dir("n")):
                pass
        out = run(preloaded("killed"), nightly_cmd(tiny_model_path, "--date", DAYS[0]), varro_home)
    assert out.returncode == 75
    assert "another nightly run of n is in progress" in out.stderr
    assert list_checkpoints(run_dir("n")) == []
    ok = run(preloaded("rerun"), nightly_cmd(tiny_model_path, "--date", DAYS[0]), varro_home)  # free again
    assert ok.returncode == 0, ok.stderr


def test_killed_backfill_resumes_to_one_checkpoint_per_day(tiny_model_path, varro_home, preloaded):
    env = {**os.environ, "VARRO_HOME": str(varro_home)}
    logs = Path(f"{varro_home}.out")
    logs.mkdir()
    proc = preloaded("killed").start(nightly_cmd(tiny_model_path, "--from", DAYS[0], "--to", DAYS[-1]), env,
                                     logs / "killed.stdout", logs / "killed.stderr")
    target = run_dir("n") / "checkpoints" / DAYS[1] / "metadata.json"
    deadline = time.time() + 240
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = [p.name for p in list_checkpoints(run_dir("n"))]
    assert DAYS[1] in done_before and DAYS[-1] not in done_before  # it really died part-way

    out = run(preloaded("rerun"), nightly_cmd(tiny_model_path, "--from", DAYS[0], "--to", DAYS[-1]), varro_home)
    assert out.returncode == 0, out.stderr
    assert [p.name for p in list_checkpoints(run_dir("n"))] == DAYS
    leftovers = [p.name for p in (run_dir("n") / "checkpoints").iterdir() if p.name not in DAYS + ["latest"]]
    assert all(name.startswith(".tmp-") for name in leftovers)
    db = dbm.open_db(db_path())
    per_day = dict(db.execute("select day, count(*) from rollouts where run = 'n' group by day").fetchall())
    assert per_day == {d: 4 * 8 for d in DAYS}
    dup = db.execute("select count(*) from (select run, day, prompt_id, group_index, count(*) c from rollouts "
                     "group by 1, 2, 3, 4 having c > 1)").fetchone()[0]
    assert dup == 0
    steps_per_day = dict(db.execute("select day, count(*) from steps where run = 'n' group by day").fetchall())
    assert steps_per_day == {d: 4 for d in DAYS[1:]}  # never trained a day twice
    assert db.execute("select count(*) from rollouts where reward is null").fetchone()[0] == 32  # the last day
    log = (run_dir("n") / "logs" / f"{DAYS[-1]}.log").read_text()
    assert "done: ingested" in log


def test_cron_line_and_install_with_a_fake_crontab(tmp_path, varro_home):
    from click.testing import CliRunner

    from varro.cli import cli

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    store = tmp_path / "crontab.txt"
    fake = bin_dir / "crontab"
    fake.write_text(f"""#!/bin/sh
if [ "$1" = "-l" ]; then [ -f {store} ] && cat {store} || {{ echo "no crontab for root" >&2; exit 1; }}
else cat > {store}; fi
""")
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    runner = CliRunner()
    out = runner.invoke(cli, ["cron", "--run", "n", "--at", "03:15", "--install"], env=env)
    assert out.exit_code == 0, out.output
    line = out.output.splitlines()[0]
    assert line.startswith("15 3 * * * ")
    assert f"--home {varro_home}" in line and "varro nightly --run n" in line and "--quiet" in line
    assert str(Path(__file__).resolve().parents[2] / "scripts" / "env") in line
    assert store.read_text().splitlines() == [line]
    again = runner.invoke(cli, ["cron", "--run", "n", "--at", "03:15", "--install"], env=env)
    assert "already in your crontab" in again.output
    assert store.read_text().splitlines() == [line]
    bad = runner.invoke(cli, ["cron", "--at", "25:00"])
    assert bad.exit_code != 0


def fake_caffeinate(tmp_path, monkeypatch) -> Path:
    bin_dir = tmp_path / "awake-bin"
    bin_dir.mkdir()
    tool = bin_dir / "caffeinate"
    tool.write_text("#!/bin/sh\nexec \"$@\"\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return tool


def test_on_a_mac_the_nightly_runs_under_caffeinate_and_the_linux_line_is_unchanged(tmp_path, monkeypatch,
                                                                                    varro_home):
    from click.testing import CliRunner

    from varro.cli import cli
    from varro.engine.loop import schedule
    env = str(Path(__file__).resolve().parents[2] / "scripts" / "env")
    logs = varro_home / "runs" / "n" / "logs"
    linux = (f"15 3 * * * mkdir -p {logs} && {env} varro nightly --run n --home {varro_home} --quiet "
             f">> {logs / 'cron.log'} 2>&1  # varro nightly n")
    tool = fake_caffeinate(tmp_path, monkeypatch)
    monkeypatch.setattr(schedule, "is_macos", lambda: False)
    assert schedule.cron_line("varro", "n", None, 3, 15) == linux  # caffeinate on the PATH is not a Mac

    monkeypatch.setattr(schedule, "is_macos", lambda: True)
    out = CliRunner().invoke(cli, ["cron", "--run", "n", "--at", "03:15"])
    assert out.exit_code == 0, out.output
    assert out.output.splitlines()[0] == linux.replace(f"&& {env}", f"&& {tool} -i -s {env}")
    plist = out.output[out.output.index("<?xml"):]
    assert (f"<array>\n    <string>{tool}</string>\n    <string>-i</string>\n    <string>-s</string>\n"
            f"    <string>{env}</string>\n    <string>varro</string>\n    <string>nightly</string>") in plist
    assert f"<string>{logs / 'launchd.log'}</string>" in plist

    monkeypatch.setenv("PATH", "/nonexistent")  # a Mac without caffeinate: the plain command
    assert schedule.nightly_command("varro", "n", None)[0] == env
