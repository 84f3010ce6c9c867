//! The world's fixed word lists: every real English word a skill can produce comes from here
//! (the invented object names come from `names`). Lists are ordered; nothing is read from a map.

/// Colours: attribute values, coloured shapes in counting, and the colour category.
pub const COLOURS: &[&str] = &[
    "red", "blue", "green", "yellow", "purple", "pink", "brown", "grey",
];

/// Shapes (attribute values).
pub const SHAPES: &[&str] = &["circle", "square", "star", "triangle", "heart", "oval"];

/// Sizes (attribute values).
pub const SIZES: &[&str] = &["tiny", "small", "big", "huge"];

/// The attribute kinds an invented object has.
pub const ATTRIBUTE_KINDS: &[&str] = &["colour", "shape", "size"];

/// Nouns counted in lists, with their plurals.
pub const COUNT_NOUNS: &[(&str, &str)] = &[
    ("apple", "apples"),
    ("pear", "pears"),
    ("plum", "plums"),
    ("cat", "cats"),
    ("dog", "dogs"),
    ("bird", "birds"),
    ("cup", "cups"),
    ("hat", "hats"),
    ("ball", "balls"),
    ("key", "keys"),
];

/// Colours used in the counting "shapes" variant (few, so lists repeat colours).
pub const COUNT_COLOURS: &[&str] = &["red", "blue", "green", "yellow"];

/// Shapes used in the counting "shapes" variant.
pub const COUNT_SHAPES: &[(&str, &str)] = &[
    ("circle", "circles"),
    ("square", "squares"),
    ("star", "stars"),
    ("triangle", "triangles"),
];

/// Nouns for the copy and reverse skills.
pub const SEQUENCE_NOUNS: &[&str] = &[
    "cat", "dog", "bird", "fish", "tree", "sun", "moon", "star", "cup", "hat", "ball", "key",
    "book", "door", "box", "car", "boat", "rock", "leaf", "cloud", "rain", "egg", "bell", "apple",
];

/// A category for the multiple-choice skill: its name, the phrase used in questions
/// ("which of these is {phrase} ?") and its members. Members are unique across categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Category {
    pub name: &'static str,
    pub phrase: &'static str,
    pub words: &'static [&'static str],
}

/// The categories, eight words each.
pub const CATEGORIES: &[Category] = &[
    Category {
        name: "fruit",
        phrase: "a fruit",
        words: &[
            "apple", "pear", "plum", "banana", "cherry", "grape", "lemon", "peach",
        ],
    },
    Category {
        name: "animal",
        phrase: "an animal",
        words: &[
            "cat", "dog", "horse", "cow", "sheep", "mouse", "lion", "bird",
        ],
    },
    Category {
        name: "tool",
        phrase: "a tool",
        words: &[
            "hammer", "saw", "drill", "wrench", "spade", "axe", "chisel", "rake",
        ],
    },
    Category {
        name: "colour",
        phrase: "a colour",
        words: COLOURS,
    },
    Category {
        name: "vehicle",
        phrase: "a vehicle",
        words: &[
            "car", "bus", "train", "boat", "ship", "truck", "bike", "plane",
        ],
    },
    Category {
        name: "body part",
        phrase: "a body part",
        words: &["hand", "foot", "arm", "leg", "nose", "ear", "eye", "knee"],
    },
    Category {
        name: "clothing",
        phrase: "a piece of clothing",
        words: &[
            "shirt", "sock", "coat", "scarf", "glove", "boot", "dress", "skirt",
        ],
    },
    Category {
        name: "furniture",
        phrase: "a piece of furniture",
        words: &[
            "chair", "table", "bed", "sofa", "desk", "shelf", "stool", "bench",
        ],
    },
];

/// Antonym pairs; every word occurs in exactly one pair, so each question has one answer.
pub const ANTONYMS: &[(&str, &str)] = &[
    ("hot", "cold"),
    ("big", "small"),
    ("up", "down"),
    ("left", "right"),
    ("fast", "slow"),
    ("happy", "sad"),
    ("light", "dark"),
    ("open", "closed"),
    ("wet", "dry"),
    ("old", "young"),
    ("hard", "soft"),
    ("full", "empty"),
    ("early", "late"),
    ("high", "low"),
    ("long", "short"),
    ("thick", "thin"),
    ("rich", "poor"),
    ("strong", "weak"),
    ("loud", "quiet"),
    ("clean", "dirty"),
    ("sweet", "sour"),
    ("top", "bottom"),
    ("day", "night"),
    ("black", "white"),
    ("win", "lose"),
    ("push", "pull"),
    ("buy", "sell"),
    ("first", "last"),
    ("always", "never"),
    ("before", "after"),
    ("inside", "outside"),
    ("love", "hate"),
    ("true", "false"),
    ("yes", "no"),
    ("more", "less"),
    ("near", "far"),
    ("smooth", "rough"),
    ("safe", "dangerous"),
    ("north", "south"),
    ("east", "west"),
    ("summer", "winter"),
    ("laugh", "cry"),
    ("arrive", "leave"),
    ("asleep", "awake"),
    ("wide", "narrow"),
    ("deep", "shallow"),
    ("friend", "enemy"),
    ("remember", "forget"),
    ("start", "finish"),
    ("alive", "dead"),
];

/// Answer letters of the lettered multiple-choice form.
pub const LETTERS: &[&str] = &["a", "b", "c", "d"];

/// Digits: the counting skill's answers.
pub const DIGITS: &[&str] = &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// Punctuation tokens (each written as its own whitespace-separated word).
pub const PUNCTUATION: &[&str] = &["?", ".", ",", ":", ")"];

/// Every word of the lists above (duplicates included; the caller dedupes).
pub fn all_words() -> Vec<&'static str> {
    let mut words: Vec<&'static str> = Vec::new();
    words.extend(COLOURS);
    words.extend(SHAPES);
    words.extend(SIZES);
    words.extend(ATTRIBUTE_KINDS);
    words.extend(COUNT_NOUNS.iter().flat_map(|&(s, p)| [s, p]));
    words.extend(COUNT_COLOURS);
    words.extend(COUNT_SHAPES.iter().flat_map(|&(s, p)| [s, p]));
    words.extend(SEQUENCE_NOUNS);
    for category in CATEGORIES {
        words.extend(category.phrase.split(' '));
        words.extend(category.words);
    }
    words.extend(ANTONYMS.iter().flat_map(|&(a, b)| [a, b]));
    words.extend(LETTERS);
    words.extend(DIGITS);
    words.extend(PUNCTUATION);
    words
}

/// The category `word` belongs to, if any.
pub fn category_of(word: &str) -> Option<&'static Category> {
    CATEGORIES.iter().find(|c| c.words.contains(&word))
}

/// The antonym of `word`, if it is in the table.
pub fn antonym_of(word: &str) -> Option<&'static str> {
    ANTONYMS.iter().find_map(|&(a, b)| {
        if a == word {
            Some(b)
        } else if b == word {
            Some(a)
        } else {
            None
        }
    })
}
