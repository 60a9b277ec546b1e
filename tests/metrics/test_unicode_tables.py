"""Every code point: kdlens's character classes equal those sacrebleu relies on.

Python's str.isspace (str.split / rstrip), the regex module's \\p{N}, \\p{P}, \\p{S} (intl tokenizer),
str.isdecimal (re's \\d in the answer rules) and str.lower (lowercase option, Final_Sigma included).
The tables in rust/src/unicode_tables.rs were generated from a Python with a given Unicode version;
on a Python with another version these comparisons cannot hold, and the tests say so.
"""

import unicodedata

import pytest

regex = pytest.importorskip("regex")

from kdlens import _native  # noqa: E402

pytestmark = pytest.mark.skipif(
    unicodedata.unidata_version != _native.PYTHON_UNIDATA_VERSION
    or regex.__version__ != _native.REGEX_VERSION,
    reason=f"tables generated for Unicode {_native.PYTHON_UNIDATA_VERSION} / regex "
    f"{_native.REGEX_VERSION}; regenerate with rust/src/gen_unicode_tables.py")

CODE_POINTS = [cp for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF]


def test_character_classes_on_every_code_point():
    bits = _native.char_classes()
    rx = {k: regex.compile(rf"\p{{{k}}}") for k in "NPS"}
    mismatches = []
    for cp in CODE_POINTS:
        c = chr(cp)
        expected = (c.isspace() | (rx["N"].match(c) is not None) << 1
                    | (rx["P"].match(c) is not None) << 2 | (rx["S"].match(c) is not None) << 3
                    | c.isdecimal() << 4)
        if bits[cp] != expected:
            mismatches.append(hex(cp))
    assert not mismatches, mismatches[:20]


def test_lowercase_on_every_code_point():
    # one char at a time (in a space-separated string), then Final_Sigma contexts
    for start in range(0, len(CODE_POINTS), 50_000):
        text = " ".join(chr(cp) for cp in CODE_POINTS[start:start + 50_000])
        assert _native.py_lower(text) == text.lower()
    sample = [chr(cp) for cp in CODE_POINTS[::97]] + ["\u0345", "'", "\u00ad", "A", "1", "\u0130"]
    for c in sample:
        for s in (c + "\u03a3", "A" + c + "\u03a3", "A\u03a3" + c, c + "\u03a3" + c, "\u03a3" + c):
            assert _native.py_lower(s) == s.lower(), (hex(ord(c)), s)
