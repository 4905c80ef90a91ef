"""Regenerates benchmarks/README.md's result tables from the JSON under benchmarks/results.

python benchmarks/tables.py            # rewrite the tables in place
python benchmarks/tables.py --check    # exit 1 if a table differs from its JSON

A table lives between `<!-- table:NAME -->` and `<!-- /table:NAME -->`; NAME picks the
renderer below and the JSON it reads. Numbers in those tables are never typed by hand
(tests/test_docs.py runs the check).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
README = HERE / "README.md"


def _load(name: str) -> dict:
  return json.loads((HERE / "results" / name).read_text())


def data_prep() -> str:
  r = _load("data_prep.json")
  runs = r["runs"]
  ours = {(x["dupe_factor"], x.get("scale", 1)): x for x in runs if x["tool"].startswith("bert_jax (prep +")}
  lines = ["| corpus | dupe | tool | wall s | CPU s | tokens / CPU s | peak RSS MiB | instances | ours vs it (per core / memory) | CPU s with the masking process's start-up; vs it |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  tokens = r["corpus"]["tokens"]
  for x in runs:
    if x["tool"] == "bert_jax (prep only)":
      continue
    scale = x.get("scale", 1)
    base = ours[(x["dupe_factor"], scale)]
    vs = ("-" if x is base else f"{x['cpu_seconds'] / base['cpu_seconds']:.1f}x / "
          f"{x['peak_rss_mib'] / base['peak_rss_mib']:.1f}x")
    full = base.get("cpu_seconds_with_mask_process", base["cpu_seconds"])
    with_start = (f"{full:.1f}" if x is base else f"{x['cpu_seconds'] / full:.1f}x")
    lines.append(f"| {tokens * scale / 1e6:.2f} M tokens | {x['dupe_factor']} | {x['tool']} | "
                 f"{x['seconds']:.1f} | {x['cpu_seconds']:.2f} | "
                 f"{x['tokens_per_s_per_core']:,.0f} | {x['peak_rss_mib']:,.0f} | "
                 f"{x['instances']:,} | {vs} | {with_start} |")
  lines += ["", "| ours alone, corpus repeated | tokens | wall s | CPU s | tokens / CPU s | peak RSS MiB |",
            "| --- | --- | --- | --- | --- | --- |"]
  for x in runs:
    if x["tool"] == "bert_jax (prep only)":
      lines.append(f"| x{x['scale']} | {x['tokens']:,} | {x['seconds']:.1f} | "
                   f"{x['cpu_seconds']:.1f} | {x['tokens_per_s_per_core']:,.0f} | "
                   f"{x['peak_rss_mib']:,.0f} |")
  m = r["machine"]
  lines += ["", f"Machine: {m['cores']} cores ({m['cpu']}), load average {m['load_average_at_start']:.1f} "
            f"at the start; commit {r.get('commit', '?')[:10]}; command "
            f"`python {re.sub(r' --workdir=[^ ]+', '', r['command'])}`."]
  return "\n".join(lines)


SHAPES = {"tiny": "tiny L2 H128 B32 S128", "mini": "mini L4 H256 B32 S128",
          "small": "small L4 H512 B32 S128", "base128": "base B8 S128", "base512": "base B2 S512",
          "base128x64": "base B64 S128", "base512x16": "base B16 S512",
          "large128x32": "large B32 S128"}


def _peer_cells(d: dict, ms_format: str = ",.0f"):
  """One row's implementations (ours, HF Flax, HF PyTorch; a peer may be absent) and the
  cell formatters the step tables share: step ms, peer time / ours, peak MiB."""
  o, f, t = d["bert_jax"], d.get("hf-flax"), d.get("hf-torch")

  def ms(x):
    return f"{1000 * x['step_s']:{ms_format}}" if x else "-"

  def ratio(x):
    return f"{x['step_s'] / o['step_s']:.2f}x" if x else "-"

  def mib(x):
    return f"{x['peak_bytes'] / 2**20:,.0f}" if x and x.get("peak_bytes") else "-"
  return o, f, t, ms, ratio, mib


def train_step(name: str = "train_step_2026-12-02.json") -> str:
  r = _load(name)
  by = {}
  for row in r["rows"]:
    by.setdefault(row["shape"], {})[row["impl"]] = row
  lines = ["| shape | bert_jax ms | HF Flax ms | HF PyTorch ms | vs Flax | vs PyTorch | MFU ours / Flax | peak MiB ours / Flax |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for shape, d in by.items():
    o, f, t, ms, ratio, mib = _peer_cells(d)
    mfu = lambda x: f"{100 * x['mfu']:.0f}%" if x and x.get("mfu") else "-"
    lines.append(f"| {SHAPES.get(shape, shape)} | {ms(o)} | {ms(f)} | {ms(t)} | {ratio(f)} | {ratio(t)} | "
                 f"{mfu(o)} / {mfu(f)} | {mib(o)} / {mib(f)} |")
  return "\n".join(lines)


def finetune_step(name: str = "finetune_step.json") -> str:
  r = _load(name)
  by = {}
  for row in r["rows"]:
    by.setdefault(row["task"], {})[row["impl"]] = row
  lines = ["| task, shape | bert_jax ms | HF Flax ms | HF PyTorch ms | vs Flax | vs PyTorch | peak MiB ours / Flax / PyTorch RSS |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
  for d in by.values():
    o, f, t, ms, ratio, mib = _peer_cells(d)
    lines.append(f"| {o['size']}, {o['shape']} | {ms(o)} | {ms(f)} | {ms(t)} | {ratio(f)} | "
                 f"{ratio(t)} | {mib(o)} / {mib(f)} / {mib(t)} |")
  m = r["machine"]
  load = lambda x: " / ".join(f"{v:.1f}" for v in x)
  lines += ["", (f"{'Smoke run (tiny model, not a benchmark): ' if r.get('small') else ''}"
                 f"{'m' if r.get('small') else 'M'}edian of {r['steps']} steps after one warm-up step. Machine: {m['cores']} "
                 f"cores ({m['cpu']}), {m['device']}; load average (1 / 5 / 15 min) "
                 f"{load(m['load_average_at_start'])} at the start, "
                 f"{load(m['load_average_at_end'])} at the end; commit "
                 f"{r.get('commit', '?')[:10]}; command "
                 f"`{re.sub(r' --json=[^ ]+', '', r['command'])}`"
                 + ("" if r.get("complete", True) else " (cut short: the tasks above only)")
                 + ".")]
  return "\n".join(lines)


def profile_step_ablations() -> str:
  r = _load("profile_step_ablations.json")
  lines = ["| variant (bert_jax step, " + r["shape"] + f", {r['size']}) | median step ms | "
           "CPU s / step | every step, ms |", "| --- | --- | --- | --- |"]
  for x in r["rows"]:
    steps = " ".join(f"{1000 * t:,.0f}" for t in x["times_s"])
    lines.append(f"| {x['variant']} | {1000 * x['step_s']:,.0f} | {x['cpu_s_per_step']:.2f} | "
                 f"{steps} |")
  m = r["machine"]
  lines += ["", f"One process per row, {r['steps']} timed steps after two warm-up steps. "
            f"Machine: {m['cores']} cores ({m['cpu']}); commit {r.get('commit', '?')[:10]}; "
            f"command `{r['command']}`."]
  return "\n".join(lines)


def profile_step(name: str = "profile_step.json") -> str:
  """CPU seconds per fine-tuning step by category (perf), ours and HF PyTorch per shape."""
  r = _load(name)
  cats = ("matmul", "generated code", "other kernels", "thread pool", "kernel")
  lines = ["| shape | impl | step ms | CPU s / step | " + " | ".join(cats)
           + " | python + other | matmul GFLOP/s per core |",
           "| --- " * (len(cats) + 6) + "|"]
  for x in r["rows"]:
    cpu = x["cpu_s"]
    cells = [f"{cpu[c]:.2f} ({100 * x['shares'][c]:.0f}%)" for c in cats]
    rest = cpu["python"] + cpu["other"]
    rest_share = x["shares"]["python"] + x["shares"]["other"]
    lines.append(f"| {x['shape']} | {x['impl']} | {x['step_s'] * 1e3:,.0f} | "
                 f"{x['cpu_s_per_step']:.2f} | " + " | ".join(cells)
                 + f" | {rest:.2f} ({100 * rest_share:.0f}%) | {x['matmul_gflops_per_core']:.0f} |")
  m = r["machine"]
  lines += ["", f"Median of {r['steps']} profiled steps after two warm-up steps, perf at "
            f"499 Hz. Machine: {m['cores']} cores ({m['cpu']}), load average "
            f"{m['load_average'][0]:.1f} at the end; a standalone 2048^3 XLA matmul: "
            f"{r['peak_matmul_flops_per_core'] / 1e9:.0f} GFLOP/s per core; commit "
            f"{r.get('commit', '?')[:10]}; command `{re.sub(r' --json=[^ ]+', '', r['command'])}`."]
  return "\n".join(lines)


def gpu() -> str:
  """One GPU, bfloat16: the train step's and the fine-tuning steps' rows in one table."""
  r = _load("gpu_h200_bf16.json")
  rows = [("pre-training " + SHAPES.get(x["shape"], x["shape"]).replace("base", "base L12 H768"),
           x) for x in r["train_step"]["rows"]]
  rows += [(f"fine-tuning {x['shape']}", x) for x in r["finetune_step"]["rows"]]
  by: dict = {}
  for label, x in rows:
    by.setdefault(label, {})[x["impl"]] = x
  lines = ["| step, shape | bert_jax ms | HF Flax ms | HF PyTorch ms | vs Flax | vs PyTorch | peak MiB ours / Flax / PyTorch |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
  for label, d in by.items():
    o, f, t, ms, ratio, mib = _peer_cells(d, ms_format=".1f")
    lines.append(f"| {label} | {ms(o)} | {ms(f)} | {ms(t)} | {ratio(f)} | {ratio(t)} | "
                 f"{mib(o)} / {mib(f)} / {mib(t)} |")
  versions = r["versions"].splitlines()[0]
  lines += ["", f"{r['date']}, {r['machine']}; {versions}; measured bfloat16 matmul peak "
                f"{r['train_step']['peak_flops'] / 1e12:.0f} TFLOP/s; median of "
                f"{r['finetune_step']['steps']} steps; command `{r['command']}`. "
                f"Not measured: {r['not_measured']}."]
  return "\n".join(lines)


# The 2,400-step study with (c) MiniLM added (its (a), (b), (b') scores are the 2,400-step
# JSON's, reused: see the record's reused_from_previous_json).
TRANSFER_BUDGETS = ("transfer_1000steps.json", "transfer_2400steps_minilm.json")


def transfer() -> str:
  """The BERT-Mini (L4 H256) studies, one column group per pre-training budget."""
  return _transfer_table(TRANSFER_BUDGETS)


# The BERT-Tiny (L2 H128) study: its own (a), as its architecture differs.
TRANSFER_TINY = ("transfer_tiny_4800steps.json",)


def transfer_tiny() -> str:
  """The BERT-Tiny (L2 H128) study: (a) and (b) of its own architecture."""
  return _transfer_table(TRANSFER_TINY)


def _transfer_table(files) -> str:
  """GLUE dev scores: (a) random initialisation, then per pre-training budget (one study
  JSON each) every other initialisation and its difference from (a); mean +- SE."""
  names = {"ours": "(b) ours, MLM + NSP", "ours_mlm_only": "(b') ours, MLM only",
           "minilm": "(c) MiniLM"}
  studies = [_load(f) for f in files if (HERE / "results" / f).exists()]
  cols = []  # (header, study, init)
  for r in studies:
    steps = r["settings"]["pretrain_steps"]
    # Studies recorded before seq_len was ran at 128.
    tokens = steps * r["settings"]["pretrain_batch"] * r["settings"].get("seq_len", 128) / 1e6
    for i in r["settings"]["inits"]:
      if i != "random" and any(i in row for row in r["table"].values()):
        budget = ("the real pretrained model" if i == "minilm"
                  else f"{steps:,} steps ({tokens:.1f}M tokens)")
        cols.append((f"{names[i]}, {budget}", r, i))
  cell = lambda x: f"{x['mean']:.1f} ± {x['se']:.1f} (n={len(x['runs'])})"
  lines = ["| task (dev score x100) | (a) random | "
           + " | ".join(f"{h} | - (a)" for h, _, _ in cols) + " |",
           "| --- " * (2 + 2 * len(cols)) + "|"]
  for task, row in studies[-1]["table"].items():
    cells = [cell(row["random"])]
    for _, r, i in cols:
      x, d = r["table"].get(task, {}).get(i), r["table"].get(task, {}).get(f"{i}_minus_random")
      if x is None or d is None:  # the difference and its SE as transfer.py recorded them
        cells += ["-", "-"]
        continue
      cells += [cell(x), f"{d['mean']:+.1f} ± {d['se']:.1f}{' *' if d['beyond_two_se'] else ''}"]
    lines.append(f"| {task} | " + " | ".join(cells) + " |")
  lines += ["", "\\* : above (a) by more than two standard errors."]
  return "\n".join(lines)


GLUE_FINETUNE = ("glue_finetune_rte.json", "glue_finetune_mrpc.json",
                 "glue_finetune_rte_warm.json")


def glue_finetune() -> str:
  """benchmarks/glue_finetune.py: dev scores per epoch and train time, ours vs HF PyTorch."""
  lines = ["| task | implementation | compilation cache | dev per epoch | train s | "
           "HF PyTorch s / ours s |", "| --- | --- | --- | --- | --- | --- |"]
  notes = []
  records = [_load(name) for name in GLUE_FINETUNE]
  # A run of ours alone (the warm one) is compared with its task's HF run in another record.
  hf_of_task = {r["task"]: x for r in records for x in r["runs"]
                if not x["impl"].startswith("bert_jax")}
  for r in records:
    metrics = [k for k in r["runs"][0]["best"] if k.startswith("dev/") and k not in
               ("dev/loss", "dev/score")]
    own_hf = any(not x["impl"].startswith("bert_jax") for x in r["runs"])
    hf = hf_of_task.get(r["task"])
    for x in r["runs"]:
      ours = x["impl"].startswith("bert_jax")
      per = " · ".join("/".join(f"{100 * e[m]:.1f}" for m in metrics) for e in x["per_epoch"])
      ratio = (f"{hf['train_seconds'] / x['train_seconds']:.2f}x"
               + ("" if own_hf else " (HF from the cold run)")) if ours and hf else ""
      cache = r.get("compilation_cache", "cold") if ours else "-"
      lines.append(f"| {r['task'].upper()} ({'/'.join(m[4:] for m in metrics)}) | "
                   f"{'bert_jax' if ours else 'HF PyTorch'} | {cache} | {per} | "
                   f"{x['train_seconds']:,.0f} | {ratio} |")
    notes.append(f"{r['task'].upper()}{' warm' if r.get('compilation_cache') == 'warm' else ''}"
                 f": load {r['load_average_start']:.1f} -> {r['load_average_end']:.1f}, "
                 f"commit {r['commit'][:10]}")
  m = records[0]
  lines += ["", f"Machine: {m['machine']}; jax {m['versions']['jax']}, torch "
                f"{m['versions']['torch']}; MiniLM-L6-H384, batch 32, lr 5e-5, 3 epochs, "
                f"the same batches for both. " + "; ".join(notes) + "."]
  return "\n".join(lines)


SQUAD_V2 = ("squad_v2_minilm.json", "squad_v2_minilm_unanswerable.json")


def squad_v2() -> str:
  """benchmarks/squad_finetune.py: dev EM/F1 of ours and HF PyTorch, per train slice."""
  lines = ["| train slice | implementation | F1 (τ=0) | best F1 (τ) | above all-null | "
           "HasAns / NoAns F1 at best τ | null odds AUC |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
  notes = []
  for name in SQUAD_V2:
    r = _load(name)
    c, st = r["compare"], r["settings"]
    share = st.get("unanswerable_share", 0.0)
    data = (f"rebalanced to {100 * share:.1f}% unanswerable" if share
            else "as shipped (7.4% unanswerable)")
    for impl, m in c["models"].items():
      t0, bt = m["tau0"], m["best_tau"]
      split = (f"{bt['has_ans_f1']:.1f} / {bt['no_ans_f1']:.1f}" if "has_ans_f1" in bt
               else "-")
      auc = f"{m['null_odds_auc']:.3f}" if "null_odds_auc" in m else "-"
      lines.append(f"| {data} | {impl} | {t0['f1']:.2f} ± {t0['f1_se']:.2f} | "
                   f"{bt['f1']:.2f} ± {bt['f1_se']:.2f} ({bt['tau']:.2f}) | "
                   f"{bt['f1'] - c['all_null_f1']:+.2f} | {split} | {auc} |")
    d0, db = c["f1_difference_tau0"], c["f1_difference_best_tau"]
    notes.append(f"{data}: ours - HF F1 {d0['mean']:+.2f} ± {d0['paired_se']:.2f} at τ=0, "
                 f"{db['mean']:+.2f} ± {db['paired_se']:.2f} at each one's best τ (paired SE); "
                 f"{st['epochs']:g} epochs, lr {st['lr']:g}, windows {st['max_seq_length']}/"
                 f"{st['doc_stride']}, commit {r.get('commit', '')[:10]}")
  lines += ["", f"All-null baseline F1 {c['all_null_f1']:.2f} on {c['dev_questions']} dev "
                "questions; ± : standard error over the dev questions. " + "; ".join(notes) + "."]
  return "\n".join(lines)


COMMONSENSE_QA = "commonsense_qa_minilm.json"


def commonsense_qa() -> str:
  """benchmarks/commonsense_qa.py: dev accuracy per seed, ours vs HF PyTorch."""
  r = _load(COMMONSENSE_QA)
  s = r["summary"]
  lines = ["| implementation | final dev accuracy per seed | mean ± SE over seeds | "
           "best epoch, mean | train s per run |", "| --- | --- | --- | --- | --- |"]
  impls = sorted((k for k in s if not k.startswith("difference")),
                 key=lambda k: not k.startswith("bert_jax"))
  for impl in impls:
    x = s[impl]
    per = " / ".join(f"{100 * a:.1f}" for a in x["final"])
    lines.append(f"| {impl} | {per} | {100 * x['final_mean']:.1f} ± "
                 f"{100 * x['final_se_over_seeds']:.1f} | {100 * x['best_mean']:.1f} | "
                 f"{sum(x['train_seconds']) / len(x['train_seconds']):,.0f} |")
  d = s.get("difference_final")
  c = r["config"]
  per_seed = " / ".join(f"{100 * x:+.1f}" for x in d["per_seed"]) if d else ""
  lines += ["", (f"{d['of']}, final accuracy: {100 * d['mean']:+.1f} ± "
                 f"{100 * d['se_over_seeds']:.1f} points ({per_seed} for seeds "
                 f"{', '.join(map(str, d['seeds']))}: the same batches, paired). " if d else "")
            + f"{r['train_questions']:,} questions to train, {r['dev_questions']} held out, "
            f"chance {100 * r['chance']:.0f}%; batch {c['train']['batch_size']}, lr "
            f"{c['train']['learning_rate']:g}, {c['finetune']['num_epochs']:g} epochs; one "
            f"run's binomial SE ± {100 * s[impls[0]]['one_run_binomial_se']:.1f}; train s: "
            f"each side's loop with its per-epoch evaluations (ours also compiles and "
            f"checkpoints). "
            f"Machine: {r['machine']}; commit {r['commit'][:10]}."]
  return "\n".join(lines)


TABLES = {"glue_finetune": glue_finetune, "squad_v2": squad_v2, "commonsense_qa": commonsense_qa,
          "data_prep": data_prep, "train_step": train_step,
          "finetune_step": finetune_step,
          "train_step_intel": lambda: train_step("train_step_intel.json"),
          "finetune_step_intel": lambda: finetune_step("finetune_step_intel.json"),
          "profile_step_intel": lambda: profile_step("profile_step_intel.json"),
          "gpu": gpu, "transfer": transfer, "transfer_tiny": transfer_tiny,
          "profile_step": profile_step, "profile_step_ablations": profile_step_ablations}


def render(text: str) -> str:
  for name, fn in TABLES.items():
    pattern = re.compile(rf"(<!-- table:{name} -->\n)(?:.*?\n)?(<!-- /table:{name} -->)", re.S)
    if not pattern.search(text):
      raise SystemExit(f"{README}: no <!-- table:{name} --> ... <!-- /table:{name} --> block")
    text = pattern.sub(lambda m: m[1] + fn() + "\n" + m[2], text)
  return text


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--check", action="store_true")
  args = p.parse_args()
  old = README.read_text()
  new = render(old)
  if args.check:
    if new != old:
      print(f"{README}: tables differ from benchmarks/results; run python benchmarks/tables.py",
            file=sys.stderr)
      return 1
    return 0
  README.write_text(new)
  print(f"wrote {README}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
