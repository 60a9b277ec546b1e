//! BLEU exactly as sacreBLEU 2.6 computes it: per-segment sufficient statistics (hypothesis
//! length, closest reference length, matched and total n-grams per order) and the score from
//! statistics with smoothing (none, floor, add-k, exp) and effective order.
//!
//! Speed: tokens of one segment are interned to small integer ids (exact byte comparison), n-grams
//! of up to 4 ids are packed into one integer key (16-bit ids in a u64, 32-bit ids in a u128 when a
//! segment has 65535+ distinct tokens) and counted in a reused open-addressing table, so counting
//! allocates nothing per n-gram. Segments are independent; the results never depend on threads.

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

#[inline]
fn hash_bytes(b: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = b.len() as u64;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let v = u64::from_le_bytes(c.try_into().unwrap());
        h = (h.rotate_left(5) ^ v).wrapping_mul(K);
    }
    let rem = chunks.remainder();
    if !rem.is_empty() {
        let mut buf = [0u8; 8];
        buf[..rem.len()].copy_from_slice(rem);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(buf)).wrapping_mul(K);
    }
    h ^ (h >> 29)
}

/// Maps token bytes to ids 1..=n within one segment (hypothesis and its references).
#[derive(Default)]
struct Interner {
    slots: Vec<u32>,     // 0 = empty, else id
    hashes: Vec<u64>,    // per slot
    keys: Vec<(u32, u32, u32)>, // per id-1: (text index, start, end)
    mask: usize,
}

impl Interner {
    fn reset(&mut self, expected: usize) {
        let cap = (expected * 2).next_power_of_two().max(16);
        if self.slots.len() < cap || self.slots.len() > 4 * cap.max(1024) {
            self.slots = vec![0; cap];
            self.hashes = vec![0; cap];
        } else {
            self.slots.iter_mut().for_each(|s| *s = 0);
        }
        self.mask = self.slots.len() - 1;
        self.keys.clear();
    }

    /// Interns every token of `texts[t]`, writing its id to `ids`.
    fn intern_all(&mut self, texts: &[&Tokens], t: usize, ids: &mut Vec<u32>) {
        ids.clear();
        let toks = texts[t];
        for i in 0..toks.len() {
            let tok = toks.token(i);
            let h = hash_bytes(tok);
            let mut pos = (h as usize) & self.mask;
            loop {
                let id = self.slots[pos];
                if id == 0 {
                    let new_id = self.keys.len() as u32 + 1;
                    self.slots[pos] = new_id;
                    self.hashes[pos] = h;
                    let (a, b) = toks.spans[i];
                    self.keys.push((t as u32, a, b));
                    ids.push(new_id);
                    break;
                }
                if self.hashes[pos] == h {
                    let (kt, a, b) = self.keys[id as usize - 1];
                    if &texts[kt as usize].text[a as usize..b as usize] == tok {
                        ids.push(id);
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
    fn is_empty(self) -> bool;
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
        let h = self.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^ (h >> 32)
    }
    #[inline]
    fn is_empty(self) -> bool {
        self == 0
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
        let h = (lo ^ hi.rotate_left(23)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^ (h >> 32)
    }
    #[inline]
    fn is_empty(self) -> bool {
        self == 0
    }
}

/// Open-addressing table of reference n-gram counts: `avail` is the max count over references
/// (sacrebleu merges references by max), consumed by hypothesis n-grams (clipped matches).
struct CountTable<K: NgramKey> {
    keys: Vec<K>,
    avail: Vec<u32>,
    cur: Vec<u32>,
    last_ref: Vec<u32>,
    mask: usize,
}

impl<K: NgramKey> Default for CountTable<K> {
    fn default() -> Self {
        Self { keys: Vec::new(), avail: Vec::new(), cur: Vec::new(), last_ref: Vec::new(), mask: 0 }
    }
}

impl<K: NgramKey> CountTable<K> {
    fn reset(&mut self, expected: usize) {
        let cap = (expected * 2).next_power_of_two().max(16);
        if self.keys.len() < cap || self.keys.len() > 4 * cap.max(4096) {
            self.keys = vec![K::default(); cap];
            self.avail = vec![0; cap];
            self.cur = vec![0; cap];
            self.last_ref = vec![0; cap];
        } else {
            self.keys.iter_mut().for_each(|k| *k = K::default());
        }
        self.mask = self.keys.len() - 1;
    }

    #[inline]
    fn insert_ref(&mut self, key: K, ref_idx: u32) {
        let mut pos = (key.hash() as usize) & self.mask;
        loop {
            let k = self.keys[pos];
            if k.is_empty() {
                self.keys[pos] = key;
                self.avail[pos] = 1;
                self.cur[pos] = 1;
                self.last_ref[pos] = ref_idx;
                return;
            }
            if k == key {
                if self.last_ref[pos] != ref_idx {
                    self.last_ref[pos] = ref_idx;
                    self.cur[pos] = 0;
                }
                self.cur[pos] += 1;
                if self.cur[pos] > self.avail[pos] {
                    self.avail[pos] = self.cur[pos];
                }
                return;
            }
            pos = (pos + 1) & self.mask;
        }
    }

    /// true when the reference still has an unmatched copy of `key` (and consumes it)
    #[inline]
    fn take(&mut self, key: K) -> bool {
        let mut pos = (key.hash() as usize) & self.mask;
        loop {
            let k = self.keys[pos];
            if k.is_empty() {
                return false;
            }
            if k == key {
                if self.avail[pos] > 0 {
                    self.avail[pos] -= 1;
                    return true;
                }
                return false;
            }
            pos = (pos + 1) & self.mask;
        }
    }
}

#[inline]
fn for_each_ngram<K: NgramKey>(ids: &[u32], max_order: usize, mut f: impl FnMut(usize, K)) {
    // n-grams of order n starting at i, keys built incrementally; order index n-1 passed to f
    for i in 0..ids.len() {
        let mut key = K::from_id(ids[i]);
        f(0, key);
        for n in 1..max_order {
            if i + n >= ids.len() {
                break;
            }
            key = key.push(ids[i + n]);
            f(n, key);
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

/// Per-thread scratch space for segment statistics.
#[derive(Default)]
pub struct SegmentScratch {
    tok: TokScratch,
    hyp: Tokens,
    refs: Vec<Tokens>,
    interner: Interner,
    hyp_ids: Vec<u32>,
    ref_ids: Vec<u32>,
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
    let mut all: Vec<&Tokens> = Vec::with_capacity(nrefs + 1);
    all.push(&s.hyp);
    for r in &s.refs[..nrefs] {
        all.push(r);
    }
    let total_tokens: usize = all.iter().map(|t| t.len()).sum();
    s.interner.reset(total_tokens);
    s.ref_lens.clear();
    for r in &s.refs[..nrefs] {
        s.ref_lens.push(r.len() as i64);
    }
    let hyp_len = s.hyp.len() as i64;
    let ref_len = closest_ref_len(hyp_len, &s.ref_lens);
    out.iter_mut().for_each(|x| *x = 0);
    out[0] = hyp_len;
    out[1] = ref_len;

    // ids of all texts: hyp first, refs after (interned into one id space)
    s.interner.intern_all(&all, 0, &mut s.hyp_ids);
    // refs are interned one at a time while counting (ids stay consistent across refs)
    let ref_ngrams: usize = s.ref_lens.iter().map(|&l| (l as usize) * mo).sum();
    // decide key width after interning all refs: intern everything first into ref_ids (concatenated)
    let mut ref_bounds: Vec<(usize, usize)> = Vec::with_capacity(nrefs);
    let mut concat: Vec<u32> = std::mem::take(&mut s.ref_ids);
    concat.clear();
    let mut tmp_ids: Vec<u32> = Vec::new();
    for t in 1..=nrefs {
        s.interner.intern_all(&all, t, &mut tmp_ids);
        let a = concat.len();
        concat.extend_from_slice(&tmp_ids);
        ref_bounds.push((a, concat.len()));
    }
    let distinct = s.interner.keys.len();
    if distinct < (1usize << 16) - 1 {
        count_with::<u64>(&mut s.table64, &s.hyp_ids, &concat, &ref_bounds, ref_ngrams, mo, out);
    } else {
        count_with::<u128>(&mut s.table128, &s.hyp_ids, &concat, &ref_bounds, ref_ngrams, mo, out);
    }
    s.ref_ids = concat;
}

fn count_with<K: NgramKey>(
    table: &mut CountTable<K>,
    hyp_ids: &[u32],
    ref_ids: &[u32],
    ref_bounds: &[(usize, usize)],
    ref_ngrams: usize,
    mo: usize,
    out: &mut [i64],
) {
    debug_assert!(K::BITS as usize * mo <= std::mem::size_of::<K>() * 8);
    table.reset(ref_ngrams.max(1));
    for (r, &(a, b)) in ref_bounds.iter().enumerate() {
        for_each_ngram::<K>(&ref_ids[a..b], mo, |_, key| table.insert_ref(key, r as u32));
    }
    for_each_ngram::<K>(hyp_ids, mo, |n, key| {
        out[2 + mo + n] += 1;
        if table.take(key) {
            out[2 + n] += 1;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn perfect_match_is_100() {
        let mut s = SegmentScratch::default();
        let mut out = [0i64; NUM_STATS];
        segment_stats("a b c d e", &[Some("a b c d e")], &opts(), &mut s, &mut out);
        let sc = compute_bleu(&out, 4, Smooth::Exp, true);
        assert!((sc.score - 100.0).abs() < 1e-12);
    }
}
