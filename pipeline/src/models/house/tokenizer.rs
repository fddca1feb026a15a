//! A word-level tokenizer whose vocabulary is built from the training captions.
//!
//! Captions are short lists of words ("red apple flat food drink"), so whole words are
//! the right unit for a model this small: no merges to learn, and every token means something.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Padding: fills a prompt up to `max_tokens`; masked out of attention.
pub const PAD: u32 = 0;
/// Start of every prompt; the empty prompt (the unconditional branch of guidance) is just this.
pub const START: u32 = 1;
/// A word the vocabulary does not know.
pub const UNKNOWN: u32 = 2;
const SPECIALS: [&str; 3] = ["[pad]", "[start]", "[unknown]"];

/// Word-level tokenizer, stored as `vocab.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tokenizer {
    words: Vec<String>,
    #[serde(skip)]
    index: HashMap<String, u32>,
}

/// A prompt turned into ids, padded to a fixed length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids: `START`, the words, then `PAD`s.
    pub ids: Vec<u32>,
    /// How many ids are real (not padding).
    pub len: usize,
}

/// Splits text into lower-case words (letters and digits).
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

impl Tokenizer {
    /// Builds a vocabulary from captions: every word, most frequent first (ties alphabetical).
    pub fn from_captions<'a>(captions: impl IntoIterator<Item = &'a str>) -> Self {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for caption in captions {
            for word in words(caption) {
                *counts.entry(word).or_default() += 1;
            }
        }
        let mut ranked: Vec<(String, usize)> = counts.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let words = SPECIALS
            .iter()
            .map(|s| s.to_string())
            .chain(ranked.into_iter().map(|(w, _)| w))
            .collect();
        Self::from_words(words)
    }

    /// A tokenizer over a given word list (ids are positions); the first three must be the specials.
    pub fn from_words(words: Vec<String>) -> Self {
        let index = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), i as u32))
            .collect();
        Self { words, index }
    }

    /// Restores the lookup index after deserialising; checks the special tokens are in place.
    pub fn from_json(json: &str) -> Result<Self, String> {
        let parsed: Tokenizer = serde_json::from_str(json).map_err(|e| e.to_string())?;
        if parsed.words.len() < SPECIALS.len()
            || parsed.words[..SPECIALS.len()] != SPECIALS.map(String::from)
        {
            return Err(format!("the first words must be {SPECIALS:?}"));
        }
        Ok(Self::from_words(parsed.words))
    }

    /// Adds words it does not know yet (used when fine-tuning on new captions); returns how many.
    pub fn extend<'a>(&mut self, captions: impl IntoIterator<Item = &'a str>) -> usize {
        let before = self.words.len();
        for caption in captions {
            for word in words(caption) {
                if !self.index.contains_key(&word) {
                    self.index.insert(word.clone(), self.words.len() as u32);
                    self.words.push(word);
                }
            }
        }
        self.words.len() - before
    }

    /// Number of ids, specials included.
    pub fn vocab_size(&self) -> usize {
        self.words.len()
    }

    /// The word behind an id.
    pub fn word(&self, id: u32) -> Option<&str> {
        self.words.get(id as usize).map(String::as_str)
    }

    /// Encodes a prompt into exactly `max_tokens` ids (`max_tokens` ≥ 1).
    pub fn encode(&self, text: &str, max_tokens: usize) -> Encoded {
        let mut ids = vec![START];
        ids.extend(
            words(text)
                .map(|w| self.index.get(&w).copied().unwrap_or(UNKNOWN))
                .take(max_tokens.saturating_sub(1)),
        );
        let len = ids.len().min(max_tokens.max(1));
        ids.truncate(len);
        ids.resize(max_tokens.max(1), PAD);
        Encoded { ids, len }
    }

    /// Words of a prompt this vocabulary does not know.
    pub fn unknown_words(&self, text: &str) -> Vec<String> {
        words(text)
            .filter(|w| !self.index.contains_key(w))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ranks_words_by_frequency_after_the_specials() {
        let t = Tokenizer::from_captions(["red apple", "green apple", "Red-Brick texture"]);
        assert_eq!(t.word(3), Some("apple"));
        assert_eq!(t.word(4), Some("red"));
        assert_eq!(t.vocab_size(), 3 + 5);
    }

    #[test]
    fn encodes_with_start_padding_and_unknowns() {
        let t = Tokenizer::from_captions(["red apple"]);
        let e = t.encode("Red dragon!", 5);
        assert_eq!(e.ids, vec![START, t.index["red"], UNKNOWN, PAD, PAD]);
        assert_eq!(e.len, 3);
        assert_eq!(t.unknown_words("red dragon"), vec!["dragon"]);
        assert_eq!(t.encode("", 4).len, 1);
    }

    #[test]
    fn json_round_trip_restores_the_index_and_rejects_bad_specials() {
        let t = Tokenizer::from_captions(["stone wall"]);
        let back = Tokenizer::from_json(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back.encode("stone", 3), t.encode("stone", 3));
        assert!(Tokenizer::from_json(r#"{"words":["a","b","c"]}"#).is_err());
    }

    proptest! {
        #[test]
        fn encode_always_has_the_requested_length(text in ".{0,80}", max in 1usize..20) {
            let t = Tokenizer::from_captions(["a b c"]);
            let e = t.encode(&text, max);
            prop_assert_eq!(e.ids.len(), max);
            prop_assert!(e.len >= 1 && e.len <= max);
            prop_assert_eq!(e.ids[0], START);
            prop_assert!(e.ids[e.len..].iter().all(|&id| id == PAD));
        }
    }
}
