//! Answer normalisation, reading numbers (digits and number words) and matching a generated
//! answer against references.

use std::sync::OnceLock;

use regex::Regex;

use super::MatchMode;

/// Characters stripped from both ends of an answer (quotes, brackets, sentence punctuation).
/// Signs, `$` and `%` are kept: they change what a number means.
const SURROUNDING: &[char] = &[
    '"', '\'', '`', '“', '”', '‘', '’', '«', '»', '(', ')', '[', ']', '{', '}', '<', '>', '.', ',',
    ';', ':', '!', '?', '*', '_', '¡', '¿', '。', '，', '！', '？',
];

/// Lowercase, trim, collapse whitespace, strip surrounding punctuation (and so a trailing period).
pub fn normalize(text: &str) -> String {
    let lower = text.to_lowercase();
    let collapsed = lower.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed
        .trim_matches(|c: char| SURROUNDING.contains(&c) || c.is_whitespace())
        .to_string()
}

/// `text` with `regex` applied: the first capture group when the pattern has one and it took
/// part in the match, else the whole match; `None` when the pattern does not match.
pub fn extract(text: &str, regex: &Regex) -> Option<String> {
    let caps = regex.captures(text)?;
    let m = caps.get(1).or_else(|| caps.get(0))?;
    Some(m.as_str().to_string())
}

/// Whether `predicted` (already cut and extracted) matches any of `answers`.
pub fn matches(predicted: &str, answers: &[String], mode: MatchMode) -> bool {
    match mode {
        MatchMode::Exact => {
            let p = normalize(predicted);
            answers.iter().any(|a| normalize(a) == p)
        }
        MatchMode::Numeric => match parse_number(predicted) {
            Some(p) => answers
                .iter()
                .filter_map(|a| parse_number(a))
                .any(|a| numbers_equal(a, p)),
            None => false,
        },
    }
}

fn numbers_equal(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn token_pattern() -> &'static Regex {
    static PATTERN: OnceLock<Regex> = OnceLock::new();
    PATTERN.get_or_init(|| {
        Regex::new(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?|[-+]?\d+(?:\.\d+)?|[-+]?\.\d+|[a-z]+")
            .expect("valid regex")
    })
}

/// What a number word contributes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Word {
    /// 0–19.
    Unit(u64),
    /// 20, 30, … 90.
    Tens(u64),
    Hundred,
    Thousand,
}

fn number_word(word: &str) -> Option<Word> {
    const UNITS: [&str; 20] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: [&str; 8] = [
        "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    if let Some(i) = UNITS.iter().position(|w| *w == word) {
        return Some(Word::Unit(i as u64));
    }
    if let Some(i) = TENS.iter().position(|w| *w == word) {
        return Some(Word::Tens(20 + 10 * i as u64));
    }
    match word {
        "hundred" => Some(Word::Hundred),
        "thousand" => Some(Word::Thousand),
        _ => None,
    }
}

/// Reads a run of number words ("twenty one", "one hundred and five", "three thousand") into a
/// value, stopping at the first word that cannot continue the number ("one two" reads 1).
fn read_words(words: &[&str]) -> Option<u64> {
    let mut total = 0u64; // completed thousands
    let mut current = 0u64; // below a thousand
    let mut last: Option<Word> = None;
    let mut i = 0;
    while i < words.len() {
        let mut word = words[i];
        // "and" may join parts ("one hundred and five") when a number word follows.
        if word == "and" && last.is_some() && i + 1 < words.len() {
            word = words[i + 1];
            if !matches!(last, Some(Word::Hundred | Word::Thousand)) {
                break;
            }
            i += 1;
        }
        let Some(w) = number_word(word) else { break };
        let fits = match (last, w) {
            (_, Word::Unit(0)) => last.is_none(),
            (None | Some(Word::Hundred | Word::Thousand), Word::Unit(_) | Word::Tens(_)) => true,
            (Some(Word::Tens(_)), Word::Unit(u)) => (1..10).contains(&u),
            (Some(Word::Unit(u)), Word::Hundred) => u > 0 && current < 100,
            (None, Word::Hundred) => true,
            (Some(Word::Unit(_) | Word::Tens(_) | Word::Hundred), Word::Thousand) => {
                total == 0 && current > 0
            }
            (None, Word::Thousand) => true,
            _ => false,
        };
        if !fits {
            break;
        }
        match w {
            Word::Unit(u) | Word::Tens(u) => current += u,
            Word::Hundred => current = current.max(1) * 100,
            Word::Thousand => {
                total += current.max(1) * 1000;
                current = 0;
            }
        }
        last = Some(w);
        i += 1;
    }
    last.map(|_| total + current)
}

/// The first number in `text`: digits (`7`, `-3.5`, `1,000`) or number words (`seven`,
/// `twenty-one`, `one hundred and five`), whichever comes first.
pub fn parse_number(text: &str) -> Option<f64> {
    let lower = text.to_lowercase();
    let tokens: Vec<&str> = token_pattern()
        .find_iter(&lower)
        .map(|m| m.as_str())
        .collect();
    for (i, token) in tokens.iter().enumerate() {
        let first = token.chars().next()?;
        if first.is_ascii_digit() || matches!(first, '-' | '+' | '.') {
            return token.replace(',', "").parse::<f64>().ok();
        }
        if number_word(token).is_some() {
            return read_words(&tokens[i..]).map(|v| v as f64);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_lowercases_collapses_and_strips_punctuation() {
        assert_eq!(normalize("  The   Sky\tis BLUE. "), "the sky is blue");
        assert_eq!(normalize("\"Blue!\""), "blue");
        assert_eq!(normalize("(cold)."), "cold");
        assert_eq!(normalize("-5"), "-5");
        assert_eq!(normalize("3.14"), "3.14");
        assert_eq!(normalize("..."), "");
    }

    #[test]
    fn digits_and_words() {
        assert_eq!(parse_number("7"), Some(7.0));
        assert_eq!(parse_number("seven"), Some(7.0));
        assert_eq!(parse_number("Seven."), Some(7.0));
        assert_eq!(parse_number("twenty-one"), Some(21.0));
        assert_eq!(parse_number("twenty one"), Some(21.0));
        assert_eq!(parse_number("there are thirteen circles"), Some(13.0));
        assert_eq!(parse_number("one hundred and five"), Some(105.0));
        assert_eq!(parse_number("three thousand two hundred"), Some(3200.0));
        assert_eq!(parse_number("ninety-nine"), Some(99.0));
        assert_eq!(parse_number("zero"), Some(0.0));
        assert_eq!(parse_number("1,000 apples"), Some(1000.0));
        assert_eq!(parse_number("-3.5"), Some(-3.5));
        assert_eq!(parse_number("the answer is 42."), Some(42.0));
        assert_eq!(parse_number("no number here"), None);
        assert_eq!(parse_number(""), None);
    }

    #[test]
    fn number_words_stop_where_the_number_ends() {
        // "one two" is two numbers; the first is read.
        assert_eq!(parse_number("one two"), Some(1.0));
        assert_eq!(parse_number("three and four"), Some(3.0));
        assert_eq!(parse_number("twenty twenty"), Some(20.0));
        assert_eq!(parse_number("twenty twelve"), Some(20.0));
        // The first number wins, whether digits or words.
        assert_eq!(parse_number("five or 6"), Some(5.0));
        assert_eq!(parse_number("6 or five"), Some(6.0));
        // Words that merely contain number words are not numbers.
        assert_eq!(parse_number("someone often"), None);
    }

    #[test]
    fn numeric_match_reads_words_and_digits() {
        let answers = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(matches("seven", &answers(&["7"]), MatchMode::Numeric));
        assert!(matches("7", &answers(&["seven"]), MatchMode::Numeric));
        assert!(matches("twenty-one", &answers(&["21"]), MatchMode::Numeric));
        assert!(matches(
            "Twenty one.",
            &answers(&["21"]),
            MatchMode::Numeric
        ));
        assert!(matches("7.0", &answers(&["7"]), MatchMode::Numeric));
        assert!(!matches("eight", &answers(&["7"]), MatchMode::Numeric));
        assert!(!matches("no idea", &answers(&["7"]), MatchMode::Numeric));
        assert!(matches("8", &answers(&["7", "eight"]), MatchMode::Numeric));
    }

    #[test]
    fn exact_match_uses_normalisation() {
        let answers = vec!["Blue".to_string(), "light blue".to_string()];
        assert!(matches(" blue. ", &answers, MatchMode::Exact));
        assert!(matches("LIGHT   blue", &answers, MatchMode::Exact));
        assert!(!matches("blue sky", &answers, MatchMode::Exact));
        // Exact match does not read number words.
        assert!(!matches("seven", &["7".to_string()], MatchMode::Exact));
    }

    #[test]
    fn extraction_takes_the_first_group_else_the_whole_match() {
        let with_group = Regex::new(r"answer is (\w+)").unwrap();
        assert_eq!(
            extract("so the answer is blue.", &with_group).as_deref(),
            Some("blue")
        );
        let whole = Regex::new(r"\d+").unwrap();
        assert_eq!(extract("about 12 or 13", &whole).as_deref(), Some("12"));
        assert_eq!(extract("nothing", &whole), None);
    }
}
