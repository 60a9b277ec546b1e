//! Batch entry points over many segments, parallel with rayon. Every segment is computed on its
//! own and written to its own output slot, so results are identical whatever the thread count.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::prelude::*;

use crate::answers::{answers_agree, extract, output_correct, Answer, GoldNotANumber, Rule};
use crate::bleu::{compute_bleu, segment_stats, BleuOptions, SegmentScratch, Smooth};

/// Segments per parallel work item: large enough to amortise scheduling, small enough to balance.
const CHUNK: usize = 256;

fn pools() -> &'static Mutex<HashMap<usize, Arc<rayon::ThreadPool>>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    POOLS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Runs `f` on a pool of `threads` threads (None or 0: rayon's global pool, all cores).
pub fn with_threads<T: Send>(threads: Option<usize>, f: impl FnOnce() -> T + Send) -> T {
    match threads {
        None | Some(0) => f(),
        Some(n) => {
            let pool = {
                let mut map = pools().lock().unwrap();
                map.entry(n)
                    .or_insert_with(|| {
                        Arc::new(rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap())
                    })
                    .clone()
            };
            pool.install(f)
        }
    }
}

/// Row width of the statistics matrix for `max_order`.
pub fn stats_width(max_order: usize) -> usize {
    2 + 2 * max_order
}

/// Sufficient statistics of every segment: a row-major (n, 2 + 2*max_order) matrix.
/// `refs[k][i]` is reference stream k's reference for segment i (None = missing).
pub fn corpus_stats(hyps: &[&str], refs: &[Vec<Option<&str>>], opts: &BleuOptions) -> Vec<i64> {
    let w = stats_width(opts.max_order);
    let mut out = vec![0i64; hyps.len() * w];
    out.par_chunks_mut(w * CHUNK).enumerate().for_each_init(
        || (SegmentScratch::default(), Vec::<Option<&str>>::new()),
        |(scratch, seg_refs), (c, block)| {
            let base = c * CHUNK;
            for (j, row) in block.chunks_mut(w).enumerate() {
                let i = base + j;
                seg_refs.clear();
                seg_refs.extend(refs.iter().map(|stream| stream[i]));
                segment_stats(hyps[i], seg_refs, opts, scratch, row);
            }
        },
    );
    out
}

/// Column sums of a statistics matrix (integers: exact, order-free).
pub fn sum_stats(stats: &[i64], width: usize) -> Vec<i64> {
    let mut acc = vec![0i64; width];
    for row in stats.chunks(width) {
        for (a, v) in acc.iter_mut().zip(row) {
            *a += v;
        }
    }
    acc
}

/// Sentence scores of every row of a statistics matrix.
pub fn scores_from_stats(stats: &[i64], max_order: usize, smooth: Smooth, effective_order: bool) -> Vec<f64> {
    let w = stats_width(max_order);
    let mut out = vec![0f64; stats.len() / w];
    out.par_chunks_mut(CHUNK * 4).enumerate().for_each(|(c, block)| {
        for (j, o) in block.iter_mut().enumerate() {
            let i = c * CHUNK * 4 + j;
            *o = compute_bleu(&stats[i * w..(i + 1) * w], max_order, smooth, effective_order).score;
        }
    });
    out
}

/// Extracted answers of every text (None = no answer).
pub fn extract_all(texts: &[&str], rule: &Rule) -> Vec<Option<Answer>> {
    texts.par_iter().with_min_len(CHUNK).map(|t| extract(t, rule)).collect()
}

/// Per-item agreement of two output columns (either side without an answer: no agreement).
pub fn agree_all(a: &[&str], b: &[&str], rule: &Rule) -> Vec<bool> {
    a.par_iter()
        .zip(b.par_iter())
        .with_min_len(CHUNK)
        .map(|(x, y)| match (extract(x, rule), extract(y, rule)) {
            (Some(p), Some(q)) => answers_agree(&p, &q, rule),
            _ => false,
        })
        .collect()
}

/// Per-item correctness against gold; Err(i) names the first row whose numeric gold is unreadable.
pub fn correct_all(outputs: &[&str], golds: &[&str], rule: &Rule) -> Result<Vec<bool>, usize> {
    let res: Vec<Result<bool, GoldNotANumber>> = outputs
        .par_iter()
        .zip(golds.par_iter())
        .with_min_len(CHUNK)
        .map(|(o, g)| output_correct(o, g, rule))
        .collect();
    res.into_iter().enumerate().map(|(i, r)| r.map_err(|_| i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenize::TokenizerKind;

    #[test]
    fn thread_count_does_not_change_results() {
        let hyps: Vec<String> =
            (0..3000).map(|i| format!("the {} cat sat on {} mats, ok.", i % 7, i % 13)).collect();
        let refs: Vec<String> =
            (0..3000).map(|i| format!("a {} cat sat on the {} mat.", i % 5, i % 11)).collect();
        let h: Vec<&str> = hyps.iter().map(|s| s.as_str()).collect();
        let r: Vec<Option<&str>> = refs.iter().map(|s| Some(s.as_str())).collect();
        let opts = BleuOptions { tokenizer: TokenizerKind::Tok13a, lowercase: false, max_order: 4 };
        let one = with_threads(Some(1), || corpus_stats(&h, std::slice::from_ref(&r), &opts));
        let two = with_threads(Some(2), || corpus_stats(&h, std::slice::from_ref(&r), &opts));
        let three = with_threads(Some(3), || corpus_stats(&h, std::slice::from_ref(&r), &opts));
        assert_eq!(one, two);
        assert_eq!(one, three);
        let s1 = with_threads(Some(1), || scores_from_stats(&one, 4, Smooth::Exp, true));
        let s2 = with_threads(Some(2), || scores_from_stats(&one, 4, Smooth::Exp, true));
        assert_eq!(
            s1.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            s2.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }
}
