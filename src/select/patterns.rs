//! Name patterns of `include:` and `exclude:`, and "did you mean" helpers.

use anyhow::{bail, Context, Result};
use globset::{GlobBuilder, GlobMatcher};
use regex::Regex;

/// A compiled name pattern: a glob matched against the whole dotted name, or (with a `re:`
/// prefix) a regular expression anchored at both ends.
#[derive(Debug, Clone)]
pub struct NamePattern {
    /// The pattern as written.
    pub text: String,
    matcher: Matcher,
}

#[derive(Debug, Clone)]
enum Matcher {
    Glob(GlobMatcher),
    Regex(Regex),
}

impl NamePattern {
    /// Compiles `text`; `key` (`include` or `exclude`) names the recipe key in errors.
    pub fn compile(text: &str, key: &str) -> Result<Self> {
        if text.trim().is_empty() {
            bail!("trainable.{key}: a pattern is empty; write a glob such as `model.layers.*.mlp.*` or a regex as `re:...`");
        }
        let matcher = if let Some(re) = text.strip_prefix("re:") {
            let anchored = format!("^(?:{re})$");
            Matcher::Regex(Regex::new(&anchored).with_context(|| {
                format!("trainable.{key}: {text:?} is not a valid regular expression (after `re:`)")
            })?)
        } else {
            let glob = GlobBuilder::new(text)
                .literal_separator(false)
                .backslash_escape(true)
                .build()
                .with_context(|| {
                    format!("trainable.{key}: {text:?} is not a valid glob (use `*`, `?`, `[..]`, or prefix `re:` for a regex)")
                })?;
            Matcher::Glob(glob.compile_matcher())
        };
        Ok(Self {
            text: text.to_string(),
            matcher,
        })
    }

    /// Whether the pattern matches the whole of `name`.
    pub fn is_match(&self, name: &str) -> bool {
        match &self.matcher {
            Matcher::Glob(g) => g.is_match(name),
            Matcher::Regex(r) => r.is_match(name),
        }
    }
}

/// Up to `n` of `candidates` closest to `target` (Levenshtein distance on the text; ties keep
/// the candidates' order).
pub fn closest<'a>(
    target: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    n: usize,
) -> Vec<&'a str> {
    let mut scored: Vec<(usize, usize, &str)> = candidates
        .into_iter()
        .enumerate()
        .map(|(i, c)| (strsim::levenshtein(target, c), i, c))
        .collect();
    scored.sort();
    scored.into_iter().take(n).map(|(_, _, c)| c).collect()
}

/// `a`, `b`, `c` formatted for an error message.
pub fn quoted_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    items
        .into_iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_the_whole_name() {
        let p = NamePattern::compile("model.layers.*.self_attn.q_proj.*", "include").unwrap();
        assert!(p.is_match("model.layers.0.self_attn.q_proj.weight"));
        assert!(p.is_match("model.layers.11.self_attn.q_proj.bias"));
        assert!(!p.is_match("model.layers.0.self_attn.k_proj.weight"));
        let p = NamePattern::compile("model.layers.[01].mlp.?p_proj.weight", "include").unwrap();
        assert!(p.is_match("model.layers.1.mlp.up_proj.weight"));
        assert!(!p.is_match("model.layers.2.mlp.up_proj.weight"));
        let p = NamePattern::compile("q_proj", "include").unwrap();
        assert!(!p.is_match("model.layers.0.self_attn.q_proj.weight"));
    }

    #[test]
    fn regexes_are_anchored() {
        let p = NamePattern::compile(r"re:.*\.o_proj\.weight", "include").unwrap();
        assert!(p.is_match("model.layers.0.self_attn.o_proj.weight"));
        assert!(!p.is_match("model.layers.0.self_attn.o_proj.weight2"));
        let p = NamePattern::compile("re:o_proj", "include").unwrap();
        assert!(!p.is_match("model.layers.0.self_attn.o_proj.weight"));
        let p = NamePattern::compile("re:a|b", "include").unwrap();
        assert!(p.is_match("a") && p.is_match("b") && !p.is_match("ab"));
    }

    #[test]
    fn bad_patterns_are_quoted() {
        let err = format!(
            "{:#}",
            NamePattern::compile("re:(unclosed", "exclude").unwrap_err()
        );
        assert!(
            err.contains("\"re:(unclosed\"") && err.contains("trainable.exclude"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            NamePattern::compile("model.[layers", "include").unwrap_err()
        );
        assert!(
            err.contains("\"model.[layers\"") && err.contains("glob"),
            "{err}"
        );
        assert!(NamePattern::compile(" ", "include").is_err());
    }

    #[test]
    fn closest_orders_by_distance() {
        let names = [
            "model.norm.weight",
            "lm_head.weight",
            "model.embed_tokens.weight",
        ];
        assert_eq!(closest("lm_head.weigth", names, 1), vec!["lm_head.weight"]);
        assert_eq!(closest("x", names, 5).len(), 3);
    }
}
