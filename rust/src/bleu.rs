//! BLEU exactly as sacreBLEU 2.6 computes it: per-segment sufficient statistics (hypothesis
//! length, closest reference length, matched and total n-grams per order) and the score from
//! statistics with smoothing (none, floor, add-k, exp) and effective order.
//!
//! Speed: tokens of one segment are interned to small integer ids (tokens of up to 8 bytes compared
//! as one machine word plus length, longer ones by hash and bytes), n-grams of up to 4 ids are
//! packed into one integer key (16-bit ids in a u64, 32-bit ids in a u128 when a segment has 65535+
//! distinct tokens) and counted in a reused open-addressing table whose slots hold key and counts
//! together; epoch stamps empty both tables between segments without clearing them, and all buffers
//! live in per-thread scratch space, so a segment allocates nothing in steady state. Segments are
//! independent; the results never depend on threads.

use crate::tokenize::{tokenize_into, TokScratch, TokenizerKind, Tokens};

pub const MAX_ORDER: usize = 4;
/// Columns of one segment's statistics: hyp_len, ref_len, correct[1..=4], total[1..=4].
pub const NUM_STATS: usize = 2 + 2 * MAX_ORDER;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Smooth {
    None,
    Floor(f64),
    AddK(f64),
    Exp,
}

impl Smooth {
    /// sacrebleu's names and defaults (floor 0.1, add-k 1).
    pub fn parse(method: &str, value: Option<f64>) -> Option<Self> {
        match method {
            "none" => Some(Self::None),
            "floor" => Some(Self::Floor(value.unwrap_or(0.1))),
            "add-k" => Some(Self::AddK(value.unwrap_or(1.0))),
            "exp" => Some(Self::Exp),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct BleuOptions {
    pub tokenizer: TokenizerKind,
    pub lowercase: bool,
    pub max_order: usize,
}

/// sacrebleu's `my_log`: log with log(0) floored to -9999999999.
#[inline]
fn my_log(x: f64) -> f64 {
    if x == 0.0 {
        -9999999999.0
    } else {
        x.ln()
    }
}

/// The score and its parts, as `BLEU.compute_bleu` returns them.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    pub score: f64,
    pub precisions: [f64; MAX_ORDER],
    pub bp: f64,
}

/// `BLEU.compute_bleu` transcribed: same operations in the same order, so the floats agree.
/// `stats` is one row of [hyp_len, ref_len, correct.., total..] with `max_order` orders.
pub fn compute_bleu(
    stats: &[i64],
    max_order: usize,
    smooth: Smooth,
    effective_order: bool,
) -> Score {
    let sys_len = stats[0];
    let ref_len = stats[1];
    let mut correct = [0f64; MAX_ORDER];
    let mut total = [0f64; MAX_ORDER];
    let mut any_correct = false;
    for n in 0..max_order {
        correct[n] = stats[2 + n] as f64;
        total[n] = stats[2 + max_order + n] as f64;
        any_correct |= stats[2 + n] != 0;
    }
    let mut bp = 1.0f64;
    if sys_len < ref_len {
        bp = if sys_len > 0 {
            (1.0 - (ref_len as f64) / (sys_len as f64)).exp()
        } else {
            0.0
        };
    }
    let mut precisions = [0f64; MAX_ORDER];
    if !any_correct {
        return Score { score: 0.0, precisions, bp };
    }
    let mut smooth_mteval = 1.0f64;
    let mut eff_order = max_order;
    for n in 1..=max_order {
        if let Smooth::AddK(k) = smooth {
            if n > 1 {
                correct[n - 1] += k;
                total[n - 1] += k;
            }
        }
        if total[n - 1] == 0.0 {
            break;
        }
        if effective_order {
            eff_order = n;
        }
        if correct[n - 1] == 0.0 {
            match smooth {
                Smooth::Exp => {
                    smooth_mteval *= 2.0;
                    precisions[n - 1] = 100.0 / (smooth_mteval * total[n - 1]);
                }
                Smooth::Floor(v) => {
                    precisions[n - 1] = 100.0 * v / total[n - 1];
                }
                _ => {}
            }
        } else {
            precisions[n - 1] = 100.0 * correct[n - 1] / total[n - 1];
        }
    }
    // Python's sum() over a list: left to right from int 0
    let mut acc = 0.0f64;
    for p in precisions.iter().take(eff_order) {
        acc += my_log(*p);
    }
    let score = bp * (acc / eff_order as f64).exp();
    Score { score, precisions, bp }
}

// ----------------------------------------------------------------------------------------------
// interning and n-gram counting

const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

#[inline]
fn hash_bytes(b: &[u8]) -> u64 {
    let mut h: u64 = b.len() as u64;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let v = u64::from_le_bytes(c.try_into().unwrap());
        h = (h.rotate_left(5) ^ v).wrapping_mul(MIX);
    }
    let rem = chunks.remainder();
    if !rem.is_empty() {
        let mut buf = [0u8; 8];
        buf[..rem.len()].copy_from_slice(rem);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(buf)).wrapping_mul(MIX);
    }
    h ^ (h >> 29)
}

/// The first (up to) 8 bytes of the token at text[a..b], zero-padded: for tokens of at most 8
/// bytes, this word and the length identify the token exactly.
#[inline]
fn first_word(text: &[u8], a: usize, b: usize) -> u64 {
    let len = b - a;
    if a + 8 <= text.len() {
        let w = u64::from_le_bytes(text[a..a + 8].try_into().unwrap());
        if len >= 8 {
            w
        } else {
            w & ((1u64 << (8 * len)) - 1)
        }
    } else {
        let mut buf = [0u8; 8];
        let n = len.min(8);
        buf[..n].copy_from_slice(&text[a..a + n]);
        u64::from_le_bytes(buf)
    }
}

#[derive(Clone, Copy, Default)]
struct InternSlot {
    word: u64, // first_word of the token
    hash: u64, // full hash (tokens over 8 bytes only; 0 otherwise)
    len: u32,
    id: u32,     // 1-based id
    epoch: u32,  // slot is live when epoch == the interner's epoch
}

/// Maps token bytes to ids 1..=n within one segment (hypothesis and its references). Tokens of up
/// to 8 bytes are compared as (word, length) without touching their bytes; longer ones by hash and
/// bytes. An epoch stamp empties the table between segments without clearing it.
#[derive(Default)]
struct Interner {
    slots: Vec<InternSlot>,
    keys: Vec<(u32, u32, u32)>, // per id-1: (text index, start, end)
    mask: usize,
    epoch: u32,
}

impl Interner {
    fn reset(&mut self, expected: usize) {
        let cap = (expected * 2).next_power_of_two().max(16);
        if self.slots.len() < cap || self.slots.len() > 8 * cap.max(1024) || self.epoch == u32::MAX {
            self.slots = vec![InternSlot::default(); cap];
            self.epoch = 0;
        }
        self.epoch += 1;
        self.mask = self.slots.len() - 1;
        self.keys.clear();
    }

    /// Interns every token of `texts[t]`, appending its id to `ids`.
    fn intern_all(&mut self, texts: &[&Tokens], t: usize, ids: &mut Vec<u32>) {
        let toks = texts[t];
        let text = &toks.text[..];
        let epoch = self.epoch;
        for &(a, b) in &toks.spans {
            let (a, b) = (a as usize, b as usize);
            let len = b - a;
            let word = first_word(text, a, b);
            let hash = if len <= 8 { 0 } else { hash_bytes(&text[a..b]) };
            let h = if len <= 8 { (word ^ ((len as u64) << 59)).wrapping_mul(MIX) } else { hash };
            let mut pos = ((h ^ (h >> 31)) as usize) & self.mask;
            loop {
                let slot = self.slots[pos];
                if slot.epoch != epoch {
                    let new_id = self.keys.len() as u32 + 1;
                    self.slots[pos] = InternSlot { word, hash, len: len as u32, id: new_id, epoch };
                    self.keys.push((t as u32, a as u32, b as u32));
                    ids.push(new_id);
                    break;
                }
                if slot.word == word && slot.len == len as u32 && slot.hash == hash {
                    if len <= 8 {
                        ids.push(slot.id);
                        break;
                    }
                    let (kt, ka, kb) = self.keys[slot.id as usize - 1];
                    if &texts[kt as usize].text[ka as usize..kb as usize] == &text[a..b] {
                        ids.push(slot.id);
                        break;
                    }
                }
                pos = (pos + 1) & self.mask;
            }
        }
    }
}

trait NgramKey: Copy + Eq + Default {
    const BITS: u32;
    fn from_id(id: u32) -> Self;
    fn push(self, id: u32) -> Self;
    fn hash(self) -> u64;
}

impl NgramKey for u64 {
    const BITS: u32 = 16;
    #[inline]
    fn from_id(id: u32) -> Self {
        id as u64
    }
    #[inline]
    fn push(self, id: u32) -> Self {
        (self << 16) | id as u64
    }
    #[inline]
    fn hash(self) -> u64 {
        let h = self.wrapping_mul(MIX);
        h ^ (h >> 32)
    }
}

impl NgramKey for u128 {
    const BITS: u32 = 32;
    #[inline]
    fn from_id(id: u32) -> Self {
        id as u128
    }
    #[inline]
    fn push(self, id: u32) -> Self {
        (self << 32) | id as u128
    }
    #[inline]
    fn hash(self) -> u64 {
        let lo = self as u64;
        let hi = (self >> 64) as u64;
        let h = (lo ^ hi.rotate_left(23)).wrapping_mul(MIX);
        h ^ (h >> 32)
    }
}

#[derive(Clone, Copy, Default)]
struct CountSlot<K: NgramKey> {
    key: K,
    epoch: u32,
    avail: u32,    // max count over the references, minus hypothesis copies already matched
    cur: u32,      // count in the reference being inserted
    last_ref: u32, // the reference `cur` belongs to
}

/// Open-addressing table of reference n-gram counts: `avail` is the max count over references
/// (sacrebleu merges references by max), consumed by hypothesis n-grams (clipped matches).
/// Slots hold key and counts together; an epoch stamp empties the table between segments.
struct CountTable<K: NgramKey> {
    slots: Vec<CountSlot<K>>,
    mask: usize,
    epoch: u32,
}

impl<K: NgramKey> Default for CountTable<K> {
    fn default() -> Self {
        Self { slots: Vec::new(), mask: 0, epoch: 0 }
    }
}

impl<K: NgramKey> CountTable<K> {
    fn reset(&mut self, expected: usize) {
        let cap = (expected * 2).next_power_of_two().max(16);
        if self.slots.len() < cap || self.slots.len() > 8 * cap.max(4096) || self.epoch == u32::MAX {
            self.slots = vec![CountSlot::default(); cap];
            self.epoch = 0;
        }
        self.epoch += 1;
        self.mask = self.slots.len() - 1;
    }

    #[inline]
    fn insert_ref(&mut self, key: K, ref_idx: u32) {
        let mut pos = (key.hash() as usize) & self.mask;
        loop {
            let slot = &mut self.slots[pos];
            if slot.epoch != self.epoch {
                *slot = CountSlot { key, epoch: self.epoch, avail: 1, cur: 1, last_ref: ref_idx };
                return;
            }
            if slot.key == key {
                if slot.last_ref != ref_idx {
                    slot.last_ref = ref_idx;
                    slot.cur = 0;
                }
                slot.cur += 1;
                if slot.cur > slot.avail {
                    slot.avail = slot.cur;
                }
                return;
            }
            pos = (pos + 1) & self.mask;
        }
    }

    /// Matches one hypothesis copy of `key`: Some(true) when a reference copy was left (and is now
    /// consumed), Some(false) when all were used, None when no reference has the n-gram at all.
    #[inline]
    fn take(&mut self, key: K) -> Option<bool> {
        let mut pos = (key.hash() as usize) & self.mask;
        loop {
            let slot = &mut self.slots[pos];
            if slot.epoch != self.epoch {
                return None;
            }
            if slot.key == key {
                if slot.avail > 0 {
                    slot.avail -= 1;
                    return Some(true);
                }
                return Some(false);
            }
            pos = (pos + 1) & self.mask;
        }
    }
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
    ref_lens: Vec<i64>,
}

/// Statistics of one segment: `hyp` against the references in `refs` (None = missing reference,
/// as in sacrebleu's variable-reference streams). Writes NUM_STATS values into `out`
/// (only the first 2 + 2 * max_order are meaningful, laid out as sacrebleu's list).
pub fn segment_stats(
    hyp: &str,
    refs: &[Option<&str>],
    opts: &BleuOptions,
    s: &mut SegmentScratch,
    out: &mut [i64],
) {
    let mo = opts.max_order;
    tokenize_into(hyp, opts.tokenizer, opts.lowercase, &mut s.tok, &mut s.hyp);
    let nrefs = refs.iter().filter(|r| r.is_some()).count();
    if s.refs.len() < nrefs {
        s.refs.resize_with(nrefs, Tokens::default);
    }
    let mut r_i = 0;
    for r in refs.iter().flatten() {
        tokenize_into(r, opts.tokenizer, opts.lowercase, &mut s.tok, &mut s.refs[r_i]);
        r_i += 1;
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
    if distinct < (1usize << 16) - 1 {
        count_with::<u64>(&mut s.table64, &s.hyp_ids, hyp_distinct, &s.ref_ids, &s.ref_bounds, ref_ngrams, mo, out);
    } else {
        count_with::<u128>(&mut s.table128, &s.hyp_ids, hyp_distinct, &s.ref_ids, &s.ref_bounds, ref_ngrams, mo, out);
    }
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
    use crate::tokenize::tokenize_to_string;

    fn opts() -> BleuOptions {
        BleuOptions { tokenizer: TokenizerKind::Tok13a, lowercase: false, max_order: 4 }
    }

    #[test]
    fn stats_simple() {
        let mut s = SegmentScratch::default();
        let mut out = [0i64; NUM_STATS];
        segment_stats("the cat the cat", &[Some("the cat sat")], &opts(), &mut s, &mut out);
        // unigrams: the x2 (ref 1), cat x2 (ref 1) -> 2 of 4; bigrams: the cat x2 (ref 1), cat the -> 1 of 3
        assert_eq!(out, [4, 3, 2, 1, 0, 0, 4, 3, 2, 1]);
    }

    #[test]
    fn multi_ref_max_and_closest() {
        let mut s = SegmentScratch::default();
        let mut out = [0i64; NUM_STATS];
        segment_stats("a a a", &[Some("a b"), Some("a a c d"), None], &opts(), &mut s, &mut out);
        assert_eq!(out[0], 3);
        assert_eq!(out[1], 2); // |3-2| == |3-4|, the shorter wins
        assert_eq!(out[2], 2); // max count of "a" over references is 2
    }

    /// Plain reference: n-grams as vectors of token strings counted in a HashMap, clipped by the
    /// max count over references (sacrebleu's definition).
    fn naive_stats(hyp: &str, refs: &[&str], mo: usize) -> Vec<i64> {
        use std::collections::HashMap;
        let toks = |s: &str| tokenize_to_string(s, TokenizerKind::Tok13a, false)
            .split(' ').filter(|t| !t.is_empty()).map(|t| t.to_string()).collect::<Vec<_>>();
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
        let pieces = ["abcdefgh", "abcdefghX", "abcdefghY", "abcdefghXY", "a\u{0}", "a", "ab", "\u{0}",
                      "zzzzzzzzzzzzzzzzzzzzzz", "zzzzzzzzzzzzzzzzzzzzzy", "é", "éé", "日本語テキスト"];
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
        for _ in 0..400 {
            let hyp = text(&mut seed, &pieces);
            let refs: Vec<String> = (0..1 + next(&mut seed) % 3).map(|_| text(&mut seed, &pieces)).collect();
            let ref_opts: Vec<Option<&str>> = refs.iter().map(|r| Some(r.as_str())).collect();
            segment_stats(&hyp, &ref_opts, &opts(), &mut s, &mut out);
            let r: Vec<&str> = refs.iter().map(|r| r.as_str()).collect();
            assert_eq!(out.to_vec(), naive_stats(&hyp, &r, 4), "hyp {hyp:?} refs {refs:?}");
        }
    }

    #[test]
    fn perfect_match_is_100() {
        let mut s = SegmentScratch::default();
        let mut out = [0i64; NUM_STATS];
        segment_stats("a b c d e", &[Some("a b c d e")], &opts(), &mut s, &mut out);
        let sc = compute_bleu(&out, 4, Smooth::Exp, true);
        assert!((sc.score - 100.0).abs() < 1e-12);
    }
}
