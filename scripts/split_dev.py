#!/usr/bin/env python3
"""Reproducible split of the labelled messages into training-data/train/ and dev/.

New messages go into either folder's <lang>.jsonl; this script pools train/ and dev/
per language and splits them again.

Per (language, intent) a fixed seeded shuffle puts 5 of every 25 messages into dev/
(stratified, so every intent x language is in dev). Running it again on the same files
gives the same split. Training reads only train/; dev/ is for model selection,
calibration and the reported figures.
"""
import json, random, sys, collections, pathlib

root = pathlib.Path(__file__).resolve().parent.parent / "training-data"

dev_share = 0.2
for path in sorted((root / "train").glob("*.jsonl")):
    rows = []
    for part in ("train", "dev"):
        f = root / part / path.name
        if f.exists():
            rows += [json.loads(l) for l in f.read_text(encoding="utf-8").splitlines() if l.strip()]
    groups = collections.defaultdict(list)
    for r in rows:
        groups[r["intent"]].append(r)
    train, dev = [], []
    for intent in sorted(groups):
        g = sorted(groups[intent], key=lambda r: r["text"])
        random.Random(f"triage-dev-split/{path.stem}/{intent}").shuffle(g)
        k = round(len(g) * dev_share)
        dev.extend(g[:k]); train.extend(g[k:])
    for name, part in (("train", train), ("dev", dev)):
        out = root / name / path.name
        out.parent.mkdir(exist_ok=True)
        out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part), encoding="utf-8")
    print(f"{path.stem:8} train={len(train)} dev={len(dev)}", file=sys.stderr)
