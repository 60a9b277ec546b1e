"""The teacher cache: a teacher's top-k next-token logits over a training set, computed once.

``kdlens teacher-cache`` (:func:`build_cache`) runs a teacher over every record of a training file
and stores, for every token position of every encoded example:

* ``ids``    int32 [n, k]: the vocabulary ids of the teacher's k largest logits (descending);
* ``logits`` [n, k] in ``logits_dtype`` (bfloat16, float16 or float32): those logits;
* ``lse``    float32 [n, len(temperatures)]: the full-vocabulary log-sum-exp of z / T at each
  temperature, computed from the fp32 logits. With it, p_v(T) = exp(z_v / T - lse_T) is the teacher's
  probability of a cached id at temperature T (exact up to the rounding of the stored z_v), and the
  tail mass 1 - sum_k p_v(T) is known;
* ``input_ids`` int32 [n]: the tokens themselves, and ``offsets`` int64 [examples + 1]: where each
  example's rows start. Training finds an example's rows by its token ids, so the cache serves any
  validation split, seed and data order of the same file, template and encoding.

Layout of a cache folder: ``shard-00000.safetensors``, ``shard-00001.safetensors``, ... and the
manifest ``cache.json`` (format, dataset id and sha256, model id, k, temperatures, logits dtype,
vocabulary width, tokenizer hash, encoding, shards, ``complete``). Each shard is written atomically
and the manifest is rewritten after it, so a killed build leaves only whole shards behind and the next
run of the same command continues after the last recorded one; a different config for the same folder
is an error. Memory is bounded: a batch of ``batch_size`` examples is scored ``row_chunk`` rows at a
time, and at most ``shard_tokens`` tokens of output are held before a shard is written.

Reading (:class:`TeacherCache`) opens the shards lazily (memory-mapped safetensors) and
:func:`check_cache_matches` compares the manifest with a training run's config: a different data
file, tokenizer, encoding, teacher or an uncached temperature is a clear error.
Tests: tests/train/test_teacher_cache.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdlens.config import from_dict, option, to_dict, validate
from kdlens.errors import KdlensError

FORMAT = "kdlens-teacher-cache"
VERSION = 1
MANIFEST = "cache.json"
LOGITS_DTYPES = ("bfloat16", "float16", "float32")
# manifest keys that must match between a build and its continuation (everything that changes the bytes)
_BUILD_KEYS = ("dataset", "model", "k", "temperatures", "logits_dtype", "vocab_size", "tokenizer_sha256",
               "encoding", "max_records")


@dataclass(frozen=True)
class TeacherCacheConfig:
    out_dir: str = option(help="cache folder: cache.json + shard-*.safetensors")
    data: str = option(help="training records (.json/.jsonl/.parquet or hub id), the file the student trains on")
    teacher: str = option(help="teacher model folder or hub id")
    teacher_adapter: str | None = option(None, help="LoRA adapter folder on top of `teacher`")
    tokenizer: str | None = option(None, help="tokenizer folder or id (default: the teacher's; it must be the "
                                              "student's training tokenizer)")
    k: int = option(64, help="logits kept per token (the teacher's top k)", range=(1, 1 << 22))
    temperatures: tuple[float, ...] = option((1.0,), help="temperatures T whose full-vocabulary "
                                                          "logsumexp(z/T) is stored (training may use any of them)")
    logits_dtype: str = option("bfloat16", help="dtype of the stored top-k logits", choices=LOGITS_DTYPES)
    vocab_size: int | None = option(None, help="use only the first N logit columns (the shared vocabulary "
                                               "when the student's output layer is narrower); default: all",
                                    range=(1, None))
    template: str = option("alpaca", help="prompt template (as the training run's `template`)")
    max_length: int = option(256, help="max tokens per example (as the training run's)", range=(8, 1 << 20))
    add_special_tokens: bool = option(False, help="as the training run's add_special_tokens")
    max_records: int | None = option(None, help="cache only the first N records (tests, benchmarks)",
                                     range=(1, None))
    batch_size: int = option(8, help="examples per teacher forward", range=(1, 1 << 16))
    row_chunk: int = option(1024, help="token rows whose full logits are formed at a time", range=(1, None))
    shard_tokens: int = option(1 << 16, help="tokens per shard file", range=(1, None))
    dtype: str = option("float32", help="teacher weight dtype", choices=("float32", "bfloat16", "float16"))
    device: str = option("auto", help="auto, cpu, cuda, cuda:N")
    progress: bool = option(True, help="show a progress bar (tokens/s)")
    stop_after_shards: int | None = option(None, help="debug: stop (as if killed) after writing this many "
                                                      "shards in this call", range=(1, None))

    def __post_init__(self):
        validate(self)
        if not self.temperatures:
            raise KdlensError("temperatures must name at least one temperature, e.g. [1.0, 2.0]")
        bad = [t for t in self.temperatures if not (0.001 <= t <= 100.0)]
        if bad:
            raise KdlensError(f"temperatures must lie in [0.001, 100], got {bad}")
        if len(set(self.temperatures)) != len(self.temperatures):
            raise KdlensError(f"temperatures are repeated: {list(self.temperatures)}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "config") -> "TeacherCacheConfig":
        return from_dict(cls, data, origin=origin)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def replace(self, **changes) -> "TeacherCacheConfig":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class CacheBuildResult:
    out_dir: str
    complete: bool
    examples: int
    tokens: int
    shards: int
    bytes: int
    wall_s: float
    tokens_per_s: float  # of the tokens scored in this call

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------ fingerprints
def tokenizer_sha256(tokenizer) -> str:
    """Hash of what decides the token ids: the vocabulary (token -> id) and the EOS/pad ids."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    blob = json.dumps({"vocab": vocab, "eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id},
                      ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def dataset_id(data: str) -> dict:
    """The data source and, for a local file, the sha256 of its bytes."""
    path = Path(data)
    if path.is_file():
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return {"source": str(path.resolve()), "sha256": digest.hexdigest()}
    return {"source": data, "sha256": None}


def model_id(teacher: str, adapter: str | None) -> dict:
    def name(p: str | None) -> str | None:
        if p is None:
            return None
        return str(Path(p).resolve()) if Path(p).exists() else p

    return {"teacher": name(teacher), "adapter": name(adapter)}


def _encoding(template: str, max_length: int, add_special_tokens: bool) -> dict:
    return {"template": template, "max_length": int(max_length), "add_special_tokens": bool(add_special_tokens)}


# ------------------------------------------------------------------------------------ building
def _unique_examples(examples) -> list[list[int]]:
    """The examples' token sequences, first occurrence of each, in record order."""
    seen, out = set(), []
    for e in examples:
        key = tuple(e.input_ids)
        if key not in seen:
            seen.add(key)
            out.append(list(e.input_ids))
    return out


def _read_manifest(folder: Path) -> dict | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise KdlensError(f"{path} is not a readable teacher-cache manifest ({exc})") from exc
    if manifest.get("format") != FORMAT:
        raise KdlensError(f"{path} is not a kdlens teacher-cache manifest (format {manifest.get('format')!r})")
    if manifest.get("version") != VERSION:
        raise KdlensError(f"{path} is teacher-cache format version {manifest.get('version')}; this kdlens "
                          f"reads version {VERSION}: build the cache again")
    return manifest


def score_rows(hidden, weight, k: int, temperatures, vocab_size: int | None, logits_dtype, row_chunk: int):
    """(top-k ids int32 [n, k], top-k logits [n, k] in ``logits_dtype``, lse float32 [n, n_T]) of
    hidden states [n, H] under lm_head ``weight`` [V, H], ``row_chunk`` rows of full logits at a time."""
    import torch

    w = weight if vocab_size is None else weight[:vocab_size]
    ids, vals, lses = [], [], []
    for start in range(0, hidden.shape[0], row_chunk):
        z = (hidden[start:start + row_chunk] @ w.t()).float()
        top = torch.topk(z, k, dim=-1, sorted=True)
        ids.append(top.indices.to(torch.int32))
        vals.append(top.values.to(logits_dtype))
        lses.append(torch.stack([torch.logsumexp(z / t, dim=-1) for t in temperatures], dim=-1))
    return torch.cat(ids), torch.cat(vals), torch.cat(lses)


def build_cache(cfg: TeacherCacheConfig | dict) -> CacheBuildResult:
    """Build (or continue building) the teacher cache described by ``cfg``."""
    import torch
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from kdlens.data.collate import encode_records
    from kdlens.data.prompts import get_template
    from kdlens.data.records import load_records
    from kdlens.io import atomic_path, current_umask, write_json_atomic
    from kdlens.models import check_tokenizer_fits, hidden_states_and_head, load_causal_lm, load_tokenizer, \
        pick_device

    if isinstance(cfg, dict):
        cfg = TeacherCacheConfig.from_dict(cfg)
    t_start = time.perf_counter()
    out = Path(cfg.out_dir)
    device = pick_device(cfg.device)
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.teacher, padding_side="right")
    template = get_template(cfg.template)
    records = [dict(r) for r in load_records(cfg.data, required=("instruction", "output"),
                                             defaults={"input": ""})]
    if cfg.max_records:
        records = records[:cfg.max_records]
    examples = encode_records(records, tokenizer, template, max_length=cfg.max_length,
                              add_special_tokens=cfg.add_special_tokens)
    sequences = _unique_examples(examples)
    if not sequences:
        raise KdlensError(f"{cfg.data}: no records to cache")
    model = load_causal_lm(cfg.teacher, adapter=cfg.teacher_adapter, device=device,
                           dtype=getattr(torch, cfg.dtype), trainable=False)
    check_tokenizer_fits(tokenizer, model, "teacher")
    width = model.get_output_embeddings().weight.shape[0]
    vocab = min(cfg.vocab_size or width, width)
    if cfg.k > vocab:
        raise KdlensError(f"k={cfg.k} is larger than the vocabulary ({vocab} logits); use k <= {vocab}")
    identity = {
        "dataset": dataset_id(cfg.data), "model": model_id(cfg.teacher, cfg.teacher_adapter), "k": cfg.k,
        "temperatures": [float(t) for t in cfg.temperatures], "logits_dtype": cfg.logits_dtype,
        "vocab_size": vocab, "tokenizer_sha256": tokenizer_sha256(tokenizer),
        "encoding": _encoding(cfg.template, cfg.max_length, cfg.add_special_tokens),
        "max_records": cfg.max_records,
    }
    manifest = _read_manifest(out)
    if manifest is not None:
        diff = [k for k in _BUILD_KEYS if manifest.get(k) != identity[k]]
        if diff:
            shown = "; ".join(f"{k}: {manifest.get(k)!r} -> {identity[k]!r}" for k in diff[:3])
            raise KdlensError(f"{out} holds a teacher cache built with a different config ({shown}); "
                              "use another out_dir or delete the folder")
    else:
        manifest = {"format": FORMAT, "version": VERSION, **identity, "records": len(records),
                    "examples": len(sequences), "tokens": sum(len(s) for s in sequences),
                    "shards": [], "complete": False}
    done = sum(s["examples"] for s in manifest["shards"])
    out.mkdir(parents=True, exist_ok=True)
    logits_dtype = getattr(torch, cfg.logits_dtype)
    remaining = sequences[done:]
    bar = tqdm(total=manifest["tokens"], initial=sum(s["tokens"] for s in manifest["shards"]), unit="tok",
               unit_scale=True, desc="teacher cache", disable=not cfg.progress, dynamic_ncols=True)
    pad = tokenizer.pad_token_id
    buffer: list[tuple] = []  # per batch: (ids, logits, lse, input_ids, lengths)
    buffered_tokens = 0
    new_shards, scored_tokens, t_scoring = 0, 0, time.perf_counter()

    def flush() -> None:
        nonlocal buffer, buffered_tokens, new_shards
        if not buffer:
            return
        lengths = torch.cat([b[4] for b in buffer])
        tensors = {
            "ids": torch.cat([b[0] for b in buffer]).contiguous(),
            "logits": torch.cat([b[1] for b in buffer]).contiguous(),
            "lse": torch.cat([b[2] for b in buffer]).contiguous(),
            "input_ids": torch.cat([b[3] for b in buffer]).contiguous(),
            "offsets": torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)]),
        }
        name = f"shard-{len(manifest['shards']):05d}.safetensors"
        with atomic_path(out / name) as tmp:
            save_file(tensors, str(tmp))
            os.chmod(tmp, 0o666 & ~current_umask())  # save_file creates the file anew (mode 0600)
        manifest["shards"].append({"file": name, "examples": int(lengths.numel()), "tokens": int(lengths.sum()),
                                   "bytes": (out / name).stat().st_size})
        manifest["complete"] = sum(s["examples"] for s in manifest["shards"]) == manifest["examples"]
        write_json_atomic(out / MANIFEST, manifest)
        buffer, buffered_tokens = [], 0
        new_shards += 1

    try:
        with torch.no_grad():
            for start in range(0, len(remaining), cfg.batch_size):
                batch = remaining[start:start + cfg.batch_size]
                lengths = torch.tensor([len(s) for s in batch], dtype=torch.int64)
                ids = torch.full((len(batch), int(lengths.max())), pad, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for i, s in enumerate(batch):
                    ids[i, :len(s)] = torch.tensor(s)
                    mask[i, :len(s)] = 1
                hidden, weight = hidden_states_and_head(model, ids.to(device), mask.to(device))
                keep = mask.to(device).bool()
                top_ids, top_vals, lse = score_rows(hidden[keep], weight, cfg.k, cfg.temperatures, vocab,
                                                    logits_dtype, cfg.row_chunk)
                buffer.append((top_ids.cpu(), top_vals.cpu(), lse.cpu(), ids[mask.bool()].to(torch.int32),
                               lengths))
                buffered_tokens += int(lengths.sum())
                scored_tokens += int(lengths.sum())
                bar.update(int(lengths.sum()))
                if buffered_tokens >= cfg.shard_tokens:
                    flush()
                    if cfg.stop_after_shards is not None and new_shards >= cfg.stop_after_shards:
                        break
            else:
                flush()
    finally:
        bar.close()
    elapsed = time.perf_counter() - t_scoring
    return CacheBuildResult(
        out_dir=str(out), complete=bool(manifest["complete"]), examples=sum(s["examples"] for s in manifest["shards"]),
        tokens=sum(s["tokens"] for s in manifest["shards"]), shards=len(manifest["shards"]),
        bytes=sum(s["bytes"] for s in manifest["shards"]) + (out / MANIFEST).stat().st_size,
        wall_s=time.perf_counter() - t_start, tokens_per_s=scored_tokens / elapsed if elapsed > 0 else 0.0)


# ------------------------------------------------------------------------------------ reading
class TeacherCache:
    """A finished cache folder, opened for training: ``lookup(examples, length)`` gives the padded
    [B, S, k] ids / logits and [B, S, n_T] lse of a batch of examples (zeros past each example's end)."""

    def __init__(self, folder: str | os.PathLike):
        from safetensors import safe_open

        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise KdlensError(f"teacher_cache={str(folder)!r} is not a folder; build one with `kdlens teacher-cache`")
        manifest = _read_manifest(self.folder)
        if manifest is None:
            raise KdlensError(f"{self.folder} has no {MANIFEST}; build the cache with `kdlens teacher-cache`")
        if not manifest.get("complete"):
            raise KdlensError(f"the teacher cache {self.folder} is incomplete ({sum(s['examples'] for s in manifest['shards'])}"
                              f" of {manifest['examples']} examples); run the same `kdlens teacher-cache` "
                              "command again to finish it")
        self.manifest = manifest
        self.k = int(manifest["k"])
        self.temperatures = tuple(float(t) for t in manifest["temperatures"])
        self.vocab_size = int(manifest["vocab_size"])
        self._shards = []
        self._index: dict[bytes, tuple[int, int, int]] = {}
        for i, shard in enumerate(manifest["shards"]):
            path = self.folder / shard["file"]
            if not path.is_file():
                raise KdlensError(f"the teacher cache {self.folder} lacks {shard['file']}; build it again")
            handle = safe_open(str(path), framework="pt")
            self._shards.append(handle)
            tokens = handle.get_tensor("input_ids").numpy()
            offsets = handle.get_tensor("offsets").numpy()
            for j in range(len(offsets) - 1):
                a, b = int(offsets[j]), int(offsets[j + 1])
                self._index.setdefault(tokens[a:b].tobytes(), (i, a, b))

    def __len__(self) -> int:
        return len(self._index)

    def temperature_index(self, temperature: float) -> int:
        for i, t in enumerate(self.temperatures):
            if abs(t - temperature) <= 1e-9 * max(1.0, abs(t)):
                return i
        raise KdlensError(f"the teacher cache {self.folder} holds temperatures {list(self.temperatures)}, not "
                          f"T={temperature:g}; train at one of them or build the cache with temperatures=[..., "
                          f"{temperature:g}]")

    def rows(self, input_ids) -> tuple:
        """(ids int32 [n, k], logits [n, k], lse float32 [n, n_T]) of one example's tokens."""
        import numpy as np

        key = np.asarray(input_ids, dtype=np.int32).tobytes()
        where = self._index.get(key)
        if where is None:
            raise KdlensError(
                f"an example of the training data ({len(input_ids)} tokens) is not in the teacher cache "
                f"{self.folder}: the cache was built from other data, template, max_length or tokenizer; "
                "build it with the training run's settings")
        shard, a, b = where
        h = self._shards[shard]
        return (h.get_slice("ids")[a:b], h.get_slice("logits")[a:b], h.get_slice("lse")[a:b])

    @property
    def full_vocabulary(self) -> bool:
        """Whether every row holds the whole vocabulary (k = V): the teacher's distribution is known
        exactly, so training reads it as dense logits (:meth:`dense_logits`) and uses the dense loss."""
        return self.k == self.vocab_size

    def dense_logits(self, examples, length: int):
        """The teacher's logits of a batch in vocabulary order, float32 [B, length, V], from a
        full-vocabulary cache (k = V). Rows past an example's end (masked by the loss) are 0: the
        uniform distribution."""
        import torch

        if not self.full_vocabulary:
            raise KdlensError(f"the teacher cache {self.folder} holds the top {self.k} of {self.vocab_size} "
                              "logits per token, not the whole vocabulary; read it with lookup()")
        logits = torch.zeros((len(examples), length, self.vocab_size), dtype=torch.float32)
        for i, e in enumerate(examples):
            r_ids, r_logits, _ = self.rows(e.input_ids)
            m = r_ids.shape[0]
            logits[i, :m].scatter_(-1, r_ids.to(torch.int64), r_logits.float())
        return logits

    def lookup(self, examples, length: int, device=None) -> tuple:
        """Padded teacher tensors of a batch: ids int64 [B, length, k], logits float32 [B, length, k],
        lse float32 [B, length, n_T]. Rows past an example's end (masked by the loss) hold a valid
        distribution: the uniform one (ids 0..k-1, logits 0, lse log V)."""
        import math

        import torch

        n = len(examples)
        ids = torch.arange(self.k, dtype=torch.int64).expand(n, length, self.k).clone()
        logits = torch.zeros((n, length, self.k), dtype=torch.float32)
        lse = torch.full((n, length, len(self.temperatures)), math.log(self.vocab_size), dtype=torch.float32)
        for i, e in enumerate(examples):
            r_ids, r_logits, r_lse = self.rows(e.input_ids)
            m = r_ids.shape[0]
            ids[i, :m] = r_ids.to(torch.int64)
            logits[i, :m] = r_logits.float()
            lse[i, :m] = r_lse
        if device is not None:
            ids, logits, lse = ids.to(device), logits.to(device), lse.to(device)
        return ids, logits, lse


def check_cache_matches(cache: TeacherCache, *, data: str, tokenizer, template: str, max_length: int,
                        add_special_tokens: bool, temperature: float, teacher: str | None,
                        teacher_adapter: str | None) -> None:
    """Refuse a cache built for another data file, tokenizer, encoding, teacher or temperature."""
    m, where = cache.manifest, cache.folder
    problems = []
    if dataset_id(data) != m["dataset"]:
        problems.append(f"data {dataset_id(data)['source']} (sha256 {str(dataset_id(data)['sha256'])[:12]}) "
                        f"vs the cache's {m['dataset']['source']} (sha256 {str(m['dataset']['sha256'])[:12]})")
    if tokenizer_sha256(tokenizer) != m["tokenizer_sha256"]:
        problems.append("the tokenizer differs from the one the cache was built with")
    enc = _encoding(template, max_length, add_special_tokens)
    if enc != m["encoding"]:
        problems.append(f"encoding {enc} vs the cache's {m['encoding']}")
    if teacher is not None and model_id(teacher, teacher_adapter) != m["model"]:
        problems.append(f"teacher {model_id(teacher, teacher_adapter)} vs the cache's {m['model']}")
    if problems:
        raise KdlensError(f"the teacher cache {where} does not match this run: " + "; ".join(problems)
                          + ". Build the cache with the run's settings (kdlens teacher-cache)")
    cache.temperature_index(temperature)
