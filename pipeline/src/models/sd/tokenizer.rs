//! CLIP's byte-level BPE tokenizer, as transformers' `CLIPTokenizer` runs it: special tokens
//! matched in the raw text, then NFC, whitespace runs to one space, lower case, CLIP's word
//! pattern, bytes to printable characters, merges by rank with `</w>` closing each word; then
//! `<|startoftext|>` … `<|endoftext|>`, truncated and padded to 77 tokens.
//!
//! It reads either a `tokenizer.json` or the Hub's older `vocab.json` + `merges.txt`, with the
//! special tokens of `tokenizer_config.json` (SD 2.x pads with `!`, SD 1.x with
//! `<|endoftext|>`). Single-file checkpoints carry no tokenizer: [`ClipTokenizer::builtin`] is
//! OpenAI CLIP's, which every Stable Diffusion text encoder was trained with, from its 48 894
//! merges (`vocab/clip-merges.txt.gz`, from CLIP's `bpe_simple_vocab_16e6.txt.gz`, MIT).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use regex::Regex;
use serde_json::Value;
use unicode_normalization::UnicodeNormalization;

use super::SdError;

const WORDS: &str = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
const END_OF_WORD: &str = "</w>";

/// A loaded CLIP tokenizer.
#[derive(Clone, Debug)]
pub struct ClipTokenizer {
    vocab: HashMap<String, u32>,
    ranks: HashMap<(String, String), usize>,
    /// Special tokens matched verbatim in the text, longest first.
    added: Vec<(String, u32)>,
    /// Textual-inversion words (normalized as the text is) and the ids that stand for them,
    /// longest first.
    learned: Vec<(String, Vec<u32>)>,
    bos: u32,
    eos: u32,
    pad: u32,
    max_len: usize,
    words: Regex,
    bytes: [char; 256],
}

impl ClipTokenizer {
    /// Loads `tokenizer/` of a diffusers folder.
    pub fn load(dir: &Path) -> Result<Self, SdError> {
        let config_path = dir.join("tokenizer_config.json");
        let config: Value = if config_path.is_file() {
            super::config::read_json(&config_path)?
        } else {
            Value::Null
        };
        let json_path = dir.join("tokenizer.json");
        let parts = if json_path.is_file() {
            from_tokenizer_json(&json_path)?
        } else {
            let vocab_path = dir.join("vocab.json");
            let vocab: HashMap<String, u32> = super::config::read_json(&vocab_path)?;
            let merges_path = dir.join("merges.txt");
            let text = std::fs::read_to_string(&merges_path)
                .map_err(|source| SdError::io(&merges_path, source))?;
            (vocab, parse_merges(&text, &merges_path)?, Vec::new())
        };
        Self::from_parts(parts, &config, dir)
    }

    /// OpenAI CLIP's tokenizer (49 408 tokens), padding with `pad` (`<|endoftext|>` for SD 1.x
    /// and SDXL's first encoder, `!` for the OpenCLIP encoders of SD 2.x and SDXL).
    pub fn builtin(pad: &str) -> Result<Self, SdError> {
        const MERGES: &[u8] = include_bytes!("vocab/clip-merges.txt.gz");
        let origin = Path::new("<built-in CLIP tokenizer>");
        let mut text = String::new();
        flate2::read::GzDecoder::new(MERGES)
            .read_to_string(&mut text)
            .map_err(|source| SdError::io(origin, source))?;
        let merges = parse_merges(&text, origin)?;
        // CLIP's vocabulary: the byte characters, each again closing a word, every merge's
        // result in rank order, then the two special tokens.
        let bytes = byte_alphabet();
        let mut order: Vec<usize> = (0..256).collect();
        order.sort_by_key(|&b| u32::from(bytes[b]));
        let singles: Vec<String> = order.iter().map(|&b| bytes[b].to_string()).collect();
        let words = singles.iter().map(|s| format!("{s}{END_OF_WORD}"));
        let merged = merges.iter().map(|(a, b)| format!("{a}{b}"));
        let specials = ["<|startoftext|>", "<|endoftext|>"].map(String::from);
        let vocab = singles
            .iter()
            .cloned()
            .chain(words)
            .chain(merged)
            .chain(specials)
            .zip(0u32..)
            .collect();
        let config = serde_json::json!({ "pad_token": pad });
        Self::from_parts((vocab, merges, Vec::new()), &config, origin)
    }

    /// A tokenizer of a vocabulary, merges and added tokens, with the special tokens of a
    /// `tokenizer_config.json` (`Null` for the defaults); errors name `dir`.
    fn from_parts(parts: Parts, config: &Value, dir: &Path) -> Result<Self, SdError> {
        let (vocab, merges, mut added) = parts;
        let special = |field: &str, default: &str| -> String {
            match config.get(field) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Object(o)) => o
                    .get("content")
                    .and_then(Value::as_str)
                    .unwrap_or(default)
                    .to_string(),
                _ => default.to_string(),
            }
        };
        let id_of = |token: &str, field: &str| -> Result<u32, SdError> {
            vocab
                .get(token)
                .copied()
                .or_else(|| added.iter().find(|(t, _)| t == token).map(|(_, id)| *id))
                .ok_or_else(|| SdError::Invalid {
                    path: dir.to_path_buf(),
                    message: format!("the {field} `{token}` is not in the vocabulary"),
                })
        };
        let bos_token = special("bos_token", "<|startoftext|>");
        let eos_token = special("eos_token", "<|endoftext|>");
        let pad_token = special("pad_token", &eos_token);
        let unk_token = special("unk_token", &eos_token);
        let bos = id_of(&bos_token, "bos_token")?;
        let eos = id_of(&eos_token, "eos_token")?;
        let pad = id_of(&pad_token, "pad_token")?;
        for (token, id) in [(bos_token, bos), (eos_token, eos), (pad_token, pad)]
            .into_iter()
            .chain(
                id_of(&unk_token, "unk_token")
                    .ok()
                    .map(|id| (unk_token, id)),
            )
        {
            if !added.iter().any(|(t, _)| *t == token) {
                added.push((token, id));
            }
        }
        added.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        let max_len = config
            .get("model_max_length")
            .and_then(Value::as_u64)
            .filter(|n| (2..=4096).contains(n))
            .unwrap_or(77) as usize;
        let ranks = merges
            .into_iter()
            .enumerate()
            .map(|(rank, pair)| (pair, rank))
            .collect();
        let words = Regex::new(WORDS).map_err(|e| SdError::Invalid {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Self {
            vocab,
            ranks,
            added,
            learned: Vec::new(),
            bos,
            eos,
            pad,
            max_len,
            words,
            bytes: byte_alphabet(),
        })
    }

    /// How many token ids it gives: one above the highest.
    pub fn size(&self) -> usize {
        let highest = self
            .vocab
            .values()
            .chain(self.added.iter().map(|(_, id)| id))
            .max();
        highest.map_or(0, |&id| id as usize + 1)
    }

    /// Sequence length of [`ClipTokenizer::encode`] (77).
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Token ids of `text`: start token, at most `max_len − 2` tokens, end token, padding.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.frame(&self.tokens(text))
    }

    /// `tokens` as a sequence: start token, at most `max_len − 2` of them, end token, padding.
    pub fn frame(&self, tokens: &[u32]) -> Vec<u32> {
        let mut ids = vec![self.bos];
        ids.extend(tokens.iter().take(self.max_len - 2));
        ids.push(self.eos);
        ids.resize(self.max_len, self.pad);
        ids
    }

    /// The ids of `text` without start, end or padding.
    pub fn tokens(&self, text: &str) -> Vec<u32> {
        self.token_groups(text).concat()
    }

    /// [`ClipTokenizer::tokens`] in groups: each textual-inversion word's ids together (the
    /// vectors that stand for it), every other token alone.
    pub fn token_groups(&self, text: &str) -> Vec<Vec<u32>> {
        let mut groups = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let next = self
                .added
                .iter()
                .filter_map(|(token, id)| rest.find(token.as_str()).map(|at| (at, token, *id)))
                .min_by_key(|(at, token, _)| (*at, std::cmp::Reverse(token.len())));
            match next {
                Some((at, token, id)) => {
                    self.plain(&rest[..at], &mut groups);
                    groups.push(vec![id]);
                    rest = &rest[at + token.len()..];
                }
                None => {
                    self.plain(rest, &mut groups);
                    break;
                }
            }
        }
        groups
    }

    /// Adds a textual-inversion `word` that stands for `ids` wherever it is a whole word of a
    /// prompt, in any case; a word added again takes the new ids.
    pub fn add_word(&mut self, word: &str, ids: Vec<u32>) {
        let word = normalize(word);
        self.learned.retain(|(w, _)| *w != word);
        self.learned.push((word, ids));
        self.learned
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
    }

    /// Tokenizes text with no special tokens in it: its added words, and BPE between them.
    fn plain(&self, text: &str, groups: &mut Vec<Vec<u32>>) {
        let normal = normalize(text);
        let mut rest = normal.as_str();
        while let Some((at, word, word_ids)) = self.next_word(rest) {
            self.bpe_words(&rest[..at], groups);
            groups.push(word_ids.to_vec());
            rest = &rest[at + word.len()..];
        }
        self.bpe_words(rest, groups);
    }

    /// The first added word standing whole in `text` (the longest where several start there).
    fn next_word<'a>(&'a self, text: &str) -> Option<(usize, &'a str, &'a [u32])> {
        let whole = |at: usize, len: usize| {
            let before = text[..at].chars().next_back();
            let after = text[at + len..].chars().next();
            !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
        };
        self.learned
            .iter()
            .filter_map(|(word, ids)| {
                text.match_indices(word.as_str())
                    .map(|(at, _)| at)
                    .find(|&at| whole(at, word.len()))
                    .map(|at| (at, word.as_str(), ids.as_slice()))
            })
            .min_by_key(|(at, word, _)| (*at, std::cmp::Reverse(word.len())))
    }

    /// BPE-tokenizes normalized text word by word.
    fn bpe_words(&self, normal: &str, groups: &mut Vec<Vec<u32>>) {
        for word in self.words.find_iter(normal) {
            let symbols: Vec<String> = word
                .as_str()
                .bytes()
                .map(|b| self.bytes[b as usize].to_string())
                .collect();
            for symbol in self.bpe(symbols) {
                if let Some(id) = self.vocab.get(&symbol) {
                    groups.push(vec![*id]);
                }
            }
        }
    }

    /// Merges a word's symbols by rank, lowest first, `</w>` on the last one.
    fn bpe(&self, mut symbols: Vec<String>) -> Vec<String> {
        if let Some(last) = symbols.last_mut() {
            last.push_str(END_OF_WORD);
        }
        loop {
            let best = symbols
                .windows(2)
                .enumerate()
                .filter_map(|(i, pair)| {
                    self.ranks
                        .get(&(pair[0].clone(), pair[1].clone()))
                        .map(|rank| (*rank, i))
                })
                .min();
            let Some((rank, _)) = best else {
                return symbols;
            };
            let mut merged = Vec::with_capacity(symbols.len());
            let mut i = 0;
            while i < symbols.len() {
                if i + 1 < symbols.len()
                    && self
                        .ranks
                        .get(&(symbols[i].clone(), symbols[i + 1].clone()))
                        == Some(&rank)
                {
                    merged.push(format!("{}{}", symbols[i], symbols[i + 1]));
                    i += 2;
                } else {
                    merged.push(symbols[i].clone());
                    i += 1;
                }
            }
            symbols = merged;
        }
    }
}

/// Text as CLIP's tokenizer normalizes it: NFC, whitespace runs to one space, lower case.
fn normalize(text: &str) -> String {
    let normal: String = text.nfc().collect();
    normal
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

type Parts = (
    HashMap<String, u32>,
    Vec<(String, String)>,
    Vec<(String, u32)>,
);

/// The merges of a `merges.txt` (after its `#version` line), each two symbols.
fn parse_merges(text: &str, path: &Path) -> Result<Vec<(String, String)>, SdError> {
    text.lines()
        .enumerate()
        .filter(|(i, line)| !(line.is_empty() || *i == 0 && line.starts_with("#version")))
        .map(|(i, line)| {
            line.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| SdError::Invalid {
                    path: path.to_path_buf(),
                    message: format!("line {}: a merge is two symbols", i + 1),
                })
        })
        .collect()
}

/// Vocabulary, merges and added tokens of a `tokenizer.json` with a BPE model.
fn from_tokenizer_json(path: &Path) -> Result<Parts, SdError> {
    let json: Value = super::config::read_json(path)?;
    let invalid = |message: &str| SdError::Invalid {
        path: path.to_path_buf(),
        message: message.to_string(),
    };
    let model = json.get("model").ok_or_else(|| invalid("no `model`"))?;
    if model.get("type").and_then(Value::as_str) != Some("BPE") {
        return Err(invalid("`model.type` is not BPE: not a CLIP tokenizer"));
    }
    let vocab: HashMap<String, u32> = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("no `model.vocab`"))?
        .iter()
        .map(|(token, id)| {
            id.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .map(|id| (token.clone(), id))
                .ok_or_else(|| invalid(&format!("`model.vocab[{token:?}]` is not an id")))
        })
        .collect::<Result<_, _>>()?;
    let merges = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("no `model.merges`"))?
        .iter()
        .enumerate()
        .map(|(i, merge)| {
            let pair = match merge {
                Value::String(s) => s.split_once(' ').map(|(a, b)| (a.into(), b.into())),
                Value::Array(a) => match a.as_slice() {
                    [Value::String(x), Value::String(y)] => Some((x.clone(), y.clone())),
                    _ => None,
                },
                _ => None,
            };
            pair.ok_or_else(|| invalid(&format!("`model.merges[{i}]` is not a pair")))
        })
        .collect::<Result<_, _>>()?;
    let added = json
        .get("added_tokens")
        .and_then(Value::as_array)
        .map(|tokens| {
            tokens
                .iter()
                .filter_map(|t| {
                    let content = t.get("content")?.as_str()?.to_string();
                    let id = u32::try_from(t.get("id")?.as_u64()?).ok()?;
                    Some((content, id))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok((vocab, merges, added))
}

/// GPT-2/CLIP's map from bytes to printable characters.
fn byte_alphabet() -> [char; 256] {
    let mut table = ['\0'; 256];
    let printable = |b: u32| {
        (u32::from('!')..=u32::from('~')).contains(&b)
            || (0xA1..=0xAC).contains(&b)
            || (0xAE..=0xFF).contains(&b)
    };
    let mut extra = 0;
    for (b, slot) in table.iter_mut().enumerate() {
        let b = b as u32;
        let code = if printable(b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        *slot = char::from_u32(code).unwrap_or('\u{FFFD}');
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fixture(name: &str) -> ClipTokenizer {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/sd")
            .join(name)
            .join("tokenizer");
        ClipTokenizer::load(&dir).unwrap()
    }

    #[test]
    fn matches_transformers_on_awkward_prompts() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd/tokens.json");
        let cases: HashMap<String, Vec<(String, Vec<u32>)>> =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        assert_eq!(cases.len(), 2);
        for (name, cases) in cases {
            let tokenizer = fixture(&name);
            for (text, ids) in cases {
                assert_eq!(tokenizer.encode(&text), ids, "{name}: {text:?}");
            }
        }
    }

    #[test]
    fn bytes_map_to_distinct_printable_characters() {
        let table = byte_alphabet();
        let distinct: std::collections::HashSet<char> = table.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
        assert_eq!(table[b'a' as usize], 'a');
        assert_eq!(table[b' ' as usize], 'Ġ');
    }

    #[test]
    fn an_added_word_stands_whole_in_any_case_the_longest_first() {
        let mut tokenizer = fixture("tiny-sd15");
        tokenizer.add_word("Bad-Hands", vec![900, 901]);
        tokenizer.add_word("bad", vec![902]);
        assert_eq!(tokenizer.tokens("bad-hands"), [900, 901]);
        assert_eq!(tokenizer.tokens("BAD-HANDS,"), [900, 901, 267]);
        assert_eq!(tokenizer.tokens("bad"), [902]);
        assert_eq!(
            tokenizer.tokens("badly"),
            fixture("tiny-sd15").tokens("badly"),
            "not inside a longer word"
        );
        tokenizer.add_word("bad", vec![903]);
        assert_eq!(
            tokenizer.tokens("bad"),
            [903],
            "a word added again takes the new ids"
        );
    }

    proptest! {
        #[test]
        fn an_added_word_splices_its_ids_between_the_words_around_it(
            before in proptest::collection::vec("[a-z]{1,8}", 0..5),
            after in proptest::collection::vec("[a-z]{1,8}", 0..5),
            separator in "[ ,.]{1,3}",
        ) {
            let plain = fixture("tiny-sd15");
            let mut tokenizer = plain.clone();
            tokenizer.add_word("my-style", vec![814, 815, 816]);
            let (before, after) = (before.join(" "), after.join(" "));
            let text = format!("{before}{separator}My-Style{separator}{after}");
            let mut expected = plain.tokens(&format!("{before}{separator}"));
            expected.extend([814, 815, 816]);
            expected.extend(plain.tokens(&format!("{separator}{after}")));
            prop_assert_eq!(tokenizer.tokens(&text), expected);
        }

        #[test]
        fn any_text_gives_a_well_formed_sequence(text in ".{0,200}") {
            let tokenizer = fixture("tiny-sd21");
            let ids = tokenizer.encode(&text);
            prop_assert_eq!(ids.len(), 77);
            prop_assert_eq!(ids[0], tokenizer.bos);
            let end = ids.iter().rposition(|&id| id == tokenizer.eos).unwrap();
            prop_assert!(ids[end + 1..].iter().all(|&id| id == tokenizer.pad));
            prop_assert!(ids.iter().all(|&id| (id as usize) < 814));
        }

        #[test]
        fn case_and_spacing_do_not_matter(words in proptest::collection::vec("[a-z]{1,8}", 1..10)) {
            let tokenizer = fixture("tiny-sd15");
            let plain = words.join(" ");
            let shouted = words.join("  \t").to_uppercase();
            prop_assert_eq!(tokenizer.encode(&plain), tokenizer.encode(&shouted));
        }
    }
}
