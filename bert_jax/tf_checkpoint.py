"""TensorFlow checkpoints (the V2 "tensor bundle" of Google's BERT release) without TensorFlow.

A checkpoint `PREFIX` is `PREFIX.index`, an SSTable (LevelDB table format) mapping each
variable name to a BundleEntryProto (dtype, shape, shard, offset, size, CRC32C), and
`PREFIX.data-0000i-of-0000n`, the raw little-endian tensor bytes. Both are small, stable,
documented formats (tensorflow/core/util/tensor_bundle, tensorflow/core/lib/io/table), so
reading Google's `bert_model.ckpt` here saves a 600 MB TensorFlow install. Every tensor's
CRC32C is checked, as TensorFlow does. `write_checkpoint` writes the same format
(TensorFlow 2.21's `tf.train.load_checkpoint` reads it; see tests/test_checkpoints.py).
"""
from __future__ import annotations

import struct

import numpy as np

from bert_jax import paths

_TABLE_MAGIC = 0xDB4775248B80FB57  # LevelDB / TF table footer magic.
_FOOTER_LEN = 48  # two BlockHandles padded to 40 bytes + 8-byte magic.
# TF DataType enum -> numpy dtype (BERT checkpoints hold float32 and an int64 global_step).
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8,
           9: np.int64, 10: np.bool_, 17: np.uint16, 19: np.float16, 22: np.uint32,
           23: np.uint64}
_DTYPE_NAMES = {7: "string", 14: "bfloat16", 8: "complex64", 18: "complex128"}


class TFCheckpointError(ValueError):
  """A TF checkpoint cannot be read; the message names the file and the problem."""


# ---------------------------------------------------------------------------------------
# Varints, CRC32C and the few protobuf fields the bundle uses.
# ---------------------------------------------------------------------------------------

def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
  result = shift = 0
  while True:
    b = buf[pos]
    pos += 1
    result |= (b & 0x7F) << shift
    if not b & 0x80:
      return result, pos
    shift += 7


def _varint(n: int) -> bytes:
  out = bytearray()
  while True:
    b = n & 0x7F
    n >>= 7
    out.append(b | (0x80 if n else 0))
    if not n:
      return bytes(out)


def _masked_crc(data: bytes) -> int:
  import google_crc32c  # C implementation: checking a 1.3 GB BERT-Large takes ~1 s.
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _parse_proto(buf: bytes) -> dict[int, list]:
  """Wire-format message -> {field number: [values]} (varints as int, bytes as bytes)."""
  fields: dict[int, list] = {}
  pos = 0
  while pos < len(buf):
    key, pos = _read_varint(buf, pos)
    num, wire = key >> 3, key & 7
    if wire == 0:
      val, pos = _read_varint(buf, pos)
    elif wire == 1:
      val, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
    elif wire == 2:
      n, pos = _read_varint(buf, pos)
      val, pos = buf[pos:pos + n], pos + n
    elif wire == 5:
      val, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
    else:
      raise TFCheckpointError(f"unsupported protobuf wire type {wire}")
    fields.setdefault(num, []).append(val)
  return fields


def _field(num: int, value) -> bytes:
  if isinstance(value, bytes):
    return _varint(num << 3 | 2) + _varint(len(value)) + value
  return _varint(num << 3) + _varint(value)


# ---------------------------------------------------------------------------------------
# SSTable
# ---------------------------------------------------------------------------------------

def _read_block(data: bytes, offset: int, size: int, path: str) -> list[tuple[bytes, bytes]]:
  contents = data[offset:offset + size]
  if len(contents) != size or offset + size + 5 > len(data):
    raise TFCheckpointError(f"{path}: truncated table block at byte {offset}")
  kind = data[offset + size]
  if kind != 0:
    raise TFCheckpointError(
        f"{path}: compressed table block (type {kind}); tensor bundles are uncompressed, "
        "is this a TensorFlow V2 checkpoint .index file?")
  num_restarts = struct.unpack_from("<I", contents, size - 4)[0]
  end = size - 4 - 4 * num_restarts
  entries, key, pos = [], b"", 0
  while pos < end:
    shared, pos = _read_varint(contents, pos)
    non_shared, pos = _read_varint(contents, pos)
    value_len, pos = _read_varint(contents, pos)
    key = key[:shared] + contents[pos:pos + non_shared]
    pos += non_shared
    entries.append((key, contents[pos:pos + value_len]))
    pos += value_len
  return entries


def _read_table(path: str) -> list[tuple[bytes, bytes]]:
  data = paths.read_bytes(path)
  if len(data) < _FOOTER_LEN or struct.unpack_from("<Q", data, len(data) - 8)[0] != _TABLE_MAGIC:
    raise TFCheckpointError(f"{path}: not a TensorFlow checkpoint index (bad table magic)")
  footer = data[len(data) - _FOOTER_LEN:]
  _, pos = _read_varint(footer, 0)  # metaindex handle: unused.
  _, pos = _read_varint(footer, pos)
  index_offset, pos = _read_varint(footer, pos)
  index_size, pos = _read_varint(footer, pos)
  out = []
  for _, handle in _read_block(data, index_offset, index_size, path):
    offset, p = _read_varint(handle, 0)
    size, _ = _read_varint(handle, p)
    out.extend(_read_block(data, offset, size, path))
  return out


def _block(entries: list[tuple[bytes, bytes]]) -> bytes:
  """An uncompressed block; every entry is a restart point (no key prefix sharing)."""
  body, restarts = bytearray(), []
  for key, value in entries:
    restarts.append(len(body))
    body += _varint(0) + _varint(len(key)) + _varint(len(value)) + key + value
  restarts = restarts or [0]
  body += b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))
  return bytes(body)


def _write_table(path: str, entries: list[tuple[bytes, bytes]]) -> None:
  out = bytearray()

  def put(block: bytes) -> bytes:
    handle = _varint(len(out)) + _varint(len(block))
    out.extend(block + b"\x00" + struct.pack("<I", _masked_crc(block + b"\x00")))
    return handle

  data_handle = put(_block(entries))
  meta_handle = put(_block([]))
  index_handle = put(_block([(entries[-1][0], data_handle)]))
  footer = (meta_handle + index_handle).ljust(40, b"\x00") + struct.pack("<Q", _TABLE_MAGIC)
  paths.write_bytes(path, bytes(out) + footer)


# ---------------------------------------------------------------------------------------
# Tensor bundle
# ---------------------------------------------------------------------------------------

def index_file(prefix: str) -> str:
  return prefix + ".index"


def read_checkpoint(prefix: str) -> dict[str, np.ndarray]:
  """All numeric tensors of the checkpoint `prefix` (e.g. .../bert_model.ckpt) by name."""
  path = index_file(prefix)
  if not paths.is_file(path):
    raise TFCheckpointError(f"{path} not found: pass the checkpoint prefix "
                            "(e.g. DIR/bert_model.ckpt for DIR/bert_model.ckpt.index).")
  entries = _read_table(path)
  header = _parse_proto(dict(entries).get(b"", b""))
  num_shards = header.get(1, [1])[0]
  if header.get(2, [0])[0] != 0:
    raise TFCheckpointError(f"{path}: big-endian checkpoints are not supported")
  shards: dict[int, bytes] = {}
  tensors: dict[str, np.ndarray] = {}
  for key, value in entries:
    if not key:
      continue
    name = key.decode("utf-8")
    e = _parse_proto(value)
    dtype = e.get(1, [0])[0]
    if 7 in e:  # sliced (partitioned) variable: not written by BERT's Saver.
      raise TFCheckpointError(f"{path}: variable {name} is partitioned; not supported")
    if dtype not in _DTYPES:
      if dtype == 7:
        continue  # string tensors (none in BERT checkpoints) carry no weights.
      raise TFCheckpointError(
          f"{path}: variable {name} has dtype {_DTYPE_NAMES.get(dtype, dtype)}; only "
          "numeric float/int checkpoints are supported")
    shape = [_parse_proto(d).get(1, [0])[0] for d in _parse_proto(e[2][0]).get(2, [])] if (
        2 in e) else []
    shard, offset, size = e.get(3, [0])[0], e.get(4, [0])[0], e.get(5, [0])[0]
    if shard not in shards:
      data_path = f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"
      if not paths.is_file(data_path):
        raise TFCheckpointError(f"{data_path} not found (the data shard of {path})")
      shards[shard] = paths.read_bytes(data_path)
    raw = shards[shard][offset:offset + size]
    if len(raw) != size:
      raise TFCheckpointError(f"{path}: variable {name} runs past the end of shard {shard}")
    if 6 in e and _masked_crc(raw) != e[6][0]:
      raise TFCheckpointError(f"{path}: checksum mismatch for {name}: the checkpoint is "
                              "corrupt (re-download it)")
    tensors[name] = np.frombuffer(raw, dtype=np.dtype(_DTYPES[dtype]).newbyteorder("<")
                                  ).reshape(shape).copy()
  return tensors


def write_checkpoint(prefix: str, tensors: dict[str, np.ndarray]) -> None:
  """Writes `prefix.index` + `prefix.data-00000-of-00001` (one shard, little-endian)."""
  codes = {np.dtype(v): k for k, v in _DTYPES.items()}
  entries = [(b"", _field(1, 1) + _field(3, _field(1, 1)))]  # 1 shard; version producer 1
  offset = 0
  paths.makedirs(paths.as_path(prefix).parent)
  with paths.open(f"{prefix}.data-00000-of-00001", "wb") as f:
    for name in sorted(tensors):
      arr = np.asarray(tensors[name])
      if arr.dtype not in codes:
        raise TFCheckpointError(f"cannot write {name}: dtype {arr.dtype}")
      raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
      shape = b"".join(_field(2, _field(1, d)) for d in arr.shape)
      entry = (_field(1, codes[arr.dtype]) + _field(2, shape) + _field(4, offset)
               + _field(5, len(raw)) + _varint(6 << 3 | 5) + struct.pack("<I", _masked_crc(raw)))
      entries.append((name.encode("utf-8"), entry))
      f.write(raw)
      offset += len(raw)
  _write_table(index_file(prefix), entries)
