//! The prompt syntax A1111's web UI made the common tongue of Stable Diffusion prompts, as
//! diffusers' long-prompt-weighting pipeline reads it:
//! - `(word)` weighs `word` 1.1×, `[word]` 1/1.1×, `(word:1.3)` 1.3×; they nest and multiply,
//!   an unclosed bracket runs to the end, `\(`, `\)`, `\[`, `\]` and `\\` are the characters
//!   themselves;
//! - `BREAK` (upper case, a word of its own) ends the current 75-token chunk;
//! - a prompt longer than the text encoder's 75 tokens goes in several chunks, each encoded on
//!   its own with its start and end tokens, their states laid end to end; a chunk that fills
//!   up within 20 tokens of a comma ends after the comma, and the words since move on to the
//!   next chunk (A1111's "prompt word wrap length limit", 20 unless its user changed it), so
//!   a phrase is not cut in two; a textual-inversion word whose vectors do not fit in what is
//!   left of a chunk starts the next one, as in A1111.
//!
//! Prompt editing and alternation (`[a:b:5]`, `[a|b]`) are resolved before this, one text per
//! step, by [`super::prompt_schedule`].
//!
//! A chunk whose weights are not all 1 has its states multiplied by them and then rescaled to
//! the mean they had (A1111's "original" emphasis). Text without brackets, escapes or `BREAK`
//! is one weight-1 piece, so a short plain prompt is encoded exactly as before.
//!
//! ```
//! use autonomy_pipeline::models::sd::prompt_syntax::{Piece, parse};
//! assert_eq!(
//!     parse("a (red:1.5) [potion]"),
//!     [
//!         Piece::Text("a ".into(), 1.0),
//!         Piece::Text("red".into(), 1.5),
//!         Piece::Text(" ".into(), 1.0),
//!         Piece::Text("potion".into(), 1.0 / 1.1),
//!     ]
//! );
//! ```

use std::sync::LazyLock;

use regex::Regex;

use super::tokenizer::ClipTokenizer;

/// What `(…)` multiplies a weight by.
const ROUND: f64 = 1.1;

/// The most chunks a prompt may take (600 tokens).
pub const MOST_CHUNKS: usize = 8;

/// How many tokens back from a full chunk's end a comma may be for the words after it to move
/// on to the next chunk (A1111's default `comma_padding_backtrack`).
const COMMA_BACKTRACK: usize = 20;

/// One piece of a parsed prompt.
#[derive(Clone, Debug, PartialEq)]
pub enum Piece {
    /// Text and its weight.
    Text(String, f64),
    /// `BREAK`: the next text starts a new chunk.
    Break,
}

/// A1111's tokens of emphasis, in the order they are tried.
static ATTENTION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\\\(|\\\)|\\\[|\\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|\]|[^\\()\[\]:]+|:")
        .unwrap_or_else(|e| unreachable!("a fixed pattern: {e}"))
});

/// A1111's extra networks in a prompt: `<lora:name:0.8>`, `<lyco:…>`, `<hypernet:…>`.
static NETWORK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"<(lora|lyco|hypernet):[^>]+>")
        .unwrap_or_else(|e| unreachable!("a fixed pattern: {e}"))
});

/// `BREAK` as a word of its own, with the spaces around it.
static BREAK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\s*\bBREAK\b\s*").unwrap_or_else(|e| unreachable!("a fixed pattern: {e}"))
});

/// The pieces of `text`, runs of one weight merged.
pub fn parse(text: &str) -> Vec<Piece> {
    let mut pieces: Vec<Piece> = Vec::new();
    let mut round: Vec<usize> = Vec::new();
    let mut square: Vec<usize> = Vec::new();
    let multiply = |pieces: &mut Vec<Piece>, from: usize, by: f64| {
        for piece in &mut pieces[from..] {
            if let Piece::Text(_, weight) = piece {
                *weight *= by;
            }
        }
    };
    for found in ATTENTION.captures_iter(text) {
        let token = &found[0];
        // A weight that is no number, or beyond ±100, is text.
        let weight = found
            .get(1)
            .and_then(|w| w.as_str().parse::<f64>().ok())
            .filter(|w| w.abs() <= 100.0);
        if let Some(literal) = token.strip_prefix('\\') {
            pieces.push(Piece::Text(literal.to_string(), 1.0));
        } else if token == "(" {
            round.push(pieces.len());
        } else if token == "[" {
            square.push(pieces.len());
        } else if let (Some(weight), Some(from)) = (weight, round.last().copied()) {
            round.pop();
            multiply(&mut pieces, from, weight);
        } else if token == ")" && !round.is_empty() {
            let from = round.pop().unwrap_or_default();
            multiply(&mut pieces, from, ROUND);
        } else if token == "]" && !square.is_empty() {
            let from = square.pop().unwrap_or_default();
            multiply(&mut pieces, from, 1.0 / ROUND);
        } else {
            for (i, part) in BREAK.split(token).enumerate() {
                if i > 0 {
                    pieces.push(Piece::Break);
                }
                pieces.push(Piece::Text(part.to_string(), 1.0));
            }
        }
    }
    for from in round {
        multiply(&mut pieces, from, ROUND);
    }
    for from in square {
        multiply(&mut pieces, from, 1.0 / ROUND);
    }
    let mut merged: Vec<Piece> = Vec::with_capacity(pieces.len());
    for piece in pieces {
        match (merged.last_mut(), piece) {
            (Some(Piece::Text(text, weight)), Piece::Text(more, same)) if *weight == same => {
                text.push_str(&more);
            }
            (_, piece) => merged.push(piece),
        }
    }
    if merged.is_empty() {
        merged.push(Piece::Text(String::new(), 1.0));
    }
    merged
}

/// What is wrong with `text` when it still holds an A1111 network tag once a prompt's LoRA
/// and hypernetwork tags are taken out ([`super::lora_tags::without_network_tags`]): a tag in
/// a negative prompt, which A1111 reads as words.
pub fn network_tag(text: &str) -> Option<String> {
    let tag = NETWORK.find(text)?;
    Some(format!(
        "`{}`: A1111 applies LoRAs and hypernetworks from the prompt only (a negative prompt \
         would read the tag as words); move it to the prompt",
        tag.as_str()
    ))
}

/// One chunk as a text encoder takes it: start token, up to 75 tokens, end token, padding;
/// and each position's weight (1 at the start, end and padding).
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    /// Token ids, the tokenizer's length (77).
    pub ids: Vec<u32>,
    /// Each id's weight.
    pub weights: Vec<f32>,
}

impl Chunk {
    /// Whether any weight is not 1.
    pub fn is_weighted(&self) -> bool {
        self.weights.iter().any(|&w| w != 1.0)
    }
}

/// The chunks `tokenizer` makes of `text` (at least one), or what is wrong: more than
/// [`MOST_CHUNKS`], or weights nested past what a float holds.
pub fn chunks(tokenizer: &ClipTokenizer, text: &str) -> Result<Vec<Chunk>, String> {
    if let Some(message) = network_tag(text) {
        return Err(message);
    }
    let length = tokenizer.max_len().saturating_sub(2).max(1);
    let comma = match tokenizer.tokens(",")[..] {
        [id] => Some(id),
        _ => None,
    };
    let mut done: Vec<Vec<(u32, f64)>> = Vec::new();
    let mut current: Vec<(u32, f64)> = Vec::new();
    // Where in `current` its last comma is.
    let mut last_comma: Option<usize> = None;
    for piece in parse(text) {
        match piece {
            Piece::Break => {
                done.push(std::mem::take(&mut current));
                last_comma = None;
            }
            Piece::Text(text, weight) => {
                for group in tokenizer.token_groups(&text) {
                    if comma.is_some_and(|comma| group == [comma]) {
                        last_comma = Some(current.len());
                    } else if let Some(at) = last_comma
                        && current.len() == length
                        && length - at <= COMMA_BACKTRACK
                    {
                        let moved = current.split_off(at + 1);
                        done.push(std::mem::replace(&mut current, moved));
                        last_comma = None;
                    }
                    // A textual-inversion word's vectors stay in one chunk when they fit in one.
                    if group.len() <= length
                        && !current.is_empty()
                        && current.len() + group.len() > length
                    {
                        done.push(std::mem::take(&mut current));
                        last_comma = None;
                    }
                    for id in group {
                        if current.len() == length {
                            done.push(std::mem::take(&mut current));
                            last_comma = None;
                        }
                        current.push((id, weight));
                    }
                }
            }
        }
    }
    if !current.is_empty() || done.is_empty() {
        done.push(current);
    }
    if done.len() > MOST_CHUNKS {
        return Err(format!(
            "the prompt takes {} chunks of {length} tokens; at most {MOST_CHUNKS}",
            done.len()
        ));
    }
    if done.iter().flatten().any(|(_, w)| !(*w as f32).is_finite()) {
        return Err("its weights multiply past what a float holds".into());
    }
    Ok(done
        .into_iter()
        .map(|tokens| {
            let ids: Vec<u32> = tokens.iter().map(|(id, _)| *id).collect();
            let mut weights = vec![1.0f32];
            weights.extend(tokens.iter().map(|(_, w)| *w as f32));
            weights.resize(tokenizer.max_len(), 1.0);
            Chunk {
                ids: tokenizer.frame(&ids),
                weights,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::Path;

    fn text(pieces: &[Piece]) -> Vec<(String, f64)> {
        pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t, w) => (t.clone(), (w * 1e6).round() / 1e6),
                Piece::Break => ("BREAK".into(), -1.0),
            })
            .collect()
    }

    fn pairs(list: &[(&str, f64)]) -> Vec<(String, f64)> {
        list.iter().map(|(t, w)| (t.to_string(), *w)).collect()
    }

    #[test]
    fn brackets_weigh_nest_and_escape_as_a1111_reads_them() {
        assert_eq!(text(&parse("normal text")), pairs(&[("normal text", 1.0)]));
        assert_eq!(
            text(&parse("an (important) word")),
            pairs(&[("an ", 1.0), ("important", 1.1), (" word", 1.0)])
        );
        assert_eq!(text(&parse("(unbalanced")), pairs(&[("unbalanced", 1.1)]));
        assert_eq!(text(&parse("\\(literal\\]")), pairs(&[("(literal]", 1.0)]));
        assert_eq!(
            text(&parse("(unnecessary)(parens)")),
            pairs(&[("unnecessaryparens", 1.1)])
        );
        assert_eq!(
            text(&parse(
                "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."
            )),
            pairs(&[
                ("a ", 1.0),
                ("house", 1.573),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.4641),
                (".", 1.1)
            ])
        );
        assert_eq!(
            text(&parse("a cat BREAK a dog")),
            pairs(&[("a cat", 1.0), ("BREAK", -1.0), ("a dog", 1.0)])
        );
        assert_eq!(text(&parse("")), pairs(&[("", 1.0)]));
        assert_eq!(
            text(&parse("time: noon (x:1.2.3)")),
            pairs(&[("time: noon ", 1.0), ("x:1.2.3)", 1.1)]),
            "a weight that is no number is text"
        );
        assert_eq!(
            text(&parse("(x:500)")),
            pairs(&[("x:500)", 1.1)]),
            "a weight beyond 100 is text"
        );
    }

    fn tokenizer() -> ClipTokenizer {
        ClipTokenizer::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd/tiny-sd15/tokenizer"),
        )
        .unwrap()
    }

    #[test]
    fn long_prompts_take_75_token_chunks_and_break_starts_one() {
        let tokenizer = tokenizer();
        let plain = chunks(&tokenizer, "a red potion").unwrap();
        assert_eq!(plain.len(), 1);
        assert_eq!(plain[0].ids, tokenizer.encode("a red potion"));
        assert!(!plain[0].is_weighted());
        let word = "potion ";
        let long = word.repeat(100);
        let split = chunks(&tokenizer, &long).unwrap();
        assert_eq!(split.len(), 2);
        let per_word = tokenizer.tokens(word).len();
        assert_eq!(per_word, 1, "the fixture's vocabulary has the word");
        assert_eq!(split[0].ids, tokenizer.encode(&word.repeat(75)));
        assert_eq!(split[1].ids, tokenizer.encode(&word.repeat(25)));
        let broken = chunks(&tokenizer, "a red BREAK potion").unwrap();
        assert_eq!(broken.len(), 2);
        assert_eq!(broken[1].ids, tokenizer.encode("potion"));
        assert!(
            chunks(&tokenizer, &word.repeat(601))
                .unwrap_err()
                .contains("takes 9 chunks of 75 tokens; at most 8")
        );
        let tagged = chunks(&tokenizer, "a knight <lora:add_detail:0.5>").unwrap_err();
        assert!(
            tagged.contains(
                "`<lora:add_detail:0.5>`: A1111 applies LoRAs and hypernetworks from the prompt only"
            ),
            "{tagged}"
        );
        let hypernet = chunks(&tokenizer, "a knight <hypernet:anime:1>").unwrap_err();
        assert!(hypernet.contains("from the prompt only"), "{hypernet}");
        let weighted = chunks(&tokenizer, "a (red:1.5) potion").unwrap();
        assert_eq!(weighted[0].ids, tokenizer.encode("a red potion"));
        let red = tokenizer.tokens("red").len();
        assert_eq!(
            weighted[0].weights[..2 + red + 1],
            [[1.0, 1.0].as_slice(), &vec![1.5; red], &[1.0]].concat()
        );
        assert!(weighted[0].weights[2 + red..].iter().all(|&w| w == 1.0));
    }

    /// The tokens of `made` past each start token, up to its end token.
    fn inner(tokenizer: &ClipTokenizer, made: &[Chunk]) -> Vec<Vec<u32>> {
        let end = tokenizer.encode("")[1];
        made.iter()
            .map(|c| {
                c.ids[1..]
                    .iter()
                    .copied()
                    .take_while(|&id| id != end)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_full_chunk_ends_at_a_comma_within_20_tokens_as_a1111_wraps_words() {
        let tokenizer = tokenizer();
        let comma = tokenizer.tokens(",");
        assert_eq!(comma.len(), 1, "the fixture's vocabulary has the comma");
        // 70 words, a comma, 10 words: the chunk fills 5 tokens past the comma, so it ends
        // at the comma and the 10 words go on together.
        let near = format!("{}, {}", "potion ".repeat(70), "(red:1.5) ".repeat(10));
        let made = chunks(&tokenizer, &near).unwrap();
        assert_eq!(made.len(), 2);
        assert_eq!(
            made[0].ids,
            tokenizer.encode(&format!("{},", "potion ".repeat(70)))
        );
        assert_eq!(made[1].ids, tokenizer.encode(&"red ".repeat(10)));
        assert_eq!(
            made[1].weights[1..11],
            [1.5; 10],
            "the weights move with them"
        );
        assert!(!made[0].is_weighted());
        // A comma 25 tokens back is too far: the chunk is cut at 75 tokens.
        let far = format!("{}, {}", "potion ".repeat(50), "red ".repeat(40));
        let made = chunks(&tokenizer, &far).unwrap();
        assert_eq!(made.len(), 2);
        assert_eq!(
            made[0].ids,
            tokenizer.encode(&format!("{}, {}", "potion ".repeat(50), "red ".repeat(24)))
        );
        assert_eq!(made[1].ids, tokenizer.encode(&"red ".repeat(16)));
        // A comma that is the 76th token starts the next chunk.
        let at_end = format!("{}, red", "potion ".repeat(75));
        let made = chunks(&tokenizer, &at_end).unwrap();
        assert_eq!(made[1].ids, tokenizer.encode(", red"));
        // BREAK forgets the comma before it.
        let broken = format!("a, b BREAK {}", "potion ".repeat(76));
        let made = chunks(&tokenizer, &broken).unwrap();
        assert_eq!(made.len(), 3);
        assert_eq!(made[1].ids, tokenizer.encode(&"potion ".repeat(75)));
    }

    proptest! {
        #[test]
        fn chunks_keep_every_token_in_order_and_wrap_only_at_a_near_comma(
            words in proptest::collection::vec(prop_oneof![Just("potion"), Just(","), Just("red")], 0..300)
        ) {
            let tokenizer = tokenizer();
            let text = words.join(" ");
            let Ok(made) = chunks(&tokenizer, &text) else { return Ok(()) };
            let pieces = inner(&tokenizer, &made);
            prop_assert_eq!(pieces.concat(), tokenizer.tokens(&text));
            let comma = tokenizer.tokens(",")[0];
            for piece in &pieces[..pieces.len() - 1] {
                prop_assert!(piece.len() <= 75);
                if piece.len() < 75 {
                    // Cut short: just after a comma, within 20 tokens of the end.
                    prop_assert_eq!(piece.last(), Some(&comma));
                    prop_assert!(piece.len() > 75 - 20);
                }
            }
        }

        #[test]
        fn parsing_keeps_the_text_outside_the_syntax(text in "[a-z ,.:0-9()\\[\\]\\\\]{0,60}") {
            let pieces = parse(&text);
            prop_assert!(!pieces.is_empty());
            let kept: String = pieces
                .iter()
                .filter_map(|p| match p {
                    Piece::Text(t, w) => w.is_finite().then_some(t.as_str()),
                    Piece::Break => None,
                })
                .collect();
            let letters = |s: &str| s.chars().filter(|c| c.is_ascii_alphabetic()).count();
            prop_assert!(letters(&kept) <= letters(&text));
            if !text.contains(['(', ')', '[', ']', '\\']) {
                prop_assert_eq!(kept, text);
            }
        }

        #[test]
        fn any_prompt_chunks_into_whole_sequences(text in ".{0,400}") {
            let tokenizer = tokenizer();
            let made = match chunks(&tokenizer, &text) {
                Ok(made) => made,
                Err(message) => {
                    prop_assert!(message.contains("at most 8"), "{}", message);
                    return Ok(());
                }
            };
            prop_assert!(!made.is_empty());
            for chunk in made {
                prop_assert_eq!(chunk.ids.len(), tokenizer.max_len());
                prop_assert_eq!(chunk.weights.len(), tokenizer.max_len());
                prop_assert!(chunk.weights.iter().all(|w| w.is_finite()));
            }
        }
    }
}
