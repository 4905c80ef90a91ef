"""The official SQuAD v1.1 / v2.0 evaluation from the command line (tasks/squad_eval.py).

python -m bert_jax.tools.squad_eval --data_file=dev-v2.0.json --pred_file=predictions.json \
    --na_prob_file=null_odds.json
"""
from __future__ import annotations

import argparse
import json
import sys

from bert_jax import paths
from bert_jax.tasks import squad_eval


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data_file", required=True, help="official SQuAD JSON (train/dev).")
  p.add_argument("--pred_file", required=True, help="JSON {question id: answer text}.")
  p.add_argument("--na_prob_file", default="", help="JSON {question id: null odds} (v2.0).")
  p.add_argument("--na_prob_thresh", type=float, default=1.0,
                 help="predict no-answer where null odds > this (official default 1.0).")
  p.add_argument("--version", default="", choices=["", "1.1", "2.0"],
                 help="evaluation rules; default: the data file's version field.")
  p.add_argument("--out_file", default="", help="also write the metrics JSON here.")
  args = p.parse_args(argv)
  preds = squad_eval.load_json(args.pred_file, "predictions")
  na_probs = squad_eval.load_json(args.na_prob_file, "null odds") if args.na_prob_file else None
  result = squad_eval.evaluate(squad_eval.load_json(args.data_file, "dataset"), preds, na_probs,
                    args.na_prob_thresh, args.version or None)
  if result["missing"]:
    print(f"warning: {result['missing']} question(s) have no prediction; scored 0.",
          file=sys.stderr)
  text = json.dumps(result, indent=2)
  print(text)
  if args.out_file:
    paths.write_text(args.out_file, text + "\n")
  return result


if __name__ == "__main__":
  try:
    main()
  except squad_eval.SquadEvalError as e:
    sys.exit(f"error: {e}")
