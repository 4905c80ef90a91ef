"""Checks and shares of prepared pairs and masked batches (for tests and benchmarks).

`pair_statistics` verifies every instance against its provenance: A and B are contiguous
pieces of the sentences they claim, an IsNext B starts at the sentence right after A in
the same document, a NotNext B comes from another document. `mask_statistics` counts what
the masking did: the share of maskable tokens predicted, the [MASK] / random / unchanged
split, special or padding tokens predicted (must be 0) and words masked only in part.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from bert_jax.data import instances as instances_lib
from bert_jax.data import masking


def _is_slice(part: list[int], whole: list[int]) -> bool:
  n = len(part)
  first = part[0]
  return any(whole[i:i + n] == part for i in range(len(whole) - n + 1) if whole[i] == first)


def pair_statistics(insts: Iterable[instances_lib.Instance], max_seq_length: int,
                    documents: Mapping[int, Sequence[Sequence[int]]] | None = None
                    ) -> dict[str, float]:
  """Shares and provenance checks over instances (documents: id -> sentences of ids)."""
  n = not_next = short = follows = other_doc = checked = mismatched = 0
  lengths = []
  for inst in insts:
    n += 1
    lengths.append(inst.num_tokens)
    short += inst.num_tokens < max_seq_length
    if inst.is_random_next:
      not_next += 1
      other_doc += inst.b_doc != inst.a_doc
    else:
      follows += inst.b_doc == inst.a_doc and inst.b_start == inst.a_end
    if documents is not None:
      toks = inst.tokens.tolist()
      a, b = toks[1:inst.num_a - 1], toks[inst.num_a:-1]
      src_a = [t for s in documents[inst.a_doc][inst.a_start:inst.a_end] for t in s]
      src_b = [t for s in documents[inst.b_doc][inst.b_start:inst.b_end] for t in s]
      checked += 1
      mismatched += not (a and b and _is_slice(a, src_a) and _is_slice(b, src_b))
  is_next = n - not_next
  return {
      "instances": n,
      "nsp_positive_share": is_next / max(n, 1),
      "short_share": short / max(n, 1),
      "mean_length": float(np.mean(lengths)) if lengths else 0.0,
      "is_next_follows_a_share": follows / max(is_next, 1),
      "not_next_other_document_share": other_doc / max(not_next, 1),
      "token_checked": checked,
      "token_mismatches": mismatched,
  }


def mask_statistics(batches: Iterable[dict[str, np.ndarray]], spec: masking.MaskingSpec,
                    word_start: np.ndarray | None = None) -> dict[str, float]:
  """Masking shares over pipeline batches (the original ids are restored from the labels).

  Words masked in part are counted with `word_start` (bool per id; default the spec's,
  i.e. only under whole-word masking).
  """
  word_start = spec.word_start if word_start is None else word_start
  maskable = predicted = n_mask = n_same = n_random = special = padding = 0
  capped = rows = 0
  partial_words = masked_words = 0
  specials = np.array([spec.cls_id, spec.sep_id, spec.pad_id])
  for batch in batches:
    ids, w = batch["input_ids"], batch["masked_lm_weights"] > 0
    pos, labels = batch["masked_lm_positions"], batch["masked_lm_ids"]
    lengths = batch["attention_mask"].sum(axis=1)
    rows += len(ids)
    maskable += int((lengths - 3).sum())  # [CLS] and two [SEP] are never candidates
    predicted += int(w.sum())
    capped += int((w.sum(axis=1) >= spec.max_predictions_per_seq).sum())
    new = np.take_along_axis(ids, pos, axis=1)[w]
    old = labels[w]
    n_mask += int((new == spec.mask_id).sum())
    n_same += int((new == old).sum())
    n_random += int(((new != old) & (new != spec.mask_id)).sum())
    special += int(np.isin(old, specials).sum())
    padding += int((pos >= lengths[:, None])[w].sum())
    if word_start is not None:
      original = ids.copy()
      np.put_along_axis(original, pos, np.where(w, labels, np.take_along_axis(ids, pos, 1)),
                        axis=1)
      masked = np.zeros(ids.shape, bool)
      np.put_along_axis(masked, pos, w, axis=1)
      p, m = _partial_words(original, lengths, masked, spec, word_start)
      partial_words += p
      masked_words += m
  return {
      "rows": rows,
      "masked_share_of_maskable": predicted / max(maskable, 1),
      "mask_share": n_mask / max(predicted, 1),
      "random_share": n_random / max(predicted, 1),
      "unchanged_share": n_same / max(predicted, 1),
      "special_or_padding_predicted": special + padding,
      "capped_rows_share": capped / max(rows, 1),
      "words_masked": masked_words,
      "words_partly_masked": partial_words,
  }


def _partial_words(ids: np.ndarray, lengths: np.ndarray, masked: np.ndarray,
                   spec: masking.MaskingSpec, word_start: np.ndarray) -> tuple[int, int]:
  """(words with some but not all pieces predicted, words with any piece predicted)."""
  pos = np.arange(ids.shape[1])[None, :]
  cand = (pos < lengths[:, None]) & ~np.isin(ids, [spec.cls_id, spec.sep_id, spec.pad_id])
  prev = np.zeros_like(cand)
  prev[:, 1:] = cand[:, :-1]
  start = cand & (word_start[ids] | ~prev)
  word = np.cumsum(start.ravel()) - 1  # a global word index per token
  flat_cand = cand.ravel()
  total = np.bincount(word[flat_cand], minlength=word.max() + 1)
  hit = np.bincount(word[flat_cand], weights=masked.ravel()[flat_cand],
                    minlength=word.max() + 1)
  return int(((hit > 0) & (hit < total)).sum()), int((hit > 0).sum())


def tokenized_documents(files: Sequence[str], tokenizer, input_format: str = "text"
                        ) -> dict[int, list[list[int]]]:
  """Documents by the ids the preparation gives them, as the sentences it paired."""
  from bert_jax.data import corpus
  stats = corpus.CorpusStats()
  docs = [d for f in files for d in corpus.read_documents(f, stats, input_format=input_format)]
  flat = tokenizer.encode_batch([s for d in docs for s in d])
  out, k = {}, 0
  for i, d in enumerate(docs):
    out[i] = [s for s in flat[k:k + len(d)] if s]
    k += len(d)
  return out


def epoch_batches(iterator, num_records: int) -> Iterable[dict[str, np.ndarray]]:
  """The batches of one epoch of a single-host iterator (the last one trimmed)."""
  bs = iterator.global_batch_size
  for start in range(0, num_records, bs):
    batch = next(iterator)
    keep = min(bs, num_records - start)
    yield {k: v[:keep] for k, v in batch.items()}
