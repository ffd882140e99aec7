"""How well does Varro's stance reading (varro/forecast/stance.py) read hand-labelled forecasts?

Each line of a labelled file is a forecast for a stored sample headline with its label: agree (says what the
next day's headlines report), contradict (the opposite), hedge (both outcomes) or unrelated (no claim about
the outcome). The forecast is read against the next-day headlines of its own story, exactly as the reward
reads it, and the table counts labels against readings. Then every prompt's four forecasts are scored with
the whole reward: the correct one should come first.

    scripts/env python bench/stance.py                         # both shipped files
    scripts/env python bench/stance.py my_labels.jsonl --verbose

data/sample/stance.jsonl (52 forecasts on 13 prompts) was written while the rules were made;
data/sample/stance_heldout.jsonl (28 on 7 prompts) was written after them and only measured.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

LABELS = ("agree", "contradict", "hedge", "unrelated")


def main() -> None:
    from varro.engine import store
    from varro.engine.core.config import Config
    from varro.engine.embed.embedders import CachedEmbedder, load_embedder
    from varro.engine.core.paths import SAMPLE_DIR
    from varro.forecast.redteam import find_headline, load_varro_sample
    from varro.forecast.task import forecast_targets, score_texts, varro_prompt
    from varro.forecast.stance import stance

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", type=Path,
                    default=[SAMPLE_DIR / "stance.jsonl", SAMPLE_DIR / "stance_heldout.jsonl"])
    ap.add_argument("--verbose", action="store_true", help="print every misread forecast")
    args = ap.parse_args()
    cfg = Config()
    with tempfile.TemporaryDirectory() as tmp:
        db = store.open_db(f"{tmp}/v.db")
        load_varro_sample(db)
        emb = CachedEmbedder(load_embedder(cfg.varro.embedder), db)
        for path in args.files:
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            conf, by_prompt, unjudged = Counter(), defaultdict(dict), 0
            for r in rows:
                prompt = varro_prompt(db, find_headline(db, r["day"], r["headline"]), emb, cfg)
                targets, _ = forecast_targets(db, prompt, emb, cfg)
                if not targets:  # nothing on its side of the split says what happened: no label can be checked
                    unjudged += 1
                    continue
                said = [x for h in targets for x in (h["title"], h["summary"] or "") if x]
                got = stance(r["text"], said)
                conf[r["label"], got.label] += 1
                by_prompt[r["day"], r["headline"]][r["label"]] = (prompt, r["text"])
                if args.verbose and got.label != r["label"]:
                    print(f"  {r['headline']}: {r['label']} read as {got.label} ({got})")
            right, n = sum(conf[k, k] for k in LABELS), sum(conf.values())
            print(f"\n{path.name}: {len(rows)} forecasts, {unjudged} on prompts without a target left out; "
                  f"{right} of {n} read as labelled ({right / n:.0%})")
            print(f"| labelled \\ read | {' | '.join(LABELS)} |\n|---|{'---|' * len(LABELS)}")
            for a in LABELS:
                print(f"| {a} | " + " | ".join(str(conf[a, b]) for b in LABELS) + " |")
            gaps = []
            for texts in by_prompt.values():
                prompt = next(iter(texts.values()))[0]
                labels = [k for k in LABELS if k in texts]
                rewards = dict(zip(labels, (c["reward"] for c in score_texts(
                    db, prompt, [texts[k][1] for k in labels], emb, cfg))))
                gaps.append(min(rewards["agree"] - rewards[k] for k in labels if k != "agree"))
            print(f"reward: the correct forecast first on {sum(g > 0 for g in gaps)} of {len(gaps)} prompts; "
                  f"its smallest lead over a wrong, hedged or unrelated one {min(gaps):+.3f}")


if __name__ == "__main__":
    main()
