//! Records to token ids with loss labels: assistant replies carry labels, everything else `-100`.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};

use super::jsonl::Record;
use crate::model::tokenizer::{ChatMessage, ModelTokenizer};
use crate::model::vlm::Pixels;

/// Label of a position that carries no loss.
pub const IGNORE_INDEX: i64 = -100;

/// One tokenized conversation. `labels[t]` is `input_ids[t]` where that token is trained on and
/// [`IGNORE_INDEX`] elsewhere; labels are not shifted (position `t` predicts `labels[t + 1]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// 1-based line of the record in its JSONL file.
    pub line: usize,
    pub input_ids: Vec<u32>,
    pub labels: Vec<i64>,
    /// The images whose tokens `input_ids` holds, in order (vision-language models only).
    pub images: Vec<PathBuf>,
    /// Their preprocessed pixels, once loaded (see [`crate::data::load_images`]).
    pub pixel_values: Vec<Pixels>,
}

impl Example {
    /// Labelled positions that a previous token predicts (`t >= 1`).
    pub fn label_count(&self) -> usize {
        count_labels(&self.labels)
    }
}

/// How records become examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenizeOptions {
    /// Longest sequence kept; longer ones are cut at the end.
    pub max_length: usize,
    /// Label every token, the prompt included.
    pub train_on_prompt: bool,
}

/// How a vision-language model's image placeholders expand: the `<image>` token id and the
/// number of image tokens each becomes: `count`, or, where the count depends on the image
/// (anyres, Qwen2.5-VL), the counts of each record's images by its line in `per_record`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageTokens {
    pub id: u32,
    pub count: usize,
    pub per_record: std::collections::BTreeMap<usize, Vec<usize>>,
}

impl ImageTokens {
    /// Image tokens of the `index`-th image of the record on `line`.
    fn count_for(&self, line: usize, index: usize) -> usize {
        self.per_record
            .get(&line)
            .and_then(|c| c.get(index))
            .copied()
            .unwrap_or(self.count)
    }
}

/// Tokenized training data and what happened on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedData {
    pub examples: Vec<Example>,
    /// Kept examples that were cut to `max_length`.
    pub truncated: usize,
    /// Lines of records dropped because no labelled token survived (they are not in `truncated`).
    pub dropped: Vec<usize>,
    /// Whether the model's chat template formatted the conversations (else plain text).
    pub used_chat_template: bool,
    /// Tokens in all kept examples.
    pub total_tokens: usize,
    /// Labelled positions with a previous token (`t >= 1`) in all kept examples.
    pub label_tokens: usize,
}

/// A piece of text and whether its tokens carry labels.
#[derive(Debug, Clone, PartialEq)]
struct Segment {
    text: String,
    labelled: bool,
}

impl Segment {
    fn new(text: &str, labelled: bool) -> Self {
        Self {
            text: text.to_string(),
            labelled,
        }
    }
}

/// Tokenizes `records`, labelling assistant replies (or everything with `train_on_prompt`).
///
/// With a chat template each message's added text is encoded on its own, so the assistant
/// header (`<|im_start|>assistant\n` in ChatML) is unlabelled while the reply and its
/// end-of-turn text (`<|im_end|>\n`) are labelled. Without one, message contents are joined with
/// `"\n"`, assistant contents are labelled and the eos token is appended (labelled when the
/// conversation ends with the assistant).
pub fn tokenize(
    records: &[Record],
    tok: &ModelTokenizer,
    opts: &TokenizeOptions,
) -> Result<TokenizedData> {
    tokenize_with_images(records, tok, opts, None)
}

/// Like [`tokenize`]; with `image` (a vision-language model) each record's one `<image>`
/// placeholder expands to `image.count` unlabelled image tokens, and a record must have an
/// `image` exactly when its text holds the placeholder. A cut through an image's tokens drops
/// that image's tokens (and what follows). Without `image` the `image` field is ignored.
pub fn tokenize_with_images(
    records: &[Record],
    tok: &ModelTokenizer,
    opts: &TokenizeOptions,
    image: Option<&ImageTokens>,
) -> Result<TokenizedData> {
    if opts.max_length == 0 {
        bail!("max_length is 0; set it to at least the length of a short example (e.g. 512)");
    }
    if records.is_empty() {
        bail!("there are no records to tokenize");
    }
    let used_chat_template = tok.chat_template.is_some();
    let eos = tok
        .eos_token
        .as_deref()
        .and_then(|t| tok.tokenizer.token_to_id(t))
        .or_else(|| tok.stop_ids.first().copied());

    let mut data = TokenizedData {
        examples: Vec::with_capacity(records.len()),
        truncated: 0,
        dropped: Vec::new(),
        used_chat_template,
        total_tokens: 0,
        label_tokens: 0,
    };
    let mut fallback_lines = Vec::new();
    let mut longest = 0;
    let mut cut_and_dropped = 0;
    for record in records {
        let mut extra_eos = None;
        let segments = if used_chat_template {
            let (segments, exact) = template_segments(tok, &record.messages)
                .with_context(|| format!("record on line {}", record.line))?;
            if !exact {
                fallback_lines.push(record.line);
            }
            segments
        } else {
            let ends_with_reply = record
                .messages
                .last()
                .is_some_and(|m| m.role == "assistant");
            extra_eos = eos.map(|id| (id, ends_with_reply));
            plain_segments(&record.messages)
        };

        let mut input_ids = Vec::new();
        let mut labels = Vec::new();
        let mut placeholders = 0;
        // Where each image's run of tokens starts, and how long it is.
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for segment in segments.iter().filter(|s| !s.text.is_empty()) {
            let ids = tok
                .encode(&segment.text)
                .with_context(|| format!("cannot tokenize the record on line {}", record.line))?;
            let labelled = segment.labelled || opts.train_on_prompt;
            for id in ids {
                match image {
                    Some(img) if id == img.id => {
                        let count = img.count_for(record.line, placeholders);
                        placeholders += 1;
                        runs.push((input_ids.len(), count));
                        input_ids.extend(std::iter::repeat_n(id, count));
                        labels.extend(std::iter::repeat_n(IGNORE_INDEX, count));
                    }
                    _ => {
                        input_ids.push(id);
                        labels.push(if labelled {
                            i64::from(id)
                        } else {
                            IGNORE_INDEX
                        });
                    }
                }
            }
        }
        if image.is_some() {
            check_placeholders(record, placeholders)?;
        }
        if let Some((id, labelled)) = extra_eos {
            input_ids.push(id);
            let labelled = labelled || opts.train_on_prompt;
            labels.push(if labelled {
                i64::from(id)
            } else {
                IGNORE_INDEX
            });
        }

        longest = longest.max(input_ids.len());
        let cut = input_ids.len() > opts.max_length;
        let mut keep = opts.max_length;
        // A cut through an image's tokens drops them all (and what follows).
        if let Some(&(start, _)) = runs.iter().find(|&&(s, n)| cut && s + n > keep && s < keep) {
            keep = start;
        }
        let kept_images = if image.is_some() {
            runs.iter().filter(|&&(s, n)| s + n <= keep).count()
        } else {
            0
        };
        input_ids.truncate(keep);
        labels.truncate(keep);
        let label_count = count_labels(&labels);
        if label_count == 0 {
            data.dropped.push(record.line);
            cut_and_dropped += usize::from(cut);
            continue;
        }
        data.truncated += usize::from(cut);
        data.total_tokens += input_ids.len();
        data.label_tokens += label_count;
        data.examples.push(Example {
            line: record.line,
            input_ids,
            labels,
            images: record.images[..kept_images.min(record.images.len())].to_vec(),
            pixel_values: Vec::new(),
        });
    }

    if let Some(first) = fallback_lines.first() {
        tracing::warn!(
            "the chat template does not render conversations incrementally (each render a prefix \
             of the next) for {} record(s), first on line {first}; labelling those from the first \
             assistant message on",
            fallback_lines.len()
        );
    }
    if data.examples.is_empty() {
        if cut_and_dropped > 0 {
            bail!(
                "max_length {} is too small: every example lost all its labelled tokens to \
                 truncation (the longest example has {longest} tokens); raise max_length",
                opts.max_length
            );
        }
        bail!(
            "no example has a token to train on (max_length {}): the replies are empty and the \
             tokenizer has no eos token to label",
            opts.max_length
        );
    }
    Ok(data)
}

/// A record needs one `<image>` placeholder per image.
fn check_placeholders(record: &Record, placeholders: usize) -> Result<()> {
    let images = record.images.len();
    if placeholders == images {
        return Ok(());
    }
    if placeholders == 0 {
        bail!(
            "line {}: the record has {images} image(s) ({}) but its text has no <image> placeholder; \
             put <image> where each picture belongs, e.g. at the start of the prompt",
            record.line,
            record.images[0].display()
        );
    }
    if images == 0 {
        bail!(
            "line {}: the text has {placeholders} <image> placeholder(s) but the record has no \"image\" or \"images\" field",
            record.line
        );
    }
    bail!(
        "line {}: the text has {placeholders} <image> placeholder(s) but the record lists {images} image(s); \
         give one placeholder per image, in the order of \"images\"",
        record.line
    )
}

/// Labelled positions at `t >= 1` (position 0 is never predicted).
pub(crate) fn count_labels(labels: &[i64]) -> usize {
    labels
        .iter()
        .skip(1)
        .filter(|&&l| l != IGNORE_INDEX)
        .count()
}

/// Plain-text conversation: contents joined by `"\n"` (unlabelled), assistant contents labelled.
fn plain_segments(messages: &[ChatMessage]) -> Vec<Segment> {
    let mut segments = Vec::with_capacity(messages.len() * 2);
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            segments.push(Segment::new("\n", false));
        }
        segments.push(Segment::new(&m.content, m.role == "assistant"));
    }
    segments
}

fn render(
    tok: &ModelTokenizer,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
) -> Result<String> {
    tok.render_chat(messages, add_generation_prompt)?
        .ok_or_else(|| anyhow!("the model has no chat template"))
}

/// Chat-template segments of a conversation and whether they are exact (`false`: the template
/// is not prefix-stable and the fallback labelled everything from the first assistant message).
fn template_segments(
    tok: &ModelTokenizer,
    messages: &[ChatMessage],
) -> Result<(Vec<Segment>, bool)> {
    let full = render(tok, messages, false)?;
    match incremental_segments(tok, messages) {
        Some(segments) => Ok((segments, true)),
        None => Ok((fallback_segments(tok, messages, &full), false)),
    }
}

/// Renders growing prefixes of the conversation; the text each message adds is one segment, and
/// an assistant message's generation prompt (its header) is an unlabelled segment of its own.
/// `None` when some render fails or is not a prefix of the next.
fn incremental_segments(tok: &ModelTokenizer, messages: &[ChatMessage]) -> Option<Vec<Segment>> {
    let mut segments = Vec::with_capacity(messages.len() * 2);
    let mut done = render(tok, &[], false).ok()?;
    if !done.is_empty() {
        segments.push(Segment::new(&done, false));
    }
    for (i, m) in messages.iter().enumerate() {
        let assistant = m.role == "assistant";
        if assistant {
            let header = render(tok, &messages[..i], true).ok()?;
            segments.push(Segment::new(header.strip_prefix(done.as_str())?, false));
            done = header;
        }
        let next = render(tok, &messages[..=i], false).ok()?;
        segments.push(Segment::new(next.strip_prefix(done.as_str())?, assistant));
        done = next;
    }
    Some(segments)
}

/// The whole rendering, labelled from where the first assistant reply starts: after its
/// generation prompt when that is a prefix of the rendering, else at its content's first
/// occurrence, else (content not found) everything.
fn fallback_segments(tok: &ModelTokenizer, messages: &[ChatMessage], full: &str) -> Vec<Segment> {
    let first = messages
        .iter()
        .position(|m| m.role == "assistant")
        .unwrap_or(0);
    let header = render(tok, &messages[..first], true)
        .ok()
        .filter(|h| full.starts_with(h.as_str()))
        .map(|h| h.len());
    let content = messages.get(first).map(|m| m.content.trim()).unwrap_or("");
    let found = || (!content.is_empty()).then(|| full.find(content)).flatten();
    let start = header.or_else(found).unwrap_or(0);
    vec![
        Segment::new(&full[..start], false),
        Segment::new(&full[start..], true),
    ]
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;
    use crate::model::tiny::{make_tiny, TinySpec};
    use crate::model::{Architecture, Model};

    fn tiny_tokenizer() -> ModelTokenizer {
        static TOK: OnceLock<ModelTokenizer> = OnceLock::new();
        TOK.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            make_tiny(&TinySpec::new(Architecture::Qwen2, 7), dir.path()).unwrap();
            Model::open(dir.path().to_str().unwrap()).unwrap().tokenizer
        })
        .clone()
    }

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    fn labelled_text(tok: &ModelTokenizer, ex: &Example) -> String {
        let ids: Vec<u32> = ex
            .labels
            .iter()
            .filter(|&&l| l != IGNORE_INDEX)
            .map(|&l| l as u32)
            .collect();
        tok.tokenizer.decode(&ids, false).unwrap()
    }

    #[test]
    fn incremental_segments_split_header_from_reply() {
        let tok = tiny_tokenizer();
        let msgs = [msg("user", "hi"), msg("assistant", "yes")];
        let segs = incremental_segments(&tok, &msgs).unwrap();
        assert_eq!(
            segs,
            vec![
                Segment::new("<|im_start|>user\nhi<|im_end|>\n", false),
                Segment::new("<|im_start|>assistant\n", false),
                Segment::new("yes<|im_end|>\n", true),
            ]
        );
    }

    #[test]
    fn template_that_is_not_prefix_stable_falls_back() {
        let mut tok = tiny_tokenizer();
        // Numbers the turns from the end, so every render changes what came before.
        tok.chat_template = Some(
            "{% for m in messages %}{{ m['role'] }}{{ messages|length - loop.index }}: \
             {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
                .into(),
        );
        let msgs = [
            msg("user", "two"),
            msg("assistant", "three"),
            msg("user", "four"),
        ];
        assert!(incremental_segments(&tok, &msgs).is_none());
        let (segs, exact) = template_segments(&tok, &msgs).unwrap();
        assert!(!exact);
        assert_eq!(segs[0].text, "user2: two\nassistant1: ");
        assert!(!segs[0].labelled);
        assert_eq!(segs[1].text, "three\nuser0: four\n");
        assert!(segs[1].labelled);

        let rec = Record {
            images: Vec::new(),
            line: 5,
            messages: msgs.to_vec(),
        };
        let opts = TokenizeOptions {
            max_length: 256,
            train_on_prompt: false,
        };
        let data = tokenize(&[rec], &tok, &opts).unwrap();
        assert_eq!(
            labelled_text(&tok, &data.examples[0]),
            "three\nuser0: four\n"
        );
    }

    #[test]
    fn template_render_error_names_the_line() {
        let mut tok = tiny_tokenizer();
        tok.chat_template = Some("{{ raise_exception('roles must alternate') }}".into());
        let rec = Record {
            images: Vec::new(),
            line: 9,
            messages: vec![msg("user", "a"), msg("assistant", "b")],
        };
        let opts = TokenizeOptions {
            max_length: 64,
            train_on_prompt: false,
        };
        let e = format!("{:#}", tokenize(&[rec], &tok, &opts).unwrap_err());
        assert!(
            e.contains("line 9") && e.contains("roles must alternate"),
            "{e}"
        );
    }

    #[test]
    fn plain_labels_reply_and_eos_and_counts_from_position_one() {
        let mut tok = tiny_tokenizer();
        tok.chat_template = None;
        let rec = Record {
            images: Vec::new(),
            line: 1,
            messages: vec![msg("user", "red"), msg("assistant", "blue")],
        };
        let opts = TokenizeOptions {
            max_length: 64,
            train_on_prompt: false,
        };
        let data = tokenize(std::slice::from_ref(&rec), &tok, &opts).unwrap();
        assert!(!data.used_chat_template);
        let ex = &data.examples[0];
        assert_eq!(labelled_text(&tok, ex), "blue<|im_end|>");
        assert_eq!(
            tok.tokenizer.decode(&ex.input_ids, false).unwrap(),
            "red\nblue<|im_end|>"
        );
        assert_eq!(data.label_tokens, ex.label_count());
        assert_eq!(data.total_tokens, ex.input_ids.len());

        // train_on_prompt with one token left: position 0 is never predicted, so it is dropped.
        let opts = TokenizeOptions {
            max_length: 1,
            train_on_prompt: true,
        };
        let e = format!("{:#}", tokenize(&[rec], &tok, &opts).unwrap_err());
        assert!(e.contains("max_length 1 is too small"), "{e}");
    }
}
