//! sacreBLEU 2.6's segment preprocessing, byte for byte: optional `str.lower()`, `str.rstrip()`,
//! the tokenizers 13a (default), intl, zh, char and none, and the final `str.split()` into tokens.
//!
//! Python's regex substitutions are emulated by single left-to-right scans with the same
//! non-overlapping, leftmost match semantics; the character classes come from the same Unicode
//! databases sacrebleu uses (see `unicode_tables.rs` and its generator).

use crate::unicode_tables as ut;

/// Which sacreBLEU tokenizer to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenizerKind {
    Tok13a,
    Intl,
    Zh,
    Char,
    None,
}

impl TokenizerKind {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "13a" => Some(Self::Tok13a),
            "intl" => Some(Self::Intl),
            "zh" => Some(Self::Zh),
            "char" => Some(Self::Char),
            "none" => Some(Self::None),
            _ => None,
        }
    }
    pub fn signature(self) -> &'static str {
        match self {
            Self::Tok13a => "13a",
            Self::Intl => "intl",
            Self::Zh => "zh",
            Self::Char => "char",
            Self::None => "none",
        }
    }
}

#[inline]
fn in_ranges(table: &[(u32, u32)], cp: u32) -> bool {
    // binary search for the last range starting at or before cp
    let idx = table.partition_point(|&(start, _)| start <= cp);
    idx > 0 && cp <= table[idx - 1].1
}

const fn ascii_ws_table() -> [bool; 128] {
    let mut t = [false; 128];
    let mut b = 9;
    while b <= 13 {
        t[b] = true;
        b += 1;
    }
    let mut b = 0x1c;
    while b <= 0x20 {
        t[b] = true;
        b += 1;
    }
    t
}
static ASCII_WS: [bool; 128] = ascii_ws_table();

/// Python's `str.isspace` for one char (what `str.split()` and `str.rstrip()` use).
#[inline]
pub fn is_py_whitespace(c: char) -> bool {
    let cp = c as u32;
    if cp < 128 {
        ASCII_WS[cp as usize]
    } else {
        in_ranges(ut::PY_WHITESPACE, cp)
    }
}

/// Python `str.rstrip()`.
pub fn py_rstrip(s: &str) -> &str {
    s.trim_end_matches(is_py_whitespace)
}

/// Appends the byte spans of Python's `str.split()` tokens of `s` to `out` (offsets into `s`).
pub fn py_split_spans(s: &str, out: &mut Vec<(u32, u32)>) {
    let bytes = s.as_bytes();
    let n = bytes.len();
    let mut i = 0usize;
    let mut start: Option<usize> = None;
    while i < n {
        let b = bytes[i];
        let (ws, len) = if b < 128 {
            (ASCII_WS[b as usize], 1)
        } else {
            // decode the char starting here (s is valid UTF-8, i is a char boundary)
            let c = s[i..].chars().next().unwrap();
            (is_py_whitespace(c), c.len_utf8())
        };
        if ws {
            if let Some(st) = start.take() {
                out.push((st as u32, i as u32));
            }
        } else if start.is_none() {
            start = Some(i);
        }
        i += len;
    }
    if let Some(st) = start {
        out.push((st as u32, n as u32));
    }
}

// ----------------------------------------------------------------------------------------------
// Python str.lower()

fn lower_char_table(cp: u32) -> Option<&'static [u32; 3]> {
    ut::PY_LOWER.binary_search_by_key(&cp, |&(c, _)| c).ok().map(|i| &ut::PY_LOWER[i].1)
}

fn is_case_ignorable(c: char) -> bool {
    in_ranges(ut::PY_CASE_IGNORABLE, c as u32)
}
fn is_cased(c: char) -> bool {
    in_ranges(ut::PY_CASED, c as u32)
}

/// CPython's `handle_capital_sigma`: is the U+03A3 at char index `i` in a Final_Sigma context?
fn final_sigma(chars: &[char], i: usize) -> bool {
    let mut j = i;
    let mut before: Option<char> = None;
    while j > 0 {
        j -= 1;
        if !is_case_ignorable(chars[j]) {
            before = Some(chars[j]);
            break;
        }
    }
    match before {
        Some(c) if is_cased(c) => {}
        _ => return false,
    }
    for &c in &chars[i + 1..] {
        if !is_case_ignorable(c) {
            return !is_cased(c);
        }
    }
    true
}

/// Python 3's `str.lower()` (full case mapping and the Final_Sigma rule), written into `out`.
pub fn py_lower_into(s: &str, out: &mut String) {
    out.clear();
    if s.is_ascii() {
        out.push_str(s);
        out.make_ascii_lowercase();
        return;
    }
    let has_sigma = s.contains('\u{3A3}');
    let chars: Vec<char> = if has_sigma { s.chars().collect() } else { Vec::new() };
    for (i, c) in s.chars().enumerate() {
        let cp = c as u32;
        if cp < 128 {
            out.push(c.to_ascii_lowercase());
        } else if cp == 0x3A3 {
            out.push(if final_sigma(&chars, i) { '\u{3C2}' } else { '\u{3C3}' });
        } else if let Some(m) = lower_char_table(cp) {
            for &x in m.iter().take_while(|&&x| x != 0) {
                out.push(char::from_u32(x).unwrap());
            }
        } else {
            out.push(c);
        }
    }
}

// ----------------------------------------------------------------------------------------------
// 13a (mteval-v13a) as in sacrebleu.tokenizers.tokenizer_13a + tokenizer_re

/// sequential, non-overlapping `str.replace(from, to)`
fn replace_all(buf: &mut Vec<u8>, tmp: &mut Vec<u8>, from: &[u8], to: &[u8]) {
    if buf.len() < from.len() || !contains(buf, from) {
        return;
    }
    tmp.clear();
    let mut i = 0;
    while i < buf.len() {
        if buf[i..].starts_with(from) {
            tmp.extend_from_slice(to);
            i += from.len();
        } else {
            tmp.push(buf[i]);
            i += 1;
        }
    }
    std::mem::swap(buf, tmp);
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    if needle.len() == 1 {
        return hay.contains(&needle[0]);
    }
    hay.windows(needle.len()).any(|w| w == needle)
}

const fn class13a_table() -> [bool; 256] {
    // [\{-\~\[-\` -\&\(-\+\:-\@\/]
    let mut t = [false; 256];
    let ranges: [(u8, u8); 6] =
        [(b'{', b'~'), (b'[', b'`'), (b' ', b'&'), (b'(', b'+'), (b':', b'@'), (b'/', b'/')];
    let mut r = 0;
    while r < ranges.len() {
        let mut b = ranges[r].0;
        while b <= ranges[r].1 {
            t[b as usize] = true;
            b += 1;
        }
        r += 1;
    }
    t
}
/// Symbols that pass 1 pads with spaces: the class without the space itself.
const fn pad13a_table() -> [bool; 256] {
    let mut t = class13a_table();
    t[b' ' as usize] = false;
    t
}
static PAD_13A: [bool; 256] = pad13a_table();

#[inline]
fn is_digit(b: u8) -> bool {
    b.is_ascii_digit()
}

/// Tokenizes `line` (already lowercased/rstripped) like sacrebleu's Tokenizer13a, into `out`.
/// All patterns are ASCII, and `[^0-9]` meets a multi-byte char only at its last byte (before an
/// ASCII `.`/`,`) or its first byte (after one), so a byte scan equals Python's char scan.
pub fn tok13a_into(line: &str, out: &mut Vec<u8>, tmp: &mut Vec<u8>) {
    let mut buf = std::mem::take(out);
    buf.clear();
    let raw = line.as_bytes();
    // the rare substitutions work on a copy; most lines go straight to pass 1
    let needs_copy = memchr::memchr3(b'<', b'\n', b'&', raw).is_some();
    if needs_copy {
        buf.extend_from_slice(raw);
        if memchr::memchr(b'<', &buf).is_some() {
            replace_all(&mut buf, tmp, b"<skipped>", b"");
        }
        if memchr::memchr(b'\n', &buf).is_some() {
            replace_all(&mut buf, tmp, b"-\n", b"");
            for b in buf.iter_mut() {
                if *b == b'\n' {
                    *b = b' ';
                }
            }
        }
        if memchr::memchr(b'&', &buf).is_some() {
            replace_all(&mut buf, tmp, b"&quot;", b"\"");
            replace_all(&mut buf, tmp, b"&amp;", b"&");
            replace_all(&mut buf, tmp, b"&lt;", b"<");
            replace_all(&mut buf, tmp, b"&gt;", b">");
        }
    }
    if needs_copy {
        regexp_passes(&buf, true, out, tmp);
    } else {
        *out = buf;
        regexp_passes(raw, true, out, tmp);
    }
}

/// sacrebleu's `TokenizerRegexp` (the part 13a and zh share) on `src`, into `out`; `pad_ends`
/// first surrounds the line with spaces (13a's `f' {line} '`; zh passes the line as is).
fn regexp_passes(src: &[u8], pad_ends: bool, out: &mut Vec<u8>, tmp: &mut Vec<u8>) {
    let mut buf = std::mem::take(out);
    // pass 1: symbols get spaces around them. A space is in the class too; it stays single here
    // (runs of spaces are equivalent for every later pass and for split()). Written into a
    // pre-sized buffer (at most 3 bytes per input byte) without per-run copies.
    let pad = usize::from(pad_ends);
    tmp.clear();
    tmp.resize(src.len() * 3 + 2 * pad, 0);
    let mut j = pad;
    if pad_ends {
        tmp[0] = b' ';
    }
    {
        let o = &mut tmp[..];
        for &b in src {
            if PAD_13A[b as usize] {
                o[j] = b' ';
                o[j + 1] = b;
                o[j + 2] = b' ';
                j += 3;
            } else {
                o[j] = b;
                j += 1;
            }
        }
        if pad_ends {
            o[j] = b' ';
        }
    }
    tmp.truncate(j + pad);
    // pass 2: ([^0-9])([\.,]) -> \1 \2 ␠ ; candidates found from the second element
    buf.clear();
    let s = &tmp[..];
    let mut i = 0;
    if memchr::memchr2(b'.', b',', s).is_none() {
        buf.extend_from_slice(s);
    } else {
        while i < s.len() {
            let j = match memchr::memchr2(b'.', b',', &s[i + 1.min(s.len() - i)..]) {
                Some(p) => i + 1 + p,
                None => {
                    buf.extend_from_slice(&s[i..]);
                    break;
                }
            };
            let k = j - 1;
            if !is_digit(s[k]) {
                buf.extend_from_slice(&s[i..k]);
                buf.extend_from_slice(&[s[k], b' ', s[j], b' ']);
                i = j + 1;
            } else {
                buf.extend_from_slice(&s[i..j]);
                i = j;
            }
        }
    }
    // pass 3: ([\.,])([^0-9]) -> ␠\1 \2 ; candidates found from the first element
    tmp.clear();
    let s = &buf[..];
    let mut i = 0;
    while i < s.len() {
        let k = match memchr::memchr2(b'.', b',', &s[i..]) {
            Some(p) if i + p + 1 < s.len() => i + p,
            _ => {
                tmp.extend_from_slice(&s[i..]);
                break;
            }
        };
        tmp.extend_from_slice(&s[i..k]);
        if !is_digit(s[k + 1]) {
            tmp.extend_from_slice(&[b' ', s[k], b' ', s[k + 1]]);
            i = k + 2;
        } else {
            tmp.push(s[k]);
            i = k + 1;
        }
    }
    // pass 4: ([0-9])(-) -> \1 \2 ␠
    let s = &tmp[..];
    if memchr::memchr(b'-', s).is_none() {
        std::mem::swap(&mut buf, tmp);
        *out = buf;
        return;
    }
    buf.clear();
    let mut i = 0;
    while i < s.len() {
        let j = match memchr::memchr(b'-', &s[i + 1.min(s.len() - i)..]) {
            Some(p) => i + 1 + p,
            None => {
                buf.extend_from_slice(&s[i..]);
                break;
            }
        };
        let k = j - 1;
        if is_digit(s[k]) {
            buf.extend_from_slice(&s[i..k]);
            buf.extend_from_slice(&[s[k], b' ', b'-', b' ']);
            i = j + 1;
        } else {
            buf.extend_from_slice(&s[i..j]);
            i = j;
        }
    }
    *out = buf;
}

// ----------------------------------------------------------------------------------------------
// zh as in sacrebleu.tokenizers.tokenizer_zh: str.strip(), spaces around every "Chinese" char, then
// TokenizerRegexp (13a's passes without its language-independent part and without f' {line} ').

/// sacrebleu's `_UCODE_RANGES` as its `start <= char <= end` string comparisons read them. Three
/// entries there are written as 5-hex-digit `\u` escapes, which Python reads as a 4-digit char
/// plus a digit or letter: `'\u20000' <= c <= '\u2a6d6'` holds for U+2001..=U+2A6D and
/// `'\u2f800' <= c <= '\u2fa1d'` for U+2F81..=U+2FA1 (so Extension B itself is not matched).
/// Sorted by start, for `in_ranges`.
static ZH_RANGES: &[(u32, u32)] = &[
    (0x2001, 0x2A6D), // '\u20000'..'\u2a6d6' as Python compares it (covers 0x2600-0x27BF too)
    (0x2E80, 0x2EFF),
    (0x2F00, 0x2FDF), // covers '\u2f800'..'\u2fa1d' read as U+2F81..=U+2FA1
    (0x2FF0, 0x2FFF),
    (0x3000, 0x303F),
    (0x3100, 0x312F),
    (0x31A0, 0x31BF),
    (0x31C0, 0x31EF),
    (0x3200, 0x32FF),
    (0x3300, 0x33FF),
    (0x3400, 0x4DB5),
    (0x4E00, 0x9FBB), // 0x4E00-0x9FA5 and 0x9FA6-0x9FBB
    (0xF900, 0xFA2D),
    (0xFA30, 0xFA6A),
    (0xFA70, 0xFAD9),
    (0xFE10, 0xFE1F),
    (0xFE30, 0xFE4F),
    (0xFF00, 0xFFEF),
];

/// sacrebleu's `TokenizerZh._is_chinese_char`.
#[inline]
pub fn is_zh_char(c: char) -> bool {
    in_ranges(ZH_RANGES, c as u32)
}

/// Tokenizes `line` (already lowercased/rstripped) like sacrebleu's TokenizerZh, into `out`.
pub fn zh_into(line: &str, out: &mut Vec<u8>, tmp: &mut Vec<u8>, spaced: &mut Vec<u8>) {
    let line = line.trim_start_matches(is_py_whitespace);
    spaced.clear();
    let mut utf8 = [0u8; 4];
    for c in line.chars() {
        if is_zh_char(c) {
            spaced.push(b' ');
            spaced.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            spaced.push(b' ');
        } else {
            spaced.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
        }
    }
    regexp_passes(spaced, false, out, tmp);
}

// ----------------------------------------------------------------------------------------------
// intl (mteval-v14 international) as in sacrebleu.tokenizers.tokenizer_intl (regex module classes)

const N: u8 = 1;
const P: u8 = 2;
const S: u8 = 4;

#[inline]
fn intl_class(c: char) -> u8 {
    let cp = c as u32;
    let mut k = 0;
    if in_ranges(ut::REGEX_N, cp) {
        k |= N;
    }
    if in_ranges(ut::REGEX_P, cp) {
        k |= P;
    }
    if in_ranges(ut::REGEX_S, cp) {
        k |= S;
    }
    k
}

/// bit 0: Python whitespace, 1: regex \p{N}, 2: \p{P}, 3: \p{S} (exposed for exhaustive tests).
pub fn char_class_bits(c: char) -> u8 {
    (is_py_whitespace(c) as u8) | (intl_class(c) << 1)
}

/// Tokenizes `line` like sacrebleu's TokenizerV14International, into `out`.
pub fn intl_into(line: &str, out: &mut Vec<u8>, chars: &mut Vec<(char, u8)>, tmp: &mut Vec<(char, u8)>) {
    chars.clear();
    chars.extend(line.chars().map(|c| (c, intl_class(c))));
    let sp = (' ', 0u8);
    // pass 1: (\P{N})(\p{P}) -> \1 \2 ␠
    tmp.clear();
    let mut i = 0;
    while i < chars.len() {
        if i + 1 < chars.len() && chars[i].1 & N == 0 && chars[i + 1].1 & P != 0 {
            tmp.extend_from_slice(&[chars[i], sp, chars[i + 1], sp]);
            i += 2;
        } else {
            tmp.push(chars[i]);
            i += 1;
        }
    }
    // pass 2: (\p{P})(\P{N}) -> ␠\1 \2
    chars.clear();
    let mut i = 0;
    while i < tmp.len() {
        if i + 1 < tmp.len() && tmp[i].1 & P != 0 && tmp[i + 1].1 & N == 0 {
            chars.extend_from_slice(&[sp, tmp[i], sp, tmp[i + 1]]);
            i += 2;
        } else {
            chars.push(tmp[i]);
            i += 1;
        }
    }
    // pass 3: (\p{S}) -> ␠\1␠
    out.clear();
    let mut enc = [0u8; 4];
    for &(c, k) in chars.iter() {
        if k & S != 0 {
            out.push(b' ');
            out.extend_from_slice(c.encode_utf8(&mut enc).as_bytes());
            out.push(b' ');
        } else {
            out.extend_from_slice(c.encode_utf8(&mut enc).as_bytes());
        }
    }
}

// ----------------------------------------------------------------------------------------------

/// Per-thread buffers, reused across segments so that tokenizing allocates nothing in steady state.
#[derive(Default)]
pub struct TokScratch {
    lower: String,
    tmp: Vec<u8>,
    tmp2: Vec<u8>,
    ctmp1: Vec<(char, u8)>,
    ctmp2: Vec<(char, u8)>,
}

/// The preprocessed segment: `text` holds the bytes, `spans` the tokens' byte ranges in it.
#[derive(Default, Clone)]
pub struct Tokens {
    pub text: Vec<u8>,
    pub spans: Vec<(u32, u32)>,
}

impl Tokens {
    #[inline]
    pub fn token(&self, i: usize) -> &[u8] {
        let (a, b) = self.spans[i];
        &self.text[a as usize..b as usize]
    }
    pub fn len(&self) -> usize {
        self.spans.len()
    }
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

/// sacrebleu's `BLEU._preprocess_segment` followed by `line.split()`.
pub fn tokenize_into(
    segment: &str,
    kind: TokenizerKind,
    lowercase: bool,
    scratch: &mut TokScratch,
    out: &mut Tokens,
) {
    let mut lower = std::mem::take(&mut scratch.lower);
    let src: &str = if lowercase {
        py_lower_into(segment, &mut lower);
        &lower
    } else {
        segment
    };
    let line = py_rstrip(src);
    out.spans.clear();
    match kind {
        TokenizerKind::Tok13a => tok13a_into(line, &mut out.text, &mut scratch.tmp),
        TokenizerKind::Intl => intl_into(line, &mut out.text, &mut scratch.ctmp1, &mut scratch.ctmp2),
        TokenizerKind::Zh => zh_into(line, &mut out.text, &mut scratch.tmp, &mut scratch.tmp2),
        TokenizerKind::Char | TokenizerKind::None => {
            out.text.clear();
            out.text.extend_from_slice(line.as_bytes());
        }
    }
    // SAFETY-free: every transformation above keeps valid UTF-8 (it only inserts ASCII spaces
    // and removes or replaces whole ASCII substrings).
    let text = std::str::from_utf8(&out.text).expect("tokenizer output is UTF-8");
    if kind == TokenizerKind::Char {
        // " ".join(line) then split(): every non-whitespace char is a token
        for (i, c) in text.char_indices() {
            if !is_py_whitespace(c) {
                out.spans.push((i as u32, (i + c.len_utf8()) as u32));
            }
        }
    } else {
        py_split_spans(text, &mut out.spans);
    }
    scratch.lower = lower;
}

/// Convenience for tests: the tokens as a space-joined string (what sacrebleu's tokenizer returns
/// after `' '.join(line.split())`).
pub fn tokenize_to_string(segment: &str, kind: TokenizerKind, lowercase: bool) -> String {
    let mut scratch = TokScratch::default();
    let mut toks = Tokens::default();
    tokenize_into(segment, kind, lowercase, &mut scratch, &mut toks);
    let parts: Vec<&str> = (0..toks.len()).map(|i| std::str::from_utf8(toks.token(i)).unwrap()).collect();
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirteen_a_examples() {
        // expected strings from sacrebleu 2.6 Tokenizer13a
        let t = |s| tokenize_to_string(s, TokenizerKind::Tok13a, false);
        assert_eq!(t("Hello, world! It costs $3.50, ok."), "Hello , world ! It costs $ 3.50 , ok .");
        assert_eq!(t("1-2 a-b &amp;lt; x-\ny"), "1 - 2 a-b < xy");
        assert_eq!(t(""), "");
        assert_eq!(t("   \t "), "");
    }

    #[test]
    fn lower_final_sigma() {
        let mut out = String::new();
        py_lower_into("ΟΔΟΣ Σ", &mut out);
        assert_eq!(out, "οδος σ");
        py_lower_into("\u{130}", &mut out);
        assert_eq!(out, "i\u{307}");
    }

    #[test]
    fn python_whitespace() {
        assert!(is_py_whitespace('\u{1c}'));
        assert!(is_py_whitespace('\u{3000}'));
        assert!(!is_py_whitespace('\u{200b}'));
    }
}
