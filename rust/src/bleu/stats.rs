//! Per-segment sufficient statistics (hypothesis length, closest reference length, matched and
//! total n-grams per order), laid out as sacreBLEU's list.

use super::formula::MAX_ORDER;
use super::ngrams::{CountTable, Interner, LongKey, NgramKey};
use crate::tokenize::{tokenize_into, TokScratch, TokenizerKind, Tokens};

/// Room for one segment's statistics at the highest order: hyp_len, ref_len, correct[1..=order],
/// total[1..=order].
pub const NUM_STATS: usize = 2 + 2 * MAX_ORDER;

#[derive(Clone, Copy, Debug)]
pub struct BleuOptions {
    pub tokenizer: TokenizerKind,
    pub lowercase: bool,
    pub max_order: usize,
}

/// sacrebleu's `_get_closest_ref_len`: the reference length closest to hyp_len, the shorter on ties.
pub fn closest_ref_len(hyp_len: i64, ref_lens: &[i64]) -> i64 {
    let mut closest_diff = -1i64;
    let mut closest_len = -1i64;
    for &r in ref_lens {
        let diff = (hyp_len - r).abs();
        if closest_diff == -1 || diff < closest_diff {
            closest_diff = diff;
            closest_len = r;
        } else if diff == closest_diff && r < closest_len {
            closest_len = r;
        }
    }
    closest_len
}

/// Per-thread scratch space for segment statistics (reused: no allocation per segment in steady
/// state).
#[derive(Default)]
pub struct SegmentScratch {
    tok: TokScratch,
    hyp: Tokens,
    refs: Vec<Tokens>,
    interner: Interner,
    hyp_ids: Vec<u32>,
    ref_ids: Vec<u32>,
    ref_bounds: Vec<(usize, usize)>,
    table64: CountTable<u64>,
    table128: CountTable<u128>,
    table_long: CountTable<LongKey>,
    ref_lens: Vec<i64>,
}

/// A segment whose references are all missing (None). sacreBLEU raises on it, and it has no closest
/// reference length: scoring it would put a -1 into the statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoReference;

/// Statistics of one segment: `hyp` against the references in `refs` (None = missing reference,
/// as in sacrebleu's variable-reference streams; at least one must be present). Writes NUM_STATS
/// values into `out` (only the first 2 + 2 * max_order are meaningful, laid out as sacrebleu's list).
pub fn segment_stats(
    hyp: &str,
    refs: &[Option<&str>],
    opts: &BleuOptions,
    s: &mut SegmentScratch,
    out: &mut [i64],
) -> Result<(), NoReference> {
    let nrefs = refs.iter().filter(|r| r.is_some()).count();
    if nrefs == 0 {
        return Err(NoReference);
    }
    let mo = opts.max_order;
    tokenize_into(hyp, opts.tokenizer, opts.lowercase, &mut s.tok, &mut s.hyp);
    if s.refs.len() < nrefs {
        s.refs.resize_with(nrefs, Tokens::default);
    }
    for (r, toks) in refs.iter().flatten().zip(s.refs.iter_mut()) {
        tokenize_into(r, opts.tokenizer, opts.lowercase, &mut s.tok, toks);
    }
    s.ref_lens.clear();
    for r in &s.refs[..nrefs] {
        s.ref_lens.push(r.len() as i64);
    }
    let hyp_len = s.hyp.len() as i64;
    let ref_len = closest_ref_len(hyp_len, &s.ref_lens);
    out.iter_mut().for_each(|x| *x = 0);
    out[0] = hyp_len;
    out[1] = ref_len;

    // one id space for the hypothesis and every reference: hyp first, then each reference
    let total_tokens = s.hyp.len() + s.ref_lens.iter().sum::<i64>() as usize;
    s.interner.reset(total_tokens);
    s.hyp_ids.clear();
    s.ref_ids.clear();
    s.ref_bounds.clear();
    let hyp_distinct;
    {
        // texts[0] = hyp, texts[1..] = refs (a small fixed array for the usual 1-4 references)
        let mut small: [&Tokens; 5] = [&s.hyp; 5];
        let mut big: Vec<&Tokens> = Vec::new();
        let texts: &[&Tokens] = if nrefs < 5 {
            for (k, r) in s.refs[..nrefs].iter().enumerate() {
                small[k + 1] = r;
            }
            &small[..nrefs + 1]
        } else {
            big.push(&s.hyp);
            big.extend(s.refs[..nrefs].iter());
            &big
        };
        s.interner.intern_all(texts, 0, &mut s.hyp_ids);
        hyp_distinct = s.interner.keys.len() as u32;
        for t in 1..=nrefs {
            let a = s.ref_ids.len();
            s.interner.intern_all(texts, t, &mut s.ref_ids);
            s.ref_bounds.push((a, s.ref_ids.len()));
        }
    }
    let ref_ngrams: usize = s.ref_lens.iter().map(|&l| (l as usize) * mo).sum();
    let distinct = s.interner.keys.len();
    if mo > 4 {
        count_with::<LongKey>(
            &mut s.table_long,
            &s.hyp_ids,
            hyp_distinct,
            &s.ref_ids,
            &s.ref_bounds,
            ref_ngrams,
            mo,
            out,
        );
    } else if distinct < (1usize << 16) - 1 {
        count_with::<u64>(
            &mut s.table64,
            &s.hyp_ids,
            hyp_distinct,
            &s.ref_ids,
            &s.ref_bounds,
            ref_ngrams,
            mo,
            out,
        );
    } else {
        count_with::<u128>(
            &mut s.table128,
            &s.hyp_ids,
            hyp_distinct,
            &s.ref_ids,
            &s.ref_bounds,
            ref_ngrams,
            mo,
            out,
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn count_with<K: NgramKey>(
    table: &mut CountTable<K>,
    hyp_ids: &[u32],
    hyp_distinct: u32,
    ref_ids: &[u32],
    ref_bounds: &[(usize, usize)],
    ref_ngrams: usize,
    mo: usize,
    out: &mut [i64],
) {
    debug_assert!(K::BITS as usize * mo <= std::mem::size_of::<K>() * 8);
    table.reset(ref_ngrams.max(1));
    // Ids 1..=hyp_distinct are the hypothesis's tokens (it is interned first): a reference n-gram
    // holding any other token can never match, so it (and every longer one through it) is skipped.
    for (r, &(a, b)) in ref_bounds.iter().enumerate() {
        let ids = &ref_ids[a..b];
        for i in 0..ids.len() {
            if ids[i] > hyp_distinct {
                continue;
            }
            let mut key = K::from_id(ids[i]);
            table.insert_ref(key, r as u32);
            for n in 1..mo.min(ids.len() - i) {
                let id = ids[i + n];
                if id > hyp_distinct {
                    break;
                }
                key = key.push(id);
                table.insert_ref(key, r as u32);
            }
        }
    }
    let mut correct = [0i64; MAX_ORDER];
    let mut total = [0i64; MAX_ORDER];
    // An n-gram no reference has cannot be extended into one a reference has (a reference holding
    // the longer n-gram holds its prefix), so the longer ones at that position skip the lookup.
    let len = hyp_ids.len();
    for i in 0..len {
        let mut key = K::from_id(hyp_ids[i]);
        let mut present = true;
        for n in 0..mo.min(len - i) {
            if n > 0 {
                key = key.push(hyp_ids[i + n]);
            }
            total[n] += 1;
            if present {
                match table.take(key) {
                    Some(true) => correct[n] += 1,
                    Some(false) => {}
                    None => present = false,
                }
            }
        }
    }
    for n in 0..mo {
        out[2 + n] = correct[n];
        out[2 + mo + n] = total[n];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bleu::formula::{compute_bleu, Smooth};
    use crate::tokenize::tokenize_to_string;

    fn opts() -> BleuOptions {
        BleuOptions { tokenizer: TokenizerKind::Tok13a, lowercase: false, max_order: 4 }
    }

    #[test]
    fn stats_simple() {
        let mut s = SegmentScratch::default();
        let mut out = [0i64; NUM_STATS];
        segment_stats("the cat the cat", &[Some("the cat sat")], &opts(), &mut s, &mut out).unwrap();
        // unigrams: the x2 (ref 1), cat x2 (ref 1) -> 2 of 4; bigrams: the cat x2 (ref 1), cat the -> 1 of 3
        assert_eq!(out[..10], [4, 3, 2, 1, 0, 0, 4, 3, 2, 1]);
    }

    #[test]
    fn multi_ref_max_and_closest() {
        let mut s = SegmentScratch::default();
        let mut out = [0i64; NUM_STATS];
        segment_stats("a a a", &[Some("a b"), Some("a a c d"), None], &opts(), &mut s, &mut out).unwrap();
        assert_eq!(out[0], 3);
        assert_eq!(out[1], 2); // |3-2| == |3-4|, the shorter wins
        assert_eq!(out[2], 2); // max count of "a" over references is 2
    }

    /// Plain reference: n-grams as vectors of token strings counted in a HashMap, clipped by the
    /// max count over references (sacrebleu's definition).
    fn naive_stats(hyp: &str, refs: &[&str], mo: usize) -> Vec<i64> {
        use std::collections::HashMap;
        let toks = |s: &str| {
            tokenize_to_string(s, TokenizerKind::Tok13a, false)
                .split(' ')
                .filter(|t| !t.is_empty())
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
        };
        let grams = |t: &[String]| {
            let mut m: HashMap<Vec<String>, i64> = HashMap::new();
            for n in 1..=mo {
                for w in t.windows(n) {
                    *m.entry(w.to_vec()).or_default() += 1;
                }
            }
            m
        };
        let h = toks(hyp);
        let mut ref_max: HashMap<Vec<String>, i64> = HashMap::new();
        let mut lens = vec![];
        for r in refs {
            let t = toks(r);
            lens.push(t.len() as i64);
            for (g, c) in grams(&t) {
                let e = ref_max.entry(g).or_default();
                *e = (*e).max(c);
            }
        }
        let mut out = vec![0i64; 2 + 2 * mo];
        out[0] = h.len() as i64;
        out[1] = closest_ref_len(h.len() as i64, &lens);
        for (g, c) in grams(&h) {
            let n = g.len();
            out[2 + mo + n - 1] += c;
            out[2 + n - 1] += c.min(*ref_max.get(&g).unwrap_or(&0));
        }
        out
    }

    #[test]
    fn interning_matches_plain_counting_on_tricky_tokens() {
        // long tokens sharing their first 8 bytes, tokens differing only by a trailing NUL or in
        // length, tokens at the very end of the text (short loads), several references
        let pieces = [
            "abcdefgh",
            "abcdefghX",
            "abcdefghY",
            "abcdefghXY",
            "a\u{0}",
            "a",
            "ab",
            "\u{0}",
            "zzzzzzzzzzzzzzzzzzzzzz",
            "zzzzzzzzzzzzzzzzzzzzzy",
            "é",
            "éé",
            "日本語テキスト",
        ];
        let mut seed = 12345u64;
        fn next(seed: &mut u64) -> usize {
            *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (*seed >> 33) as usize
        }
        fn text(seed: &mut u64, pieces: &[&str]) -> String {
            let k = next(seed) % 30;
            (0..k).map(|_| pieces[next(seed) % pieces.len()]).collect::<Vec<_>>().join(" ")
        }
        let mut s = SegmentScratch::default();
        let mut out = [0i64; NUM_STATS];
        for k in 0..900 {
            // orders 4 (packed integer keys) and 1..=9 (5..=9: array keys)
            let mo = if k < 400 { 4 } else { 1 + k % MAX_ORDER };
            let opts = BleuOptions { max_order: mo, ..opts() };
            let hyp = text(&mut seed, &pieces);
            let refs: Vec<String> = (0..1 + next(&mut seed) % 3).map(|_| text(&mut seed, &pieces)).collect();
            let ref_opts: Vec<Option<&str>> = refs.iter().map(|r| Some(r.as_str())).collect();
            segment_stats(&hyp, &ref_opts, &opts, &mut s, &mut out).unwrap();
            let r: Vec<&str> = refs.iter().map(|r| r.as_str()).collect();
            assert_eq!(
                out[..2 + 2 * mo].to_vec(),
                naive_stats(&hyp, &r, mo),
                "order {mo} hyp {hyp:?} refs {refs:?}"
            );
        }
    }

    #[test]
    fn perfect_match_is_100() {
        let mut s = SegmentScratch::default();
        let mut out = [0i64; NUM_STATS];
        segment_stats("a b c d e", &[Some("a b c d e")], &opts(), &mut s, &mut out).unwrap();
        let sc = compute_bleu(&out, 4, Smooth::Exp, true);
        assert!((sc.score - 100.0).abs() < 1e-12);
    }

    #[test]
    fn a_segment_without_any_reference_is_an_error() {
        let mut s = SegmentScratch::default();
        let mut out = [7i64; NUM_STATS];
        assert_eq!(segment_stats("a b", &[], &opts(), &mut s, &mut out), Err(NoReference));
        assert_eq!(segment_stats("a b", &[None, None], &opts(), &mut s, &mut out), Err(NoReference));
        assert_eq!(segment_stats("a b", &[None, Some("a b")], &opts(), &mut s, &mut out), Ok(()));
        assert_eq!(out[1], 2);
    }
}
