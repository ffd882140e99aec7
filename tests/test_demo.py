"""The README's main command: the offline demo writes a checkpoint per day and its rows."""

from click.testing import CliRunner

from varro import db as dbm
from varro.checkpoints import list_checkpoints
from varro.cli import cli
from varro.config import db_path, run_dir
from varro.toy import TOY_PROMPTS


def test_demo_writes_checkpoints_and_rows_and_reruns_idempotently(varro_home):
    runner = CliRunner()
    result = runner.invoke(cli, ["demo", "--days", "2"])
    assert result.exit_code == 0, result.output
    assert [p.name for p in list_checkpoints(run_dir("demo"))] == ["2026-11-02", "2026-11-03"]
    db = dbm.open_db(db_path())
    n_rollouts = db["rollouts"].count
    assert n_rollouts == 2 * len(TOY_PROMPTS) * 8
    assert db.execute("select count(*) from rollouts where reward is null").fetchone()[0] == 0
    steps = db["steps"].count
    assert steps == 2 * 4
    # day 2 was sampled by day 1's checkpoint
    assert {r["checkpoint"] for r in db.query("select distinct checkpoint from rollouts where day='2026-11-03'")} \
        == {"2026-11-02"}
    again = runner.invoke(cli, ["demo", "--days", "2"])
    assert again.exit_code == 0
    assert "skipped" in again.output
    assert (db["rollouts"].count, db["steps"].count) == (n_rollouts, steps)


def test_every_command_has_help_with_an_example():
    runner = CliRunner()
    for name, command in cli.commands.items():
        out = runner.invoke(cli, [name, "--help"])
        assert out.exit_code == 0
        assert "Example:" in out.output, name
