//! Compact regular expressions over parameter names: one pattern per module and set of layers,
//! with the layer numbers written as an alternation of decimal ranges
//! (`0..=11` becomes `(?:[0-9]|1[01])`).
//!
//! Patterns are anchored (`^...$`) and write the dots between name segments plainly: Axolotl
//! escapes every `.` of an `unfrozen_parameters` entry before compiling it, so a pattern that
//! wrote `\.` would become `\\.` there (a literal backslash) and match nothing. No pattern built
//! here uses `.` as a wildcard, so both readings (dots escaped, and the text as a plain regex)
//! select the same names; [`axolotl_matches`] and [`plain_matches`] check both.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use regex::Regex;

/// Regex alternatives that together match exactly the decimal numbers `lo..=hi` (no leading
/// zeros).
pub fn range_alternatives(lo: u64, hi: u64) -> Vec<String> {
    assert!(lo <= hi, "empty range {lo}..={hi}");
    let mut out = Vec::new();
    let mut start = lo;
    // Split at powers of ten so that both ends have the same number of digits.
    loop {
        let digits = start.to_string().len() as u32;
        let top = 10u64.saturating_pow(digits).saturating_sub(1);
        let end = hi.min(top);
        out.extend(same_length(&start.to_string(), &end.to_string()));
        if end == hi {
            break;
        }
        start = end + 1;
    }
    out
}

/// A character class for the digits `a..=b`.
fn digit_class(a: u8, b: u8) -> String {
    match b - a {
        0 => (a as char).to_string(),
        1 => format!("[{}{}]", a as char, b as char),
        _ => format!("[{}-{}]", a as char, b as char),
    }
}

/// Alternatives for the numbers between `lo` and `hi`, two digit strings of equal length.
fn same_length(lo: &str, hi: &str) -> Vec<String> {
    let (l, h) = (lo.as_bytes(), hi.as_bytes());
    if l.len() == 1 {
        return vec![digit_class(l[0], h[0])];
    }
    if l[0] == h[0] {
        let head = l[0] as char;
        return same_length(&lo[1..], &hi[1..])
            .into_iter()
            .map(|rest| format!("{head}{rest}"))
            .collect();
    }
    let rest_len = l.len() - 1;
    let nines = "9".repeat(rest_len);
    let zeros = "0".repeat(rest_len);
    let mut out = Vec::new();
    let mut first_full = l[0];
    if lo[1..] != zeros {
        let head = l[0] as char;
        out.extend(
            same_length(&lo[1..], &nines)
                .into_iter()
                .map(|rest| format!("{head}{rest}")),
        );
        first_full += 1;
    }
    let mut last_full = h[0];
    let mut tail = Vec::new();
    if hi[1..] != nines {
        let head = h[0] as char;
        tail.extend(
            same_length(&zeros, &hi[1..])
                .into_iter()
                .map(|rest| format!("{head}{rest}")),
        );
        last_full -= 1;
    }
    if first_full <= last_full {
        out.push(format!(
            "{}{}",
            digit_class(first_full, last_full),
            "[0-9]".repeat(rest_len)
        ));
    }
    out.extend(tail);
    out
}

/// Contiguous runs of `set`, as inclusive `(first, last)` pairs.
pub fn runs(set: &BTreeSet<usize>) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for &n in set {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == n => *last = n,
            _ => out.push((n, n)),
        }
    }
    out
}

/// A regex matching exactly the numbers of `set`: contiguous runs become ranges, joined as an
/// alternation (`(?:[0-9]|1[01])`); a single alternative is written bare.
pub fn number_set_regex(set: &BTreeSet<usize>) -> String {
    let alternatives: Vec<String> = runs(set)
        .into_iter()
        .flat_map(|(a, b)| range_alternatives(a as u64, b as u64))
        .collect();
    match alternatives.as_slice() {
        [one] => one.clone(),
        many => format!("(?:{})", many.join("|")),
    }
}

/// A name split into its fixed part and its layer number: `model.layers.3.mlp.up_proj.weight`
/// is stem `[model, layers, #, mlp, up_proj]`, layer 3, leaf `weight`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Shape {
    /// Segments, with `None` where the layer number stands.
    stem: Vec<Option<String>>,
    /// `weight` or `bias` when the name ends with one of them (grouped into one pattern).
    has_leaf: bool,
}

fn is_layer_container(segment: &str) -> bool {
    matches!(segment, "layers" | "h" | "blocks")
}

/// Splits `name` into its shape, layer and leaf.
fn split(name: &str) -> (Shape, Option<usize>, Option<String>) {
    let mut parts: Vec<&str> = name.split('.').collect();
    let leaf = match parts.last() {
        Some(&last) if parts.len() > 1 && (last == "weight" || last == "bias") => {
            parts.pop();
            Some(last.to_string())
        }
        _ => None,
    };
    let mut layer = None;
    let mut stem = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let numbered = layer.is_none()
            && i > 0
            && is_layer_container(parts[i - 1])
            && !part.is_empty()
            && part.bytes().all(|b| b.is_ascii_digit())
            && (part.len() == 1 || !part.starts_with('0'));
        match part.parse::<usize>() {
            Ok(n) if numbered => {
                layer = Some(n);
                stem.push(None);
            }
            _ => stem.push(Some(part.to_string())),
        }
    }
    (
        Shape {
            stem,
            has_leaf: leaf.is_some(),
        },
        layer,
        leaf,
    )
}

/// Escapes one name segment for a regex, leaving no `.` in it.
fn escape_segment(segment: &str) -> String {
    regex::escape(segment)
}

/// The leaf part of a pattern for these leaves (`weight` first).
fn leaf_regex(leaves: &BTreeSet<String>) -> String {
    let mut ordered: Vec<&str> = leaves.iter().map(String::as_str).collect();
    ordered.sort_by_key(|l| (*l != "weight", l.to_string()));
    match ordered.as_slice() {
        [one] => escape_segment(one),
        many => format!(
            "(?:{})",
            many.iter()
                .map(|l| escape_segment(l))
                .collect::<Vec<_>>()
                .join("|")
        ),
    }
}

/// Compact anchored patterns selecting exactly `names`: one per module (name with the layer
/// number taken out) and set of leaves, with the module's layers as a number alternation.
/// Segments are joined with plain dots (see the module documentation).
pub fn compact_patterns<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    // module shape -> layer -> leaves present
    let mut by_shape: BTreeMap<Shape, BTreeMap<Option<usize>, BTreeSet<String>>> = BTreeMap::new();
    for name in names {
        let (shape, layer, leaf) = split(name);
        let leaves = by_shape.entry(shape).or_default().entry(layer).or_default();
        if let Some(leaf) = leaf {
            leaves.insert(leaf);
        }
    }
    let mut patterns = Vec::new();
    for (shape, layers) in by_shape {
        // Layers that share the same leaves share one pattern.
        let mut by_leaves: BTreeMap<BTreeSet<String>, BTreeSet<usize>> = BTreeMap::new();
        let mut unlayered: Vec<BTreeSet<String>> = Vec::new();
        for (layer, leaves) in layers {
            match layer {
                Some(layer) => {
                    by_leaves.entry(leaves).or_default().insert(layer);
                }
                None => unlayered.push(leaves),
            }
        }
        let render = |layers: Option<&BTreeSet<usize>>, leaves: &BTreeSet<String>| {
            let mut segments: Vec<String> = shape
                .stem
                .iter()
                .map(|s| match (s, layers) {
                    (Some(text), _) => escape_segment(text),
                    (None, Some(layers)) => number_set_regex(layers),
                    (None, None) => unreachable!("a layer slot without layers"),
                })
                .collect();
            if shape.has_leaf {
                segments.push(leaf_regex(leaves));
            }
            format!("^{}$", segments.join("."))
        };
        for leaves in unlayered {
            patterns.push(render(None, &leaves));
        }
        for (leaves, layers) in by_leaves {
            patterns.push(render(Some(&layers), &leaves));
        }
    }
    patterns
}

/// How Axolotl reads one `unfrozen_parameters` entry: every `.` not followed by `+` is escaped,
/// and the result is matched at the start of the name (Python's `re.match`). A trailing
/// `[start:end]` row range is not produced by tunescope and is rejected.
pub fn axolotl_regex(pattern: &str) -> Result<Regex> {
    anyhow::ensure!(
        !pattern.ends_with(']') || pattern.ends_with("$]"),
        "pattern {pattern:?} ends with a row range, which tunescope does not use"
    );
    let mut escaped = String::with_capacity(pattern.len() + 8);
    let chars: Vec<char> = pattern.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if *c == '.' && chars.get(i + 1) != Some(&'+') {
            escaped.push_str("\\.");
        } else {
            escaped.push(*c);
        }
    }
    Regex::new(&format!("^(?:{escaped})")).with_context(|| {
        format!("pattern {pattern:?} is not a valid regex once Axolotl escapes its dots")
    })
}

/// The names Axolotl would unfreeze with these patterns.
pub fn axolotl_matches<'a>(
    patterns: &[String],
    names: impl IntoIterator<Item = &'a str>,
) -> Result<BTreeSet<String>> {
    let compiled = patterns
        .iter()
        .map(|p| axolotl_regex(p))
        .collect::<Result<Vec<_>>>()?;
    Ok(names
        .into_iter()
        .filter(|n| compiled.iter().any(|r| r.is_match(n)))
        .map(str::to_string)
        .collect())
}

/// The names matched by the patterns read as plain regexes (dots as wildcards), at the start.
pub fn plain_matches<'a>(
    patterns: &[String],
    names: impl IntoIterator<Item = &'a str>,
) -> Result<BTreeSet<String>> {
    let compiled = patterns
        .iter()
        .map(|p| {
            Regex::new(&format!("^(?:{p})"))
                .with_context(|| format!("pattern {p:?} is not a valid regex"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(names
        .into_iter()
        .filter(|n| compiled.iter().any(|r| r.is_match(n)))
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(alternatives: &[String]) -> Regex {
        Regex::new(&format!("^(?:{})$", alternatives.join("|"))).unwrap()
    }

    #[test]
    fn ranges_match_exactly_their_numbers() {
        for (lo, hi) in [
            (0, 0),
            (0, 9),
            (0, 11),
            (3, 7),
            (7, 23),
            (10, 19),
            (12, 35),
            (0, 99),
            (5, 100),
            (19, 201),
            (99, 100),
            (123, 4567),
        ] {
            let re = whole(&range_alternatives(lo, hi));
            for n in 0..5000u64 {
                assert_eq!(
                    re.is_match(&n.to_string()),
                    (lo..=hi).contains(&n),
                    "{lo}..={hi} on {n}: {re}"
                );
            }
            assert!(!re.is_match("01") && !re.is_match("007"));
        }
    }

    #[test]
    fn the_documented_example() {
        let set: BTreeSet<usize> = (0..12).collect();
        assert_eq!(number_set_regex(&set), "(?:[0-9]|1[01])");
        let set: BTreeSet<usize> = [0, 2, 5, 6].into_iter().collect();
        assert_eq!(number_set_regex(&set), "(?:0|2|[56])");
        let set: BTreeSet<usize> = [4].into_iter().collect();
        assert_eq!(number_set_regex(&set), "4");
    }

    #[test]
    fn number_sets_match_exactly() {
        let sets: Vec<BTreeSet<usize>> = vec![
            [0, 1, 2, 3, 9, 10, 11, 30, 31, 99, 100, 101]
                .into_iter()
                .collect(),
            (7..=64).collect(),
            [1, 3, 5, 7, 11, 13].into_iter().collect(),
        ];
        for set in sets {
            let re = Regex::new(&format!("^{}$", number_set_regex(&set))).unwrap();
            for n in 0..300usize {
                assert_eq!(re.is_match(&n.to_string()), set.contains(&n), "{n} {re}");
            }
        }
    }

    #[test]
    fn patterns_group_layers_and_leaves() {
        let names: Vec<String> = (0..12)
            .flat_map(|l| {
                [
                    format!("model.layers.{l}.self_attn.q_proj.weight"),
                    format!("model.layers.{l}.self_attn.q_proj.bias"),
                ]
            })
            .chain(["model.embed_tokens.weight".to_string()])
            .collect();
        let patterns = compact_patterns(names.iter().map(String::as_str));
        assert_eq!(
            patterns,
            vec![
                "^model.embed_tokens.weight$".to_string(),
                "^model.layers.(?:[0-9]|1[01]).self_attn.q_proj.(?:weight|bias)$".to_string(),
            ]
        );
        let mut all = names.clone();
        all.push("model.layers.12.self_attn.q_proj.weight".into());
        all.push("model.layers.1.self_attn.k_proj.weight".into());
        let expected: BTreeSet<String> = names.into_iter().collect();
        assert_eq!(
            axolotl_matches(&patterns, all.iter().map(String::as_str)).unwrap(),
            expected
        );
        assert_eq!(
            plain_matches(&patterns, all.iter().map(String::as_str)).unwrap(),
            expected
        );
    }

    #[test]
    fn axolotl_escaping_breaks_escaped_dots() {
        // What the dot-escaping does to a pattern written with `\.`: it matches nothing.
        let re = axolotl_regex(r"^model\.norm\.weight$").unwrap();
        assert!(!re.is_match("model.norm.weight"));
        let re = axolotl_regex("^model.norm.weight$").unwrap();
        assert!(re.is_match("model.norm.weight"));
        assert!(!re.is_match("modelXnorm.weight"));
    }
}
