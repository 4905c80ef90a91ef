"""SQuAD v1.1 / v2.0 fine-tuning and prediction on the shared loop (finetune.run).

  python -m bert_jax.main --config=configs/squad.py --config.squad.version=2.0 \
      --config.init_checkpoint=PATH --workdir=DIR [--config.squad.mode=all]

(or `python -m bert_jax.squad` with the same flags).

Modes (`config.squad.mode`):
- train: fine-tune on train_file, evaluating dev_file after every epoch; keeps the best
  params in workdir/best and writes the dev prediction files for them.
- predict: answer predict_file (default dev_file) with fine-tuned params
  (squad.params_dir, default workdir/best). Questions are predicted in file order and
  appended to a JSON-lines file as they finish, so a crash loses nothing and a rerun
  resumes; the final files are written atomically.
- evaluate: predict on dev_file, then score it (eval_results.json).
- all: train, then evaluate (and predict predict_file when set).

Head: BertForQuestionAnswering (start/end logits per token); loss: mean of the start
and end cross-entropies over the window's real tokens. Files: predictions.json,
nbest_predictions.json, null_odds.json (v2.0), eval_results.json with the official
metrics at the given τ (null_score_diff_threshold) and at the τ that maximises EM / F1
(best_exact(_thresh), best_f1(_thresh)), plus predictions_best_f1_thresh.json so the
best τ needs no second run.
"""
from __future__ import annotations

import collections
import hashlib
import json
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bert_jax import metrics
from bert_jax import weights
from bert_jax import checkpoints
from bert_jax import config as config_lib
from bert_jax import finetune, partitioning, paths, preflight, train_lib
from bert_jax.data import squad as squad_data
from bert_jax.data import tfds_sources
from bert_jax.model import BertConfig, BertForQuestionAnswering
from bert_jax.tasks import degenerate as degenerate_lib
from bert_jax.tasks import squad_postprocess as pp



def resolve_file(path: str, version: str, split: str) -> str:
  """'' -> the shared copy of the official file for this version and split."""
  if path:
    return path
  return paths.join(config_lib.SHARED_DATA, "squad", f"v{version}", f"{split}.json")


def _first_questions(data: dict[str, Any], n: int) -> dict[str, Any]:
  """The dataset cut to its first n questions (whole structure kept)."""
  if not n:
    return data
  out, left = [], n
  for art in data["data"]:
    paras = []
    for p in art.get("paragraphs", []):
      if left <= 0:
        break
      qas = p.get("qas", [])[:left]
      left -= len(qas)
      paras.append({**p, "qas": qas})
    if paras:
      out.append({**art, "paragraphs": paras})
    if left <= 0:
      break
  return {**data, "data": out}


class SquadTask:
  """SQuAD for finetune.run: windows -> start/end logits -> answers, official metrics."""

  sequence_keys = finetune.MODEL_INPUTS

  def __init__(self, s: ml_collections.ConfigDict, do_lower_case: bool = True,
               output_dir: str | None = None):
    config_lib.check_squad(s)
    self.cfg = s
    self.version_2 = str(s.version) == "2.0"
    self.do_lower_case = do_lower_case
    self.name = "squad_v2" if self.version_2 else "squad_v1.1"
    self.files = {"train": resolve_file(s.train_file, s.version, "train"),
                  "dev": resolve_file(s.dev_file, s.version, "dev"),
                  "predict": s.predict_file}
    self.train_split = "train"
    self.eval_splits = ("dev",)
    self.predict_splits = ("predict",) if s.predict_file else ()
    # v2.0: pick epochs by F1 at the best τ (τ is tuned on dev anyway); v1.1: F1.
    self.selection_metric = "dev/best_f1" if self.version_2 else "dev/f1"
    self.output_dir = output_dir or None
    self.datasets: dict[str, dict] = {}
    self._cache: dict[str, tuple[Any, dict]] = {}  # split -> (outputs, predictions)

  # ---- data ----------------------------------------------------------------------------

  def dataset(self, split: str) -> dict[str, Any]:
    """The split's JSON (official structure), cut to max_*_examples questions."""
    if split not in self.datasets:
      path = self.files[split]
      if path.startswith("tfds:"):  # data/tfds_sources.py, config.data.tfds_data_dir
        name, tfds_split = tfds_sources.squad_source(
            path, self.cfg.version, "train" if split == "train" else "validation")
        data = tfds_sources.squad_json(name, tfds_split, getattr(self, "tfds_data_dir", ""))
      else:
        data = squad_data.load_squad_json(path)
      n = self.cfg.max_train_examples if split == "train" else self.cfg.max_eval_examples
      self.datasets[split] = _first_questions(data, int(n))
    return self.datasets[split]

  def load_examples(self, split: str) -> list[squad_data.SquadExample]:
    examples, stats = squad_data.read_squad(self.dataset(split), is_training=split == "train")
    metrics.log(f"{self.name}/{split} ({self.files[split]}): {stats.summary()}")
    for reason, qids in stats.skipped.items():
      metrics.log(f"  skipped ({reason}): {', '.join(qids[:5])}"
                   f"{' ...' if len(qids) > 5 else ''}")
    return examples

  def featurize(self, examples, tokenizer, max_seq_length: int) -> dict[str, Any]:
    """Window features; host-only maps for postprocessing live under 'meta'."""
    t0 = time.time()
    feats, stats = squad_data.featurize(
        examples, tokenizer, max_seq_length, int(self.cfg.doc_stride),
        int(self.cfg.max_query_length), is_training=True, max_windows=int(self.cfg.max_windows))
    if stats.skipped:
      metrics.log(f"  featurize skipped: " + ", ".join(
          f"{len(v)} {k} ({', '.join(v[:3])})" for k, v in stats.skipped.items()))
    metrics.log(f"  {len(examples)} questions -> {stats.num_windows} windows "
                 f"({stats.num_out_of_span} with the answer outside: target [CLS]), "
                 f"{time.time() - t0:.1f}s")
    meta = {k: feats.pop(k) for k in ("example_index", "token_to_orig",
                                      "token_is_max_context")}
    meta["attention_mask"] = feats["attention_mask"]
    meta["input_ids"] = feats["input_ids"]
    meta["tokenizer"] = tokenizer
    meta["skipped"] = stats.skipped
    feats["meta"] = meta
    return feats

  # ---- model ---------------------------------------------------------------------------

  def make_model(self, bert_config: BertConfig) -> BertForQuestionAnswering:
    return BertForQuestionAnswering(bert_config)

  def example_losses(self, outputs, batch) -> dict[str, jax.Array]:
    """Mean of the start and end cross-entropies; padding positions take no mass."""
    return span_losses(outputs[0], outputs[1], batch["start_positions"],
                       batch["end_positions"], batch["attention_mask"])

  # ---- predictions ---------------------------------------------------------------------

  def postprocess_kwargs(self, tau: float | None = None) -> dict[str, Any]:
    s = self.cfg
    return dict(n_best_size=int(s.n_best_size), max_answer_length=int(s.max_answer_length),
                version_2=self.version_2, do_lower_case=self.do_lower_case,
                null_score_diff_threshold=float(
                    s.null_score_diff_threshold if tau is None else tau))

  def predictions(self, outputs, examples, features, split: str) -> dict[str, pp.Prediction]:
    """qid -> Prediction, computed once per (split, outputs)."""
    cached = self._cache.get(split)
    if cached is not None and cached[0] is outputs[0]:
      return cached[1]
    meta = features["meta"]
    preds = pp.postprocess(examples, meta, np.asarray(outputs[0]), np.asarray(outputs[1]),
                           meta["tokenizer"], **self.postprocess_kwargs())
    self._cache[split] = (outputs[0], preds)
    return preds

  def evaluate(self, outputs, examples, features, split: str) -> dict[str, float]:
    preds = self.predictions(outputs, examples, features, split)
    result = pp.evaluate(self.dataset(split), preds, self.version_2,
                         float(self.cfg.null_score_diff_threshold))
    return {k: float(v) for k, v in result.items()}

  def degenerate(self, outputs, examples, features, split: str, metrics) -> str | None:
    """v2.0: every question answered "no answer" (at τ or at the best-F1 τ), else None."""
    if not self.version_2:
      return None
    return no_answer_degenerate(self.predictions(outputs, examples, features, split),
                                examples, split, float(self.cfg.null_score_diff_threshold),
                                metrics.get("best_f1_thresh"))

  def write_predictions(self, outputs, examples, features, split: str,
                        output_dir: str) -> list[str]:
    if jax.process_index() != 0:
      return []
    preds = self.predictions(outputs, examples, features, split)
    writer = pp.PredictionWriter(output_dir, self.version_2)
    for qid, p in preds.items():
      writer.add(qid, p)
    return finish_files(self, writer, examples, split, output_dir,
                        features["meta"]["skipped"])


def span_losses(start_logits, end_logits, start_positions, end_positions,
                attention_mask) -> dict[str, jax.Array]:
  """Per-window loss (CE(start) + CE(end)) / 2 and exact-span accuracy, [B] each."""
  neg = jnp.where(attention_mask > 0, 0.0, -1e9)

  def ce(logits, pos):
    logp = jax.nn.log_softmax(logits.astype(jnp.float32) + neg, axis=-1)
    return -jnp.take_along_axis(logp, pos[:, None].astype(jnp.int32), axis=-1)[:, 0]

  loss = 0.5 * (ce(start_logits, start_positions) + ce(end_logits, end_positions))
  hit = ((jnp.argmax(start_logits + neg, -1) == start_positions) &
         (jnp.argmax(end_logits + neg, -1) == end_positions))
  return {"loss": loss, "span_accuracy": hit.astype(jnp.float32)}


def no_answer_degenerate(preds: dict[str, pp.Prediction], examples, split: str, tau: float,
                         best_tau: float | None = None) -> str | None:
  """"at τ=0, all 21 dev predictions are no-answer (...)" when every question of a
  v2.0 split gets "" at τ or, failing that, at best_tau (the τ best_f1 is read at, which
  the official search puts below every null odds when answering nothing scores best);
  None otherwise. A question without a prediction (skipped) counts as no-answer."""
  gold = np.array([e.is_impossible or not e.answers for e in examples])
  for name, t in (("τ", tau), ("the best-F1 τ", best_tau)):
    if t is None:
      continue
    null = [e.qas_id not in preds or preds[e.qas_id].null_odds > t for e in examples]
    msg = degenerate_lib.describe(null, split, "null", gold)
    if msg:
      return f"at {name}={t:.4g}, {msg}"
  return None


def finish_files(task: SquadTask, writer: pp.PredictionWriter, examples, split: str,
                 output_dir: str, skipped: dict[str, list[str]]) -> list[str]:
  """Final prediction files (+ eval_results.json and best-τ predictions for splits with
  answers) from a writer holding every question's prediction."""
  qids = [e.qas_id for e in examples]
  missing = [q for q in qids if q not in writer.preds]
  for q in missing:  # skipped (e.g. too many windows): an explicit no-answer
    writer.add(q, pp.no_answer())
  tau = float(task.cfg.null_score_diff_threshold)
  written = writer.finalize(qids, tau=tau)
  out = list(written.values())
  if split != "predict":
    result = pp.evaluate(task.dataset(split), writer.preds, task.version_2, tau)
    result["skipped"] = sum(len(v) for v in skipped.values())
    if task.version_2:
      result["degenerate"] = no_answer_degenerate(writer.preds, examples, split, tau,
                                                  result["best_f1_thresh"])
    out.append(pp.write_json_atomic(paths.join(output_dir, "eval_results.json"), result))
    if task.version_2:
      best = pp.with_threshold({q: writer.preds[q] for q in qids}, result["best_f1_thresh"])
      out.append(pp.write_json_atomic(
          paths.join(output_dir, "predictions_best_f1_thresh.json"), best))
    metrics.log(f"{task.name}/{split}: " + json.dumps(
        {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}))
  writer.close(complete=True)
  return out


# ---------------------------------------------------------------------------------------
# Prediction with fine-tuned params (crash-safe, resumable)
# ---------------------------------------------------------------------------------------


def predict_file(task: SquadTask, config, split: str, output_dir: str, params_dir: str,
                 fail_after_batches: int | None = None) -> list[str]:
  """Answers every question of a split with fine-tuned params, question by question.

  Windows run in file order in batches cut to length buckets; each question is
  postprocessed as soon as its last window is done and appended to the partial file
  (flushed per batch). A rerun with the same params and file resumes where it stopped.
  `fail_after_batches` simulates a crash (tests).
  """
  model_cfg = ml_collections.ConfigDict(config.model.to_dict())
  # The architecture is the fine-tuned checkpoint's (config.json written by save_params).
  arch = weights.model_config_from_bert_json(paths.join(params_dir, "config.json"))
  for k in config_lib.ARCHITECTURE_KEYS:
    model_cfg[k] = arch[k]
  bert_config = BertConfig.from_config(model_cfg)
  vocab_file = config.vocab_file or checkpoints.vocab_file_of(config.init_checkpoint or "")
  if not vocab_file:
    raise finetune.FinetuneError(
        "no vocabulary for prediction: set --config.vocab_file (or init_checkpoint, whose "
        "vocab.txt is used) to the vocabulary the model was fine-tuned with.")
  tokenizer = finetune.load_tokenizer(vocab_file, config.do_lower_case)
  weights.check_vocab(vocab_file, model_cfg, checkpoint=params_dir)
  max_seq_length = int(config.data.max_seq_length)
  examples = task.load_examples(split)
  features = task.featurize(examples, tokenizer, max_seq_length)
  meta = features["meta"]
  mesh = partitioning.make_mesh(config.mesh)
  batch_size = int(config.finetune.eval_batch_size)
  partitioning.check_batch_size(batch_size, mesh, key="config.finetune.eval_batch_size")
  model = task.make_model(bert_config)
  ex_in = [np.zeros((1, 8), np.int32)] * 3
  params, shardings = checkpoints.restore_params(params_dir, model, ex_in, mesh)
  predict_fn = train_lib.make_predict_step(
      lambda p, b: finetune.apply_model(model, p, b), mesh, shardings)
  # The longest windows' batch, compiled now: one line with the fixes if it cannot fit.
  predict_fn = finetune.compile_checked_predict(
      predict_fn, params, features, np.arange(finetune.num_examples(features)), batch_size,
      int(config.finetune.bucket_multiple), finetune.MODEL_INPUTS, mesh, what="prediction",
      allocated_bytes=preflight.bytes_per_device(params))

  stamp = lambda p: f"{p}:{paths.as_path(p).stat().mtime if paths.exists(p) else ''}"
  key = hashlib.sha256("|".join([
      stamp(paths.join(params_dir, "params")), stamp(task.files[split]),
      json.dumps(task.postprocess_kwargs()), str(max_seq_length), str(task.cfg.doc_stride),
      str(task.cfg.max_query_length)]).encode()).hexdigest()
  if jax.process_index() != 0:  # every host predicts (gathered logits); host 0 writes.
    output_dir = tempfile.mkdtemp(prefix="squad_predict_")  # io: local-only (scratch: only host 0 writes)
  writer = pp.PredictionWriter(output_dir, task.version_2, resume_key=key)
  done = writer.done
  ex_rows = list(pp.example_rows(meta["example_index"]))
  todo = [(ei, rows) for ei, rows in ex_rows if examples[ei].qas_id not in done]
  if done:
    metrics.log(f"resuming: {len(done)} questions already predicted in {writer.path}")
  rows = np.concatenate([r for _, r in todo]) if todo else np.zeros(0, int)
  lengths = finetune.sequence_lengths(features)
  logits: dict[int, tuple[np.ndarray, np.ndarray]] = {}
  pending = collections.deque(todo)
  t0, n_done = time.time(), 0
  n_local = batch_size // jax.process_count()
  lo = jax.process_index() * n_local
  for b, i in enumerate(range(0, len(rows), batch_size)):
    if fail_after_batches is not None and b >= fail_after_batches:
      writer.close()
      raise RuntimeError(f"simulated crash after {b} batches")
    idx = rows[i:i + batch_size]
    batch = finetune.make_batch(features, idx, batch_size, int(config.finetune.bucket_multiple),
                                finetune.MODEL_INPUTS, finetune.MODEL_INPUTS, lengths)
    local = {k: v[lo:lo + n_local] for k, v in batch.items()}
    start, end = jax.tree_util.tree_map(
        np.asarray, train_lib.gather_to_host(predict_fn(params, train_lib.global_batch(local, mesh))))
    for j, r in enumerate(idx):
      logits[int(r)] = (start[j], end[j])
    while pending and all(int(r) in logits for r in pending[0][1]):
      ei, ex_rows_i = pending.popleft()
      width = max_seq_length
      s_arr = np.stack([_pad(logits[int(r)][0], width) for r in ex_rows_i])
      e_arr = np.stack([_pad(logits[int(r)][1], width) for r in ex_rows_i])
      local_meta = {k: meta[k][ex_rows_i] for k in ("token_to_orig", "token_is_max_context",
                                                   "attention_mask", "input_ids")}
      pred = pp.predict_question(examples[ei], np.arange(len(ex_rows_i)), local_meta, s_arr,
                                 e_arr, tokenizer, **task.postprocess_kwargs())
      writer.add(examples[ei].qas_id, pred)
      for r in ex_rows_i:
        del logits[int(r)]
      n_done += 1
    writer.flush()
    if (b + 1) % 20 == 0 or i + batch_size >= len(rows):
      rate = (i + len(idx)) / max(time.time() - t0, 1e-9)
      eta = (len(rows) - i - len(idx)) / max(rate, 1e-9)
      metrics.log(f"predict {split}: {i + len(idx)}/{len(rows)} windows, {n_done} questions"
                   f" done, {rate:.1f} windows/s, ETA {metrics.format_duration(eta)}")
  return finish_files(task, writer, examples, split, output_dir, meta["skipped"])


def _pad(x: np.ndarray, width: int) -> np.ndarray:
  return x if len(x) >= width else np.pad(x, (0, width - len(x)))


# ---------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------

def make_task(config) -> SquadTask:
  task = SquadTask(config.squad, bool(config.do_lower_case), config.squad.output_dir or None)
  task.tfds_data_dir = tfds_sources.data_dir_of(config)
  return task


def run(config, workdir: str) -> dict[str, Any]:
  """Runs config.squad.mode; returns the results (finetune.run's, or eval metrics).

  Training resumes from the workdir's checkpoint (finetune.run); SIGTERM stops it at the
  next step with a checkpoint and returns {'stopped_early': True, ...}. Prediction resumes
  from its partial file."""
  task = make_task(config)
  s = config.squad
  paths.makedirs(workdir)
  results: dict[str, Any] = {}
  if s.mode in ("train", "all"):
    if s.mode == "train":
      task.predict_splits = ()
    results = finetune.run(config, workdir, task)
    if finetune.stopped(results):
      return results
    dev_eval = paths.join(workdir, "predictions", "eval_results.json")
    if paths.is_file(dev_eval):
      results["eval_results"] = paths.read_json(dev_eval)
      pp.write_json_atomic(paths.join(workdir, "eval_results.json"), results["eval_results"])
  else:
    params_dir = s.params_dir or paths.join(workdir, "best")
    if s.mode == "evaluate":
      out = paths.join(workdir, "predictions")
      results["predictions"] = predict_file(task, config, "dev", out, params_dir)
      results["eval_results"] = paths.read_json(paths.join(out, "eval_results.json"))
      pp.write_json_atomic(paths.join(workdir, "eval_results.json"), results["eval_results"])
    else:
      split = "predict" if s.predict_file else "dev"
      out = s.output_dir or paths.join(workdir, "submission" if s.predict_file
                                       else "predictions")
      results["predictions"] = predict_file(task, config, split, out, params_dir)
  return results
