//! Drawing helpers on top of `SeededRng`: picks, shuffles, and collecting distinct examples.

use std::collections::BTreeSet;

use crate::util::rng::SeededRng;

use super::Example;

/// Consecutive repeated prompts after which the candidate pool counts as exhausted.
const EXHAUSTED_AFTER: usize = 20_000;

/// A uniformly chosen element of `items` (which must not be empty).
pub fn pick<'a, T>(rng: &mut SeededRng, items: &'a [T]) -> &'a T {
    &items[rng.below(items.len())]
}

/// Shuffles `items` in place (Fisher–Yates).
pub fn shuffle<T>(rng: &mut SeededRng, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i + 1);
        items.swap(i, j);
    }
}

/// `k` distinct indices below `n`, in random order (`k <= n`).
pub fn distinct_indices(rng: &mut SeededRng, n: usize, k: usize) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    shuffle(rng, &mut all);
    all.truncate(k);
    all
}

/// `n` examples from `draw`, with distinct prompts while the pool lasts: once
/// `EXHAUSTED_AFTER` draws in a row repeat a prompt, the pool counts as used up and a new round
/// of distinct prompts begins (so small pools cycle instead of stalling).
pub fn collect_distinct(
    n: usize,
    rng: &mut SeededRng,
    mut draw: impl FnMut(&mut SeededRng) -> Example,
) -> Vec<Example> {
    let mut out = Vec::with_capacity(n);
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut misses = 0;
    while out.len() < n {
        let example = draw(rng);
        if seen.insert(example.prompt.clone()) {
            misses = 0;
            out.push(example);
        } else {
            misses += 1;
            if misses >= EXHAUSTED_AFTER {
                seen.clear();
                misses = 0;
            }
        }
    }
    out
}
