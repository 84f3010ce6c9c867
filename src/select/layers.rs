//! The `layers:` filter of a recipe's `trainable:` section.
//!
//! Written either as a string (`"all"`, `"0..8"`, `"4.."`, `"..4"`, `"-4.."`, `"-4..-1"`,
//! `"3"`, or a comma list of these such as `"0,2,5..7"`) or as a YAML list of integers
//! (`[0, 1, 5]`). Ranges are half-open; negative numbers count from the end, so `-4..` is
//! the last four layers and `-1` the last layer.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// The forms a layer filter can take, shown in error messages.
pub const LAYER_FORMS: &str =
    "\"all\", \"0..8\" (half-open), \"4..\", \"..4\", \"-4..\" (last four), \"-4..-1\", \"3\", \"0,2,5..7\", or a list [0, 1, 5]";

/// Which decoder layers a kind selection covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerSpec {
    /// Every layer (`"all"`).
    All,
    /// A string of comma-separated indices and ranges, parsed.
    Expr(Vec<LayerItem>),
    /// A YAML list of indices (negative ones count from the end).
    List(Vec<i64>),
}

/// One element of a [`LayerSpec::Expr`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerItem {
    /// A single layer; negative counts from the end (`-1` is the last layer).
    Index(i64),
    /// A half-open range; a missing bound is the start or end of the stack, negative bounds
    /// count from the end.
    Range {
        start: Option<i64>,
        end: Option<i64>,
    },
}

impl fmt::Display for LayerItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerItem::Index(i) => write!(f, "{i}"),
            LayerItem::Range { start, end } => {
                if let Some(s) = start {
                    write!(f, "{s}")?;
                }
                f.write_str("..")?;
                if let Some(e) = end {
                    write!(f, "{e}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for LayerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerSpec::All => f.write_str("all"),
            LayerSpec::Expr(items) => {
                let parts: Vec<String> = items.iter().map(ToString::to_string).collect();
                f.write_str(&parts.join(","))
            }
            LayerSpec::List(list) => {
                let parts: Vec<String> = list.iter().map(ToString::to_string).collect();
                f.write_str(&parts.join(","))
            }
        }
    }
}

impl FromStr for LayerSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        LayerSpec::parse(s)
    }
}

impl LayerSpec {
    /// Parses the string form; the error quotes the text and lists the accepted forms.
    pub fn parse(text: &str) -> Result<Self> {
        let trimmed = text.trim();
        if trimmed.eq_ignore_ascii_case("all") {
            return Ok(LayerSpec::All);
        }
        let fail = |why: &str| -> anyhow::Error {
            anyhow::anyhow!(
                "trainable.layers: cannot read {text:?}: {why}; accepted forms: {LAYER_FORMS}"
            )
        };
        if trimmed.is_empty() {
            return Err(fail("it is empty"));
        }
        let mut items = Vec::new();
        for part in trimmed.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(fail("an element of the comma list is empty"));
            }
            let number = |s: &str| -> Result<Option<i64>> {
                let s = s.trim();
                if s.is_empty() {
                    return Ok(None);
                }
                s.parse::<i64>()
                    .map(Some)
                    .map_err(|_| fail(&format!("{s:?} is not a whole number")))
            };
            let item = match part.split_once("..") {
                Some((start, end)) => LayerItem::Range {
                    start: number(start)?,
                    end: number(end)?,
                },
                None => match number(part)? {
                    Some(i) => LayerItem::Index(i),
                    None => return Err(fail("an element of the comma list is empty")),
                },
            };
            items.push(item);
        }
        Ok(LayerSpec::Expr(items))
    }

    /// The layer indices this filter selects in a stack of `num_layers` layers. Errors when an
    /// index or range falls outside the stack or a range is empty.
    pub fn resolve(&self, num_layers: usize) -> Result<BTreeSet<usize>> {
        let n = num_layers as i64;
        let outside = |what: &str| -> anyhow::Error {
            let valid = if num_layers == 0 {
                "it has no decoder layers at all".to_string()
            } else {
                format!(
                    "valid indices are 0..{num_layers}, or -{num_layers}.. counting from the end"
                )
            };
            anyhow::anyhow!(
                "trainable.layers {:?}: {what} is outside the model, which has {num_layers} layers \
                 ({valid}); narrow the range",
                self.to_string()
            )
        };
        let index = |i: i64| -> Result<usize> {
            let abs = if i < 0 { n + i } else { i };
            if abs < 0 || abs >= n {
                return Err(outside(&format!("layer {i}")));
            }
            Ok(abs as usize)
        };
        let mut out = BTreeSet::new();
        match self {
            LayerSpec::All => out.extend(0..num_layers),
            LayerSpec::List(list) => {
                for &i in list {
                    out.insert(index(i)?);
                }
            }
            LayerSpec::Expr(items) => {
                for item in items {
                    match *item {
                        LayerItem::Index(i) => {
                            out.insert(index(i)?);
                        }
                        LayerItem::Range { start, end } => {
                            let text = item.to_string();
                            let s = match start {
                                None => 0,
                                Some(s) if s < 0 => n + s,
                                Some(s) => s,
                            };
                            let e = match end {
                                None => n,
                                Some(e) if e < 0 => n + e,
                                Some(e) => e,
                            };
                            if s < 0 || s > n || e < 0 || e > n || (start.is_some() && s >= n) {
                                return Err(outside(&format!("range {text}")));
                            }
                            if s >= e {
                                bail!(
                                    "trainable.layers {:?}: range {text} selects no layer on a model with \
                                     {num_layers} layers (ranges are half-open: start..end with start < end)",
                                    self.to_string()
                                );
                            }
                            out.extend(s as usize..e as usize);
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

impl Serialize for LayerSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            LayerSpec::List(list) => {
                let mut seq = serializer.serialize_seq(Some(list.len()))?;
                for i in list {
                    seq.serialize_element(i)?;
                }
                seq.end()
            }
            other => serializer.serialize_str(&other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for LayerSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LayerVisitor;

        impl<'de> Visitor<'de> for LayerVisitor {
            type Value = LayerSpec;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a layer filter: {LAYER_FORMS}")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<LayerSpec, E> {
                // serde names the key itself; drop ours to avoid "layers: trainable.layers: ...".
                LayerSpec::parse(v).map_err(|e| {
                    let text = format!("{e:#}");
                    E::custom(text.strip_prefix("trainable.layers: ").unwrap_or(&text))
                })
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<LayerSpec, E> {
                Ok(LayerSpec::Expr(vec![LayerItem::Index(v)]))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<LayerSpec, E> {
                let v = i64::try_from(v)
                    .map_err(|_| E::custom(format!("{v} is too large for a layer index")))?;
                self.visit_i64(v)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LayerSpec, A::Error> {
                let mut list = Vec::new();
                while let Some(i) = seq.next_element::<i64>()? {
                    list.push(i);
                }
                if list.is_empty() {
                    return Err(de::Error::custom(format!(
                        "the list is empty; omit `layers` for all layers, or use {LAYER_FORMS}"
                    )));
                }
                Ok(LayerSpec::List(list))
            }
        }

        deserializer.deserialize_any(LayerVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[usize]) -> BTreeSet<usize> {
        v.iter().copied().collect()
    }

    fn res(text: &str, n: usize) -> BTreeSet<usize> {
        LayerSpec::parse(text).unwrap().resolve(n).unwrap()
    }

    #[test]
    fn string_forms_resolve() {
        assert_eq!(res("all", 4), set(&[0, 1, 2, 3]));
        assert_eq!(res("0..2", 4), set(&[0, 1]));
        assert_eq!(res("2..", 4), set(&[2, 3]));
        assert_eq!(res("..1", 4), set(&[0]));
        assert_eq!(res("-2..", 4), set(&[2, 3]));
        assert_eq!(res("-3..-1", 4), set(&[1, 2]));
        assert_eq!(res("3", 4), set(&[3]));
        assert_eq!(res("-1", 4), set(&[3]));
        assert_eq!(res("0, 2..4", 4), set(&[0, 2, 3]));
        assert_eq!(res("..", 3), set(&[0, 1, 2]));
        assert_eq!(res("0..4", 4), set(&[0, 1, 2, 3]));
    }

    #[test]
    fn list_form_resolves() {
        assert_eq!(
            LayerSpec::List(vec![0, -1]).resolve(4).unwrap(),
            set(&[0, 3])
        );
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "all", "0..8", "4..", "..4", "-4..", "-4..-1", "3", "0,2,5..7",
        ] {
            let spec = LayerSpec::parse(text).unwrap();
            assert_eq!(spec.to_string(), text);
            assert_eq!(LayerSpec::parse(&spec.to_string()).unwrap(), spec);
        }
        assert_eq!(LayerSpec::List(vec![0, 1, 5]).to_string(), "0,1,5");
    }

    #[test]
    fn malformed_strings_are_quoted() {
        for text in ["", "x", "0..x", "1,,2", "0...3", "1.5"] {
            let err = LayerSpec::parse(text).unwrap_err().to_string();
            assert!(err.contains(&format!("{text:?}")), "{err}");
            assert!(err.contains("accepted forms"), "{err}");
        }
    }

    #[test]
    fn out_of_range_names_the_layer_count() {
        for text in ["0..40", "5", "-5..", "2..", "-3"] {
            let err = LayerSpec::parse(text)
                .unwrap()
                .resolve(2)
                .unwrap_err()
                .to_string();
            assert!(err.contains("2 layers"), "{text}: {err}");
        }
        let err = LayerSpec::List(vec![0, 7])
            .resolve(2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("layer 7") && err.contains("2 layers"), "{err}");
        let err = LayerSpec::parse("1..1")
            .unwrap()
            .resolve(2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("selects no layer"), "{err}");
    }
}
