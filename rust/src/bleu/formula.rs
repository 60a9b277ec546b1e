//! The score from sufficient statistics: sacreBLEU's `BLEU.compute_bleu` transcribed, with its
//! smoothing methods (none, floor, add-k, exp) and effective order.

/// The highest n-gram order (sacreBLEU's `max_ngram_order` has no limit; 9 covers every use seen).
pub const MAX_ORDER: usize = 9;

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

/// sacrebleu's `my_log`: log with log(0) floored to -9999999999.
#[inline]
fn my_log(x: f64) -> f64 {
    if x == 0.0 {
        -9999999999.0
    } else {
        x.ln()
    }
}

/// The score and its parts, as `BLEU.compute_bleu` returns them. `counts` and `totals` are the
/// matched and total n-grams as sacreBLEU reports them: under add-k, k is added to orders 2.. up to
/// the first order with no n-grams (the raw values stay in the statistics row).
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    pub score: f64,
    pub precisions: [f64; MAX_ORDER],
    pub bp: f64,
    pub counts: [f64; MAX_ORDER],
    pub totals: [f64; MAX_ORDER],
}

/// `BLEU.compute_bleu` transcribed: same operations in the same order, so the floats agree.
/// `stats` is one row of [hyp_len, ref_len, correct.., total..] with `max_order` orders.
pub fn compute_bleu(stats: &[i64], max_order: usize, smooth: Smooth, effective_order: bool) -> Score {
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
        bp = if sys_len > 0 { (1.0 - (ref_len as f64) / (sys_len as f64)).exp() } else { 0.0 };
    }
    let mut precisions = [0f64; MAX_ORDER];
    if !any_correct {
        return Score { score: 0.0, precisions, bp, counts: correct, totals: total };
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
    Score { score, precisions, bp, counts: correct, totals: total }
}
