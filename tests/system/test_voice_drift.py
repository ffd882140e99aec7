"""The voice drift flag: a day whose cadence distance from the humans grew too far over the first measured day's
is flagged in the report and named on the nightly's last line.

Hand-made distances pin the rule; a hand-made database (no model) carries them through voice_data into the
report, its text summary and the report command.
"""

import json

import click
import pytest
from click.testing import CliRunner

from support.handmade import handmade
from varro.engine import store as dbm
from varro.engine.core.app import get_app
from varro.engine.core.errors import ConfigError
from varro.engine.loop.nightly import run_nightly
from varro.engine.core.paths import db_path
from varro.engine.eval.report import build_report, format_summary, render_html, report_data
from varro.engine.core.paths import run_dir
from varro.engine.eval.voice import drift_note, voice_drift

DAYS = ["2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"]
LINE = "voice drift: cadence distance from the humans 2.50 is +67% over 1.50 on 2026-11-02 (limit +30%)"


def rows(*distances):
    """voice_data-like rows, one a day from 2026-11-02 on (voice_drift reads only the day and the distance)."""
    return [{"day": f"2026-11-{2 + i:02d}", "distance": d} for i, d in enumerate(distances)]


# ---------------------------------------------------------------- the rule


def test_growth_within_the_limit_is_not_flagged_and_beyond_it_is():
    assert voice_drift(rows(1.50, 1.80), 0.3) == []  # +20%
    [flag] = voice_drift(rows(1.50, 1.80, 2.50), 0.3)
    assert flag["growth"] == pytest.approx(2.5 / 1.5 - 1) and round(flag["growth"], 3) == 0.667
    assert (flag["day"], flag["first_day"], flag["distance"], flag["first_distance"]) == \
        ("2026-11-04", "2026-11-02", 2.50, 1.50)
    assert flag["reason"] == LINE


def test_the_demo_drift_from_150_to_250_over_six_days_is_flagged_once_past_195():
    flags = voice_drift(rows(1.50, 1.70, 1.90, 2.10, 2.30, 2.50), 0.3)
    assert [f["day"] for f in flags] == ["2026-11-05", "2026-11-06", "2026-11-07"]
    assert flags[-1]["reason"] == LINE


def test_exactly_at_the_limit_is_not_over_it():
    assert voice_drift(rows(2.0, 2.6), 0.3) == []  # 2.0 * 1.3 == 2.6: "exceeds" is strict


def test_days_without_a_distance_are_skipped():
    [flag] = voice_drift(rows(1.50, None, 2.50, None), 0.3)
    assert (flag["day"], flag["first_day"]) == ("2026-11-04", "2026-11-02")


def test_a_first_day_without_a_distance_makes_the_second_the_reference():
    flags = voice_drift(rows(None, 1.0, 1.2, 1.4), 0.3)
    assert [(f["day"], f["first_day"], f["first_distance"]) for f in flags] == [("2026-11-05", "2026-11-03", 1.0)]
    assert voice_drift(rows(0.0, 1.0, 1.4), 0.3)[0]["first_day"] == "2026-11-03"  # zero has no share to grow by
    assert voice_drift(rows(None, None), 0.3) == [] and voice_drift([], 0.3) == []


def test_zero_turns_the_flag_off_and_a_negative_limit_is_a_config_error():
    assert voice_drift(rows(1.0, 5.0), 0.0) == []
    with pytest.raises(ConfigError, match=r"voice_drift_max must be 0 \(off\) or a positive share, got -0.1"):
        voice_drift(rows(1.0, 5.0), -0.1)


def test_the_nightly_note_names_the_newest_measured_day_only_when_it_drifted():
    assert drift_note(rows(1.50, 2.50), 0.3, "2026-11-03") == "voice drift +67% since 2026-11-02"
    # Varro's newest day waits for the next day's headlines: the day before it speaks for the night
    assert drift_note(rows(1.50, 2.50, None), 0.3, "2026-11-04") == "voice drift +67% since 2026-11-02"
    assert drift_note(rows(1.50, 2.50, 1.60), 0.3, "2026-11-04") is None  # back within the limit
    assert drift_note(rows(1.50, 1.60, 2.50), 0.3, "2026-11-03") is None  # a later day is not this night's
    assert drift_note(rows(None, None), 0.3, "2026-11-03") is None
    assert drift_note(rows(1.50, 2.50), 0.0, "2026-11-03") is None


# ---------------------------------------------------------------- the report


@pytest.fixture
def drifting(varro_home, monkeypatch):
    """Run 'h' of Varro over DAYS in the data folder, its cadence distances 1.50, 1.80, none, 2.50 (the humans
    of a day: two texts of one feature, 0 and 2, so mean 1 and std 1; the model's mean is 1 + distance)."""
    db = handmade(db_path(varro_home), "varro", {d: ([0.2, 0.2], [0.5, 0.5]) for d in DAYS})
    distances = dict(zip(DAYS, [1.50, 1.80, None, 2.50]))
    for day, distance in distances.items():
        ids = [r["id"] for r in db.query("select id from rollouts where run = 'h' and day = ?", [day])]
        dbm.upsert_cadence(db, "m", [(i, "sha", {"mean_surprisal": 1.0 + (distance or 0.0)}) for i in ids])
        if distance is not None:
            dbm.insert_human_cadence(db, "m", "varro", [(f"{day}:a", "sha", {"mean_surprisal": 0.0}),
                                                        (f"{day}:b", "sha", {"mean_surprisal": 2.0})])
    monkeypatch.setattr(get_app("varro"), "human_items", lambda db_, day, cfg: [(f"{day}:a", ""), (f"{day}:b", "")])
    yield db
    db.conn.close()


def test_the_report_flags_the_day_the_voice_drifted(drifting, tmp_path):
    data = report_data(drifting, "varro", "h")
    assert [v["distance"] for v in data["voice"]] == pytest.approx([1.50, 1.80, None, 2.50])
    [flag] = data["voice_flags"]
    assert (flag["day"], flag["growth"], flag["reason"]) == ("2026-11-05", pytest.approx(2 / 3), LINE)
    assert f"VOICE 2026-11-05: {flag['reason']}" in format_summary(data).splitlines()
    page = build_report(drifting, "varro", "h", tmp_path / "h.html").read_text(encoding="utf-8")
    voice = page[page.index("<h2>Voice</h2>"):page.index("<h2>Flags</h2>")]
    assert voice.count('<div class="flag voice">') == 1 and f"⚠ 2026-11-05: {flag['reason']}</div>" in voice
    assert voice.count('<tr class="flagged"><td>2026-11-05</td>') == 1 and voice.count('class="flagged"') == 1


def test_a_wider_limit_or_zero_raises_no_voice_flag(drifting):
    wide = report_data(drifting, "varro", "h", voice_drift_max=1.0)
    assert wide["voice_flags"] == [] and "VOICE" not in format_summary(wide)
    page = render_html(wide, {})
    assert "flag voice" not in page and "more than +100% over the first measured day" in page
    assert "Voice drift flag off" in render_html(report_data(drifting, "varro", "h", voice_drift_max=0.0), {})


def report_cli() -> click.Group:
    from varro.engine.cli.commands import EngineGroup
    from varro.engine.cli.inspect import register

    @click.group(cls=EngineGroup)
    def cli() -> None:
        """A throwaway group."""

    register(cli, get_app("varro"))
    return cli


def test_the_report_command_prints_the_flag_at_the_runs_own_limit(drifting, varro_home):
    out = CliRunner().invoke(report_cli(), ["report", "--run", "h"])
    assert out.exit_code == 0, out.output
    assert f"VOICE 2026-11-05: {LINE}" in out.output
    # a run trained with --voice-drift-max 1.0: its latest checkpoint's config says so
    ckpt = run_dir("h") / "checkpoints" / "2026-11-05"
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text(json.dumps({"eval": {"voice_drift_max": 1.0}}))
    (ckpt / "metadata.json").write_text("{}")
    out = CliRunner().invoke(report_cli(), ["report", "--run", "h"])
    assert out.exit_code == 0, out.output
    assert "VOICE" not in out.output and "voice drift" not in out.output


# ---------------------------------------------------------------- the nightly's last line


def test_the_nightlys_last_line_ends_with_the_drift_of_the_newest_day(tmp_path):
    lines, asked = [], []
    voice = rows(1.50, 1.80, 2.50)

    def note(day):
        asked.append(day)
        return drift_note(voice, 0.3, day)

    run_nightly(tmp_path, ["2026-11-03", "2026-11-04"], lambda d, p: "ok", quiet=True, echo=lines.append,
                night_note=note)
    assert asked == ["2026-11-04"]
    assert lines == [f"nightly {tmp_path.name}: ran 2026-11-03..04 (2 days); voice drift +67% since 2026-11-02"]
    lines.clear()
    run_nightly(tmp_path, ["2026-11-03"], lambda d, p: "ok", quiet=True, echo=lines.append, night_note=note)
    assert lines == [f"nightly {tmp_path.name}: ran 2026-11-03"]  # 1.80 is within the limit


def test_a_failed_night_asks_for_no_note(tmp_path):
    lines, asked = [], []

    def run_day(day, progress):
        if day == "2026-11-04":
            raise RuntimeError("boom")
        return "ok"

    with pytest.raises(RuntimeError, match="boom"):
        run_nightly(tmp_path, ["2026-11-03", "2026-11-04"], run_day, quiet=True, echo=lines.append,
                    night_note=lambda day: asked.append(day) or "voice drift +99% since 2026-11-02")
    assert asked == [] and lines == [f"nightly {tmp_path.name}: ran 2026-11-03; 2026-11-04 FAILED"]
