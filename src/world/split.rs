//! Stable hashing: which split a prompt's underlying item belongs to, which phrasings of a fact
//! are held out, and per-purpose seeds derived from the world seed. FNV-1a and SplitMix64 are
//! written out here so results never depend on the standard library's hasher.

use super::Split;

/// Percentage of hash-split items (counting, category, copy, reverse) that go to the test split.
pub const TEST_PERCENT: u64 = 30;

/// Number of phrasing templates per fact for attributes and antonyms.
pub const PHRASINGS: usize = 5;

/// 64-bit FNV-1a of `text`.
pub fn fnv1a(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// One SplitMix64 step: a well-mixed function of `x`.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A seed for the stream called `name`, derived from `seed` (distinct names give unrelated seeds).
pub fn derive_seed(seed: u64, name: &str) -> u64 {
    splitmix64(seed ^ splitmix64(fnv1a(name)))
}

/// The split of an item identified by `key` (a skill name plus the item's content).
pub fn split_of(key: &str) -> Split {
    if splitmix64(fnv1a(key)) % 100 < TEST_PERCENT {
        Split::Test
    } else {
        Split::Train
    }
}

/// The two phrasing indices (of `PHRASINGS`) held out for testing the fact identified by `key`;
/// the other three are the fact's training phrasings.
pub fn test_phrasings(key: &str) -> [usize; 2] {
    let h = splitmix64(fnv1a(key));
    let first = (h % PHRASINGS as u64) as usize;
    let offset = 1 + ((h >> 32) % (PHRASINGS as u64 - 1)) as usize;
    [first, (first + offset) % PHRASINGS]
}

/// The phrasing indices of a fact (identified by `key`) that belong to `split`, ascending.
pub fn phrasings_for(key: &str, split: Split) -> Vec<usize> {
    let test = test_phrasings(key);
    (0..PHRASINGS)
        .filter(|i| test.contains(i) == (split == Split::Test))
        .collect()
}
