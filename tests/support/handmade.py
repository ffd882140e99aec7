"""Hand-made databases (no model, no run): rollouts with chosen rewards, for the tests of the report's
monitors, its flags and the voice drift flag (tests/system/test_inspect_report.py, test_voice_drift.py)."""

import json

from varro.engine import store as dbm


def handmade(path, app, days, texts=None):
    """A database with one train and one eval prompt per day: days = {day: (train rewards, eval rewards)}."""
    db = dbm.open_db(path)
    for day, splits in days.items():
        for split, rewards in zip(("train", "eval"), splits):
            pid = f"{app}:{day}:{split}"
            db["prompts"].insert({"id": pid, "app": app, "day": day, "split": split, "text": f"Headline {split}",
                                  "source_json": "{}", "created_utc": "x"})
            for i, reward in enumerate(rewards):
                text = (texts or {}).get((day, split, i), f"completion {i} of {split}")
                comps = ({"semantic": reward, "format": 0.5, "leak": 0.0, "echo": 0.0, "words": 3.0,
                          "leak_instruction": 0.0} if app == "varro" else
                         {"transfer": reward, "copy": 0.0, "hashtags": 0.0, "graphemes": 20.0, "pen_echo": 0.0})
                db["rollouts"].insert({"run": "h", "day": day, "prompt_id": pid, "checkpoint": day, "group_index": i,
                                       "completion": text, "completion_tokens": 3, "reward": reward,
                                       "components_json": json.dumps(comps), "advantage": 0.0})
    db.conn.commit()
    return db
