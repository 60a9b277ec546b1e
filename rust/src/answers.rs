//! Answer extraction the paper's way (LLM-Adapters' evaluate.py / commonsense_evaluate.py), and the
//! comparisons built on it (teacher-student agreement, accuracy against gold).
//!
//! * `LastNumber`: remove commas, take the LAST match of `-?\d+\.?\d*` (Python `re`, where `\d` is
//!   any Unicode decimal digit), read it as a float; correct when |gold - pred| <= tolerance.
//! * `FirstMatch(labels)`: the FIRST match of the alternation `l1|l2|...` (leftmost position, first
//!   alternative at that position), case-sensitive; compared as exact strings. AQuA is
//!   `FirstMatch([A, B, C, D, E])`; commonsense sets use their lowercase label patterns.

use crate::unicode_tables::PY_DECIMAL;

#[derive(Clone, Debug, PartialEq)]
pub enum Rule {
    LastNumber { tolerance: f64 },
    FirstMatch { labels: Vec<String> },
}

/// Value of a Python decimal digit char (`str.isdecimal`), else None.
#[inline]
pub fn py_decimal_value(c: char) -> Option<u32> {
    let cp = c as u32;
    if c.is_ascii_digit() {
        return Some(cp - 0x30);
    }
    if cp < 128 {
        return None;
    }
    let idx = PY_DECIMAL.partition_point(|&(start, _, _)| start <= cp);
    if idx == 0 {
        return None;
    }
    let (start, end, v0) = PY_DECIMAL[idx - 1];
    if cp <= end {
        Some(v0 + (cp - start))
    } else {
        None
    }
}

/// The last `-?\d+\.?\d*` match in `text` with commas removed, as a string (commas dropped).
pub fn last_number(text: &str) -> Option<String> {
    let chars: Vec<char> = text.chars().filter(|&c| c != ',').collect();
    let is_d = |c: char| py_decimal_value(c).is_some();
    let mut last: Option<(usize, usize)> = None;
    let mut i = 0;
    while i < chars.len() {
        let start = i;
        let mut j = i;
        if chars[j] == '-' && j + 1 < chars.len() && is_d(chars[j + 1]) {
            j += 1;
        }
        if !is_d(chars[j]) {
            i += 1;
            continue;
        }
        while j < chars.len() && is_d(chars[j]) {
            j += 1;
        }
        if j < chars.len() && chars[j] == '.' {
            j += 1;
            while j < chars.len() && is_d(chars[j]) {
                j += 1;
            }
        }
        last = Some((start, j));
        i = j;
    }
    last.map(|(a, b)| chars[a..b].iter().collect())
}

/// Python `float()` of a matched number or a gold string: surrounding whitespace stripped,
/// Unicode decimal digits read as ASCII, commas removed (gold files sometimes carry "1,000").
pub fn parse_float(s: &str) -> Option<f64> {
    let t = s.trim_matches(crate::tokenize::is_py_whitespace);
    let mut ascii = String::with_capacity(t.len());
    for c in t.chars() {
        if c == ',' {
            continue;
        }
        match py_decimal_value(c) {
            Some(v) => ascii.push(char::from_digit(v, 10).unwrap()),
            None => ascii.push(c),
        }
    }
    if ascii.is_empty() || ascii.contains('_') {
        return None;
    }
    ascii.parse::<f64>().ok()
}

/// The first match of the alternation of `labels` in `text`: (byte start, label index).
pub fn first_match(text: &str, labels: &[String]) -> Option<usize> {
    let bytes = text.as_bytes();
    for i in 0..bytes.len() {
        for (k, l) in labels.iter().enumerate() {
            if !l.is_empty() && bytes[i..].starts_with(l.as_bytes()) {
                return Some(k);
            }
        }
    }
    None
}

/// An extracted answer: the matched text, and for numbers its float value.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    Number(String, f64),
    Label(usize),
}

pub fn extract(text: &str, rule: &Rule) -> Option<Answer> {
    match rule {
        Rule::LastNumber { .. } => last_number(text).map(|s| {
            let v = parse_float(&s).unwrap_or(f64::INFINITY);
            Answer::Number(s, v)
        }),
        Rule::FirstMatch { labels } => first_match(text, labels).map(Answer::Label),
    }
}

pub fn answer_text(a: &Answer, rule: &Rule) -> String {
    match (a, rule) {
        (Answer::Number(s, _), _) => s.clone(),
        (Answer::Label(k), Rule::FirstMatch { labels }) => labels[*k].clone(),
        _ => unreachable!(),
    }
}

/// Two extracted answers agree (LastNumber: |a - b| <= tolerance; labels: the same label).
pub fn answers_agree(a: &Answer, b: &Answer, rule: &Rule) -> bool {
    match (a, b, rule) {
        (Answer::Number(_, x), Answer::Number(_, y), Rule::LastNumber { tolerance }) => {
            (x - y).abs() <= *tolerance
        }
        (Answer::Label(x), Answer::Label(y), _) => x == y,
        _ => false,
    }
}

/// Agreement of two outputs: both must yield an answer, and the answers agree.
pub fn outputs_agree(a: &str, b: &str, rule: &Rule) -> bool {
    match (extract(a, rule), extract(b, rule)) {
        (Some(x), Some(y)) => answers_agree(&x, &y, rule),
        _ => false,
    }
}

/// A gold answer that a `LastNumber` rule cannot read as a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoldNotANumber;

/// Gold comparison. Err when a LastNumber gold is not a number.
pub fn output_correct(output: &str, gold: &str, rule: &Rule) -> Result<bool, GoldNotANumber> {
    match rule {
        Rule::LastNumber { tolerance } => {
            let g = parse_float(gold).ok_or(GoldNotANumber)?;
            Ok(match extract(output, rule) {
                Some(Answer::Number(_, v)) => (g - v).abs() <= *tolerance,
                _ => false,
            })
        }
        Rule::FirstMatch { labels } => Ok(match first_match(output, labels) {
            Some(k) => labels[k] == gold,
            None => false,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_number_rules() {
        assert_eq!(last_number("He has 1,234 apples and -5.5 pears. The answer is 18."), Some("18.".into()));
        assert_eq!(last_number("5-3"), Some("-3".into()));
        assert_eq!(last_number("no digits"), None);
        assert_eq!(last_number("--7"), Some("-7".into()));
        assert_eq!(parse_float("18."), Some(18.0));
        assert_eq!(last_number("\u{663}.\u{665}"), Some("\u{663}.\u{665}".into()));
        assert_eq!(parse_float("\u{663}.\u{665}"), Some(3.5));
    }

    #[test]
    fn labels_first_match() {
        let aqua = Rule::FirstMatch { labels: "ABCDE".chars().map(|c| c.to_string()).collect() };
        assert_eq!(extract("Answer: C", &aqua), Some(Answer::Label(0)));
        let boolq = Rule::FirstMatch { labels: vec!["true".into(), "false".into()] };
        assert_eq!(extract("it is false, not true", &boolq), Some(Answer::Label(1)));
        assert!(!outputs_agree("no", "true", &boolq));
    }
}
