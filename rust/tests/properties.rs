//! Generated inputs for the tokenizers and the answer extraction (a bounded fuzz run inside
//! `cargo test --release`: a fixed case count, and a deadline that turns a hang into a failure).
//! Each property: no panic, and the same result as a plain transcription of the original patterns
//! with the `regex` crate (sacreBLEU's tokenizer_13a/tokenizer_re; the paper's evaluate.py
//! `re.findall(r'-?\d+\.?\d*', ...)` and its label alternations).
//!
//! Unicode classes: `\d` is category Nd in both Python's `re` and the `regex` crate, but their
//! Unicode versions differ, so digits and whitespace are drawn from characters assigned long ago;
//! lowercasing, `rstrip` and `split` use the crate's Python twins (`py_lower_into`,
//! `is_py_whitespace`), which tests/metrics/test_unicode_tables.py checks on every code point.

use std::sync::{mpsc, OnceLock};
use std::time::Duration;

use kdlens_native::answers::{extract, first_match, last_number, Answer, Rule};
use kdlens_native::tokenize::{is_py_whitespace, py_lower_into, tokenize_to_string, TokenizerKind};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use regex::Regex;

const CASES: u32 = 3000;
const DEADLINE: Duration = Duration::from_secs(120);

/// Pieces that exercise every branch: 13a's symbol class, `.`/`,` next to digits or not, `-` after a
/// digit, the mteval substitutions, multi-byte letters and digits, Python-only whitespace.
const PIECES: &[&str] = &[
    "a",
    "Z",
    "cat",
    "Σ",
    "ς",
    "İ",
    "é",
    "日本",
    "1",
    "0",
    "42",
    "٣",
    "९",
    "７",
    ".",
    ",",
    "-",
    "--",
    "'",
    "\"",
    "(",
    ")",
    "$",
    "%",
    "&",
    "/",
    ":",
    "@",
    "[",
    "`",
    "{",
    "~",
    "^",
    "\\",
    " ",
    "  ",
    "\t",
    "\n",
    "-\n",
    "\u{a0}",
    "\u{3000}",
    "\u{1f}",
    "\u{85}",
    "&quot;",
    "&amp;",
    "&lt;",
    "&gt;",
    "<skipped>",
    "e",
    "x.",
    ".5",
    "3.",
    "1,000",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::collection::vec(proptest::sample::select(PIECES), 0..40).prop_map(|v| v.concat()),
        1 => proptest::collection::vec(any::<char>().prop_filter("a digit newer than Unicode 14", |c| {
            !digit_after_unicode_14(*c)
        }), 0..40)
        .prop_map(|v| v.into_iter().collect()),
    ]
}

/// Decimal digits (Nd) added after Unicode 14.0. kdlens follows Python 3.11's `re` (Unicode 14.0);
/// the `regex` crate used as the reference here knows a newer Unicode, where these are `\d`.
fn digit_after_unicode_14(c: char) -> bool {
    const RANGES: &[(u32, u32)] = &[
        (0x10D40, 0x10D49), // Garay (16.0)
        (0x116D0, 0x116E3), // Myanmar Extended-C (16.0)
        (0x11BF0, 0x11BF9), // Sunuwar (16.0)
        (0x11DE0, 0x11DE9), // Tolong Siki (17.0)
        (0x11F50, 0x11F59), // Kawi (15.0)
        (0x16130, 0x16139), // Gurung Khema (16.0)
        (0x16D70, 0x16D79), // Kirat Rai (16.0)
        (0x1CCF0, 0x1CCF9), // outlined digits (16.0)
        (0x1E4F0, 0x1E4F9), // Nag Mundari (15.0)
        (0x1E5F1, 0x1E5FA), // Ol Onal (16.0)
    ];
    let u = c as u32;
    RANGES.iter().any(|&(lo, hi)| (lo..=hi).contains(&u))
}

/// Runs a property on its own thread; a run past DEADLINE (a hang) fails the test.
fn bounded<S: Strategy + Send + 'static>(
    name: &'static str,
    strategy: S,
    property: fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut runner =
            TestRunner::new(Config { cases: CASES, failure_persistence: None, ..Config::default() });
        let result = runner.run(&strategy, property).map_err(|e| e.to_string());
        let _ = tx.send(result);
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{name}: {e}"),
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{name}: no result within {DEADLINE:?} (a hang)"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{name}: the property panicked"),
    }
}

fn py_split_join(s: &str) -> String {
    s.split(is_py_whitespace).filter(|t| !t.is_empty()).collect::<Vec<_>>().join(" ")
}

fn preprocess(line: &str, lowercase: bool) -> String {
    let mut lower = String::new();
    let s = if lowercase {
        py_lower_into(line, &mut lower);
        lower.as_str()
    } else {
        line
    };
    s.trim_end_matches(is_py_whitespace).to_string()
}

/// sacreBLEU's Tokenizer13a + TokenizerRegexp, pattern for pattern.
fn tok13a_transcribed(line: &str) -> String {
    let mut line = line.replace("<skipped>", "").replace("-\n", "").replace('\n', " ");
    if line.contains('&') {
        line = line.replace("&quot;", "\"").replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">");
    }
    let mut line = format!(" {line} ");
    let rules = [
        (r"([\{-\~\[-\` -\&\(-\+\:-\@\/])", " $1 "),
        (r"([^0-9])([\.,])", "$1 $2 "),
        (r"([\.,])([^0-9])", " $1 $2"),
        (r"([0-9])(-)", "$1 $2 "),
    ];
    for (pattern, replacement) in rules {
        line = Regex::new(pattern).unwrap().replace_all(&line, replacement).into_owned();
    }
    py_split_join(&line)
}

#[test]
fn tokenizers_equal_their_transcriptions() {
    bounded("13a", (text(), any::<bool>()), |(s, lowercase)| {
        let line = preprocess(&s, lowercase);
        prop_assert_eq!(tokenize_to_string(&s, TokenizerKind::Tok13a, lowercase), tok13a_transcribed(&line));
        // none: split(); char: " ".join(line) then split()
        prop_assert_eq!(tokenize_to_string(&s, TokenizerKind::None, lowercase), py_split_join(&line));
        let chars: Vec<String> = line.chars().map(String::from).collect();
        prop_assert_eq!(
            tokenize_to_string(&s, TokenizerKind::Char, lowercase),
            py_split_join(&chars.join(" "))
        );
        // intl has no transcription here (Unicode property classes differ in version between the
        // two regex engines); it must still not panic
        let _ = tokenize_to_string(&s, TokenizerKind::Intl, lowercase);
        Ok(())
    });
}

#[test]
fn last_number_equals_the_papers_findall() {
    static NUMBER: OnceLock<Regex> = OnceLock::new();
    bounded("last_number", text(), |s| {
        // sentence.replace(',', ''); re.findall(r'-?\d+\.?\d*', sentence)[-1]
        let no_commas = s.replace(',', "");
        let number = NUMBER.get_or_init(|| Regex::new(r"-?\d+\.?\d*").unwrap());
        let expected = number.find_iter(&no_commas).last().map(|m| m.as_str().to_string());
        prop_assert_eq!(last_number(&s), expected.clone());
        match extract(&s, &Rule::LastNumber { tolerance: 1e-4 }) {
            Some(Answer::Number(t, _)) => prop_assert_eq!(Some(t), expected),
            other => prop_assert!(other.is_none() && expected.is_none(), "{:?}", other),
        }
        Ok(())
    });
}

fn labels() -> impl Strategy<Value = Vec<String>> {
    let piece = proptest::sample::select(&["a", "b", "A", "1", " ", "é", "ab", "true", "tru"][..]);
    proptest::collection::vec(proptest::collection::vec(piece, 1..4).prop_map(|v| v.concat()), 1..6)
}

#[test]
fn first_match_equals_the_label_alternation() {
    bounded("first_match", (text(), labels()), |(s, labels)| {
        // (l1)|(l2)|...: leftmost position, first alternative there, as Python's re
        let pattern = labels.iter().map(|l| format!("({})", regex::escape(l))).collect::<Vec<_>>().join("|");
        let expected = Regex::new(&pattern)
            .unwrap()
            .captures(&s)
            .map(|c| (1..=labels.len()).find(|&k| c.get(k).is_some()).unwrap() - 1);
        prop_assert_eq!(first_match(&s, &labels), expected);
        Ok(())
    });
}
