"""Arabic text normalisation matching AraBERT v02 pretraining.

The ``aubmindlab/bert-base-arabertv02`` family was pretrained on text cleaned
by ``ArabertPreprocessor(model_name="bert-base-arabertv02")`` from the
``arabert`` package.  Fine-tuning on text cleaned the same way keeps the input
distribution identical to pretraining.  We do not depend on that package (it
pulls in GPL-licensed PyArabic and pins an old ``emoji``), so the rules are
re-implemented here from its observed behaviour, using only the standard
library (``re``, plus ``html`` for the HTML5 entity table).

Rules of :func:`normalize_arabert_v02`, in the order they are applied
(the order matters: e.g. tashkeel is stripped before URLs are matched, and
repeated characters are collapsed before punctuation is spaced out):

1.  :func:`unescape_html` - HTML entities (``&amp;``, ``&#1576;``) -> chars.
2.  :func:`strip_tashkeel` - drop the eight harakat U+064B..U+0652.
3.  :func:`strip_tatweel` - drop the kashida U+0640.
4.  :func:`replace_urls` - URLs / domain-like tokens -> ``[رابط]``.
5.  :func:`replace_emails` - e-mail-like tokens -> ``[بريد]``.
6.  :func:`replace_mentions` - ``@name`` -> ``[مستخدم]``.
7.  :func:`remove_html_tags` - ``<br />`` and ``<...>`` -> space.
8.  :func:`to_western_digits` - Arabic-Indic ``٠..٩`` -> ``0..9``
    (Persian ``۰..۹`` are *not* mapped; step 13 drops them).
9.  :func:`collapse_repetitions` - 3+ repeats of a non-digit -> 2.
10. :func:`space_out_symbols` - every char other than ASCII letters/digits,
    core Arabic letters and ``[`` ``]`` becomes its own token.
11. :func:`split_digits_from_letters` - ``3أشخاص`` -> ``3 أشخاص``; the two
    runs also come loose from Latin neighbours (``x12ب`` -> ``x 12 ب``).
12. :func:`slash_to_dash` - ``/`` -> ``-`` (``/`` is not in the v02 vocab).
13. :func:`drop_unsupported_chars` - anything outside the v02 character set
    (emoji, Persian/Urdu letters, Latin accents, ZWNJ, ``&``...) -> space.
14. :func:`collapse_whitespace` - runs of whitespace -> one space, stripped.

No Farasa segmentation (v02 is unsegmented) and emojis are dropped (only the
"-twitter" checkpoints keep them).

Equivalence notes.  Output is identical to ``arabert`` 1.0.1 on every input
we compared (all seed sentences and articles, every Unicode code point in
several contexts, ~10^6 random strings).  Some steps are written differently
from the reference, for speed, but give the same result:

* arabert pads *every* non-word char with spaces, whitespace included; since
  step 14 collapses whitespace anyway we pad only non-space symbols.
* Cheap necessary-condition gates skip whole steps on text that cannot match
  (no ``"."`` + two lowercase letters -> no domain; no ``"@"`` -> no e-mail or
  mention; no ASCII digit touching an Arabic letter -> no step 11 ...).
* Start-of-run lookbehinds make the e-mail and digit/letter patterns linear
  instead of quadratic on long runs; they only skip start positions that
  cannot match.
* arabert's second URL pattern is a PHP-style literal (``@...$@iS``) that can
  never match in Python (``$`` is followed by a literal ``@``), but its nested
  quantifier makes it backtrack exponentially on some ``@http://`` inputs
  (``"@http://" + "ab" * 13`` already takes arabert >20 s); we omit it.  This
  is the one deliberate difference: we return, arabert may not.

Throughput: ~7-9 million chars/s on one core on the seed articles (arabert:
~1 million).

Known quirks inherited on purpose (they are what the checkpoint saw):

* ``info@site.com`` becomes ``[رابط]``, not ``[بريد]``: the URL rule runs first
  and its domain pattern accepts ``@``.
* Any ``<...>`` span is treated as an HTML tag, so ``a < b > c`` -> ``a c``.
* The rules are not perfectly idempotent: ``htttp`` -> ``http`` (step 9)
  -> ``[رابط]`` on a second pass, and ``<>`` -> ``< >`` -> removed on a second
  pass.  Ordinary text is a fixed point.

Example:
    >>> normalize_arabert_v02("قالَ: «جداااا» ١٢٣ https://x.ly")
    'قال : « جداا » 123 [رابط]'
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

__all__ = [
    "EMAIL_TOKEN",
    "MENTION_TOKEN",
    "NORMALIZERS",
    "URL_TOKEN",
    "collapse_repetitions",
    "collapse_whitespace",
    "drop_unsupported_chars",
    "get_normalizer",
    "identity",
    "normalize_arabert_v02",
    "remove_html_tags",
    "replace_emails",
    "replace_mentions",
    "replace_urls",
    "slash_to_dash",
    "space_out_symbols",
    "split_digits_from_letters",
    "strip_tashkeel",
    "strip_tatweel",
    "to_western_digits",
    "unescape_html",
]

# Placeholders used by AraBERT pretraining; the v02 vocab knows them.
URL_TOKEN = "[رابط]"
EMAIL_TOKEN = "[بريد]"
MENTION_TOKEN = "[مستخدم]"

# Replacements are padded so the placeholder never fuses with its neighbours.
_URL_REPL = f" {URL_TOKEN} "
_EMAIL_REPL = f" {EMAIL_TOKEN} "
_MENTION_REPL = f" {MENTION_TOKEN} "

TATWEEL = "\u0640"
# fathatan, dammatan, kasratan, fatha, damma, kasra, shadda, sukun - exactly
# the set the reference strips.  Other marks (maddah above U+0653, hamza above
# U+0654, ...) survive here and end up as tokens of their own in step 10.
_TASHKEEL_RE = re.compile("[\u064b-\u0652]+")
_TASHKEEL_OR_TATWEEL_RE = re.compile("[\u0640\u064b-\u0652]+")

_ARABIC_INDIC_DIGITS = "٠١٢٣٤٥٦٧٨٩"
_TO_WESTERN = str.maketrans(_ARABIC_INDIC_DIGITS, "0123456789")
_HAS_ARABIC_INDIC_DIGIT = re.compile("[\u0660-\u0669]")

# --- URLs -----------------------------------------------------------------
# Applied one after another, each on the output of the previous one: later
# patterns mop up what earlier ones left (a merged alternation would match
# different spans).  Each comes with a gate, a necessary condition that is
# much cheaper to search for, so URL-free text (the common case) costs a few
# fast literal scans instead of seven backtracking ones.
_DOMAIN_CHARS = r"A-Za-z0-9_@:%.+~#=\-"
_URL_RULES: tuple[tuple[str | re.Pattern[str], re.Pattern[str]], ...] = (
    # Domain-like token with an optional scheme, e.g. "www.x.com/a?b=1",
    # "file.txt", "user@x.ly".  The char after "://" may be anything but a
    # newline, and the TLD must end on a (Unicode) word boundary.  Arabic
    # prose is full of "." but rarely of "." + two lowercase ASCII letters.
    (
        re.compile(r"\.[a-z]{2}"),
        re.compile(
            r"(?:https?://.)?(?:www\.)?"
            rf"[{_DOMAIN_CHARS}]{{2,256}}\.[a-z]{{2,6}}\b"
            r"[A-Za-z0-9_@:%+.~#?&/=\-]*"
        ),
    ),
    ("http", re.compile(r"https?://[A-Za-z0-9_./~?=%&\-]+")),
    ("www", re.compile(r"www[A-Za-z0-9_?=%&/.~\-]+")),
    (".com", re.compile(r"[A-Za-z]+\.com")),
    # Whatever is left of a token that starts with "http" / "www".
    ("http", re.compile(r"http\S*")),
    ("www", re.compile(r"www\S*")),
    ("://", re.compile(r"://")),
)

# --- e-mails and mentions ----------------------------------------------------
# ``(?<![\w-])`` / ``(?<!\S)`` only skip start positions that cannot match
# (a later start inside the same run reaches the same "@"), turning a
# quadratic scan into a linear one.
_EMAIL_STRICT_RE = re.compile(r"(?<![\w-])[\w-]+@(?:[\w-]+\.)+[\w-]+")
# A whitespace-free token with an "@" that is neither its first nor last char.
_EMAIL_LOOSE_RE = re.compile(r"(?<!\S)\S[^\s@]*@\S+")
_MENTION_RE = re.compile(r"@\w+")

# --- HTML ----------------------------------------------------------------------
_BR = "<br />"
_HTML_TAG_RE = re.compile(r"</?[^>]+>")

# --- repetitions -------------------------------------------------------------
# Elongation like "جداااا" or "!!!!": keep two so emphasis is still visible.
# Digits are exempt ("1000" must survive).
# Matching any char and exempting digits in the callback is ~2x faster than
# ``(\D)\1\1+``: "." needs no Unicode category lookup per char, and runs of a
# repeated char are rare enough that the callback cost does not matter.
_REPEAT_RE = re.compile(r"(.)\1\1+", re.DOTALL)


def _shorten_run(match: re.Match[str]) -> str:
    run = match.group(0)
    # isdecimal() is exactly the Unicode Nd category that \d matches.
    return run if run[0].isdecimal() else run[:2]


# --- character classes -------------------------------------------------------
# Chars that may touch their neighbours inside a token: ASCII digits and
# letters, core Arabic letters (hamza..ghain, feh..yeh), Arabic-Indic digits
# and the square brackets of the placeholders.
_WORD_CHARS = r"0-9A-Za-z\u0621-\u063a\u0641-\u064a\u0660-\u0669\[\]"
# Every other non-space char is isolated as a token of its own.
_SYMBOL_RE = re.compile(rf"[^{_WORD_CHARS}\s]")

# A digit run glued to an Arabic letter run (either order) is cut out of its
# token: both runs become separate tokens, *also* detached from whatever else
# touched them ("x12ب" -> "x 12 ب").  That is what the pretraining data saw.
# The letter class keeps U+0660..U+066C (Arabic-Indic digits, ٪٫٬) because the
# original rule had them; in the pipeline they are gone or isolated by then.
_ARABIC_LETTERS = "\u0621-\u063a\u0641-\u064a\u0660-\u066c"
# The lookbehinds skip only start positions inside a run whose first position
# already failed (so they cannot change the result) and keep long runs linear.
# They exclude the chars that are in *both* classes (Arabic-Indic digits), as
# a match may end on one of those and the next match must still start there.
# No gate here: the helper must be exact for any input.  The pipeline gates
# it with _ASCII_DIGIT_TOUCHES_LETTER_RE instead.
_DIGITS_THEN_LETTERS_RE = re.compile(rf"(?<![0-9])(\d+)([{_ARABIC_LETTERS}]+)")
_LETTERS_THEN_DIGITS_RE = re.compile(
    r"(?<![\u0621-\u063a\u0641-\u064a\u066a-\u066c])"
    rf"([{_ARABIC_LETTERS}]+)(\d+)"
)
# Inside the pipeline, by the time digits are split from letters, Arabic-Indic
# digits are mapped and every other non-ASCII digit and ٪٫٬ are padded with
# spaces, so an ASCII digit next to an Arabic letter is the only way the rule
# can fire.  Searching for that (starting on the rare [0-9]) is ~10x cheaper
# than running both substitutions over every article.
_ASCII_DIGIT_TOUCHES_LETTER_RE = re.compile(
    r"[0-9](?:[\u0621-\u063a\u0641-\u064a]|(?<=[\u0621-\u063a\u0641-\u064a][0-9]))"
)

# The v02 character set: the word chars above plus tatweel, the remaining
# Arabic marks and signs up to U+066C, alef wasla..high hamza, whitespace and
# this punctuation list (ASCII punctuation minus "&" and "/", plus the Arabic
# comma/semicolon/question mark, typographic quotes and dashes, and two
# oddities present in the original list: Oriya virama U+0B4D and U+06DA).
_PUNCTUATION = (
    "!\"#$%'()*+,-.:;<=>?@[\\]^_`{|}~"
    "\u00ab\u00b7\u00bb\u060c\u061b\u061f\u06da\u0b4d"
    "\u2013\u2014\u2018\u2019\u201c\u201d\u2026"
)
_SUPPORTED_CHARS = r"0-9A-Za-z\u0621-\u063a\u0640-\u066c\u0671-\u0674\s" + "".join(
    re.escape(c) for c in _PUNCTUATION
)
_UNSUPPORTED_RE = re.compile(f"[^{_SUPPORTED_CHARS}]+")


# =============================================================================
# Helpers, one per rule.
# =============================================================================


def unescape_html(text: str) -> str:
    """Decode HTML character references (named, decimal and hex).

    Example:
        >>> unescape_html("AT&amp;T &#1576;")
        'AT&T ب'
    """
    # html.unescape already returns early when there is no "&".
    return html.unescape(text)


def strip_tashkeel(text: str) -> str:
    """Remove the eight Arabic diacritics (harakat, tanween, shadda, sukun).

    Example:
        >>> strip_tashkeel("مُحَمَّدٌ")
        'محمد'
    """
    return _TASHKEEL_RE.sub("", text)


def strip_tatweel(text: str) -> str:
    """Remove tatweel (kashida, U+0640), the purely visual letter stretcher.

    Example:
        >>> strip_tatweel("العـــربية")
        'العربية'
    """
    return text.replace(TATWEEL, "")


def replace_urls(text: str) -> str:
    """Replace URLs and domain-like tokens with `` [رابط] ``.

    The result is padded with spaces; callers collapse whitespace later.

    Example:
        >>> replace_urls("زوروا www.x.com الآن")
        'زوروا  [رابط]  الآن'
    """
    for gate, pattern in _URL_RULES:
        if (gate in text) if isinstance(gate, str) else gate.search(text):
            text = pattern.sub(_URL_REPL, text)
    return text


def replace_emails(text: str) -> str:
    """Replace e-mail-like tokens (anything ``x@y``) with `` [بريد] ``.

    Example:
        >>> replace_emails("راسلوا محمد@ليبيا")
        'راسلوا  [بريد] '
    """
    if "@" not in text:
        return text
    text = _EMAIL_STRICT_RE.sub(_EMAIL_REPL, text)
    return _EMAIL_LOOSE_RE.sub(_EMAIL_REPL, text)


def replace_mentions(text: str) -> str:
    """Replace ``@handle`` mentions with `` [مستخدم] ``.

    Example:
        >>> replace_mentions("شكرا @nabaa_ly")
        'شكرا  [مستخدم] '
    """
    if "@" not in text:
        return text
    return _MENTION_RE.sub(_MENTION_REPL, text)


def remove_html_tags(text: str) -> str:
    """Replace ``<br />`` and any ``<...>`` span with a space.

    Example:
        >>> remove_html_tags("<p>نص</p>")
        ' نص '
    """
    if "<" not in text:
        return text
    # "<br />" goes first: it changes where a tag opened before it can end.
    if _BR in text:
        text = text.replace(_BR, " ")
    return _HTML_TAG_RE.sub(" ", text)


def to_western_digits(text: str) -> str:
    """Map Arabic-Indic digits (U+0660..U+0669) to ASCII ``0-9``.

    Example:
        >>> to_western_digits("عام ٢٠١٩")
        'عام 2019'
    """
    # A regex search is much cheaper than translate() on digit-free text.
    if _HAS_ARABIC_INDIC_DIGIT.search(text) is None:
        return text
    return text.translate(_TO_WESTERN)


def collapse_repetitions(text: str) -> str:
    """Shorten runs of 3+ identical non-digit characters to two.

    Example:
        >>> collapse_repetitions("جداااا!!! 1000")
        'جداا!! 1000'
    """
    return _REPEAT_RE.sub(_shorten_run, text)


def space_out_symbols(text: str) -> str:
    """Put spaces around every char that is not a letter, digit or bracket.

    Punctuation, marks and symbols become separate tokens.

    Example:
        >>> space_out_symbols("«نعم»،")
        ' « نعم »  ، '
    """
    return _SYMBOL_RE.sub(r" \g<0> ", text)


def split_digits_from_letters(text: str) -> str:
    """Split digit runs from Arabic letter runs they touch.

    Both runs are padded with spaces on both sides, so they also come loose
    from Latin letters next to them; ``A320`` alone stays one token.

    Example:
        >>> split_digits_from_letters("3أشخاص A320 A320ب")
        ' 3 أشخاص  A320 A 320 ب '
    """
    text = _DIGITS_THEN_LETTERS_RE.sub(r" \1 \2 ", text)
    return _LETTERS_THEN_DIGITS_RE.sub(r" \1 \2 ", text)


def slash_to_dash(text: str) -> str:
    """Replace ``/`` with ``-``: the v02 vocabulary has no slash.

    Example:
        >>> slash_to_dash("2019/04/04")
        '2019-04-04'
    """
    return text.replace("/", "-")


def drop_unsupported_chars(text: str) -> str:
    """Replace chars outside the AraBERT v02 character set with a space.

    Drops emoji, Persian/Urdu letters, accented Latin, ZWNJ, ``&`` etc.

    Example:
        >>> drop_unsupported_chars("رائع👍 é")
        'رائع   '
    """
    return _UNSUPPORTED_RE.sub(" ", text)


def collapse_whitespace(text: str) -> str:
    """Collapse all (Unicode) whitespace runs to one space and strip the ends.

    Example:
        >>> collapse_whitespace("  أ\\n\\tب  ")
        'أ ب'
    """
    return " ".join(text.split())


_SPELLING_FOLDS = str.maketrans({"أ": "ا", "إ": "ا", "آ": "ا", "ٱ": "ا", "ة": "ه", "ى": "ي"})


def fold_letters(text: str) -> str:
    """Fold the letter variants Arabic news uses interchangeably: diacritics and tatweel removed,
    hamzated alefs to bare alef, teh marbuta to heh, alef maqsura to yeh (whitespace untouched,
    so a regular expression can be folded too).

    Example:
        >>> fold_letters("أجدابيا حَفـتر مصراتة")
        'اجدابيا حفتر مصراته'
    """
    return strip_tatweel(strip_tashkeel(text)).translate(_SPELLING_FOLDS)


def fold_spelling(text: str) -> str:
    """:func:`fold_letters` and whitespace runs to one space: for matching names in a text only
    (the text the model reads is not changed).

    Example:
        >>> fold_spelling("عقيلة  صالح") == fold_spelling("عقيله صالح")
        True
    """
    return collapse_whitespace(fold_letters(text))


# =============================================================================
# Pipelines.
# =============================================================================


def normalize_arabert_v02(text: str) -> str:
    """Normalise text exactly like AraBERT v02 pretraining did.

    Applies rules 1-14 listed in the module docstring.  Empty or
    whitespace-only input gives ``""``.

    Example:
        >>> normalize_arabert_v02("مرحبـــاً بكم في ٢٠٢٤!!!! @nabaa")
        'مرحبا بكم في 2024 ! ! [مستخدم]'
    """
    text = unescape_html(text)
    # Rules 2 and 3 in one pass: both only delete chars.
    text = _TASHKEEL_OR_TATWEEL_RE.sub("", text)
    text = replace_urls(text)
    text = replace_emails(text)
    text = replace_mentions(text)
    text = remove_html_tags(text)
    text = to_western_digits(text)
    text = collapse_repetitions(text)
    text = space_out_symbols(text)
    if _ASCII_DIGIT_TOUCHES_LETTER_RE.search(text):
        text = split_digits_from_letters(text)
    text = slash_to_dash(text)
    text = drop_unsupported_chars(text)
    return collapse_whitespace(text)


def identity(text: str) -> str:
    """Return ``text`` unchanged (the "none" normaliser).

    Example:
        >>> identity("  نص  ")
        '  نص  '
    """
    return text


NORMALIZERS: dict[str, Callable[[str], str]] = {
    "none": identity,
    "arabert_v02": normalize_arabert_v02,
}


def get_normalizer(name: str) -> Callable[[str], str]:
    """Look up a normaliser by name, with a helpful error for typos.

    Example:
        >>> get_normalizer("arabert_v02")("نَص")
        'نص'
    """
    try:
        return NORMALIZERS[name]
    except KeyError:
        known = ", ".join(sorted(NORMALIZERS))
        raise ValueError(f"unknown normalizer {name!r}; known: {known}") from None
