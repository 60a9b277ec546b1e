//! The per-segment tables behind the statistics: an interner from token bytes to small ids and an
//! open-addressing table of reference n-gram counts keyed by packed ids (see the `bleu` module
//! docs for the layout).

use super::formula::MAX_ORDER;
use crate::tokenize::Tokens;

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
    id: u32,    // 1-based id
    epoch: u32, // slot is live when epoch == the interner's epoch
}

/// Maps token bytes to ids 1..=n within one segment (hypothesis and its references). Tokens of up
/// to 8 bytes are compared as (word, length) without touching their bytes; longer ones by hash and
/// bytes. An epoch stamp empties the table between segments without clearing it.
#[derive(Default)]
pub(super) struct Interner {
    slots: Vec<InternSlot>,
    pub(super) keys: Vec<(u32, u32, u32)>, // per id-1: (text index, start, end)
    mask: usize,
    epoch: u32,
}

impl Interner {
    pub(super) fn reset(&mut self, expected: usize) {
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
    pub(super) fn intern_all(&mut self, texts: &[&Tokens], t: usize, ids: &mut Vec<u32>) {
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
                    if texts[kt as usize].text[ka as usize..kb as usize] == text[a..b] {
                        ids.push(slot.id);
                        break;
                    }
                }
                pos = (pos + 1) & self.mask;
            }
        }
    }
}

pub(super) trait NgramKey: Copy + Eq + Default {
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

/// Keys of n-grams longer than 4 tokens: the ids themselves, right-aligned (an n-gram of length L
/// has MAX_ORDER - L leading zeros; ids start at 1, so lengths never collide).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct LongKey([u32; MAX_ORDER]);

impl NgramKey for LongKey {
    const BITS: u32 = 32;
    #[inline]
    fn from_id(id: u32) -> Self {
        let mut a = [0u32; MAX_ORDER];
        a[MAX_ORDER - 1] = id;
        LongKey(a)
    }
    #[inline]
    fn push(self, id: u32) -> Self {
        let mut a = self.0;
        a.copy_within(1.., 0);
        a[MAX_ORDER - 1] = id;
        LongKey(a)
    }
    #[inline]
    fn hash(self) -> u64 {
        let mut h = 0u64;
        for &x in &self.0 {
            h = (h.rotate_left(17) ^ x as u64).wrapping_mul(MIX);
        }
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
pub(super) struct CountTable<K: NgramKey> {
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
    pub(super) fn reset(&mut self, expected: usize) {
        let cap = (expected * 2).next_power_of_two().max(16);
        if self.slots.len() < cap || self.slots.len() > 8 * cap.max(4096) || self.epoch == u32::MAX {
            self.slots = vec![CountSlot::default(); cap];
            self.epoch = 0;
        }
        self.epoch += 1;
        self.mask = self.slots.len() - 1;
    }

    #[inline]
    pub(super) fn insert_ref(&mut self, key: K, ref_idx: u32) {
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
    pub(super) fn take(&mut self, key: K) -> Option<bool> {
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
