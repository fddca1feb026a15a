//! The texts a prompt in A1111's syntax conditions each step on: composable prompts
//! (`a castle AND a dragon:0.7`, see [`compose`]), and prompts that change while an image is
//! denoised — prompt editing `[from:to:when]` (`[to:when]` adds `to`, `[from::when]` removes
//! `from`) and alternation `[a|b|c]` (a different option each step).
//!
//! `when` is a step count, or with a decimal point a fraction of the steps (`0.5` of 20 is
//! step 10); `from` holds through that step and `to` follows. Steps count as A1111's sampler
//! counts them: its step `s`, from 0, takes the first text whose `until` is not below `s`, so
//! `[a:b:5]` draws six steps of `a` ([`outline`] says so). A prompt this grammar cannot read
//! (a `|` outside `[…|…]`, a lone `\` at the end) is not scheduled at all: it is the same text at
//! every step, as A1111 has it. The texts that come out keep their emphasis brackets for
//! [`super::prompt_syntax`]. A1111 reads with an ambiguous grammar; in garbled prompts whose
//! brackets can be read two ways its parser may keep as text what this reads as an edit (3 of
//! 30 000 random strings of brackets, colons and bars; none of the prompts people write).
//!
//! ```
//! use autonomy_pipeline::models::sd::prompt_schedule::{Scheduled, schedule};
//! assert_eq!(
//!     schedule("a [red:blue:0.5] gem", 10),
//!     [
//!         Scheduled { until: 5, text: "a red gem".into() },
//!         Scheduled { until: 10, text: "a blue gem".into() },
//!     ]
//! );
//! ```

use std::collections::{BTreeSet, HashMap};
use std::sync::LazyLock;

use regex::Regex;

/// Brackets nested deeper than this are not read as a schedule (the prompt stays as written).
const DEEPEST: usize = 64;

/// One text of a prompt's schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scheduled {
    /// The last step (counted from 1) this text is used for; the next text takes over after it.
    pub until: usize,
    /// The prompt at those steps.
    pub text: String,
}

/// One prompt of a composition and its weight.
#[derive(Clone, Debug, PartialEq)]
pub struct Composed {
    /// The prompt (scheduled on its own).
    pub text: String,
    /// How much of the guidance its difference from the negative prompt gets.
    pub weight: f64,
}

/// `AND` as a word of its own.
static AND: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\bAND\b").unwrap_or_else(|e| unreachable!("a fixed pattern: {e}"))
});

/// A prompt and the weight it may end with (`a dragon:0.7`).
static WEIGHT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?s)^(.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")
        .unwrap_or_else(|e| unreachable!("a fixed pattern: {e}"))
});

/// The prompts `prompt` composes, as A1111 splits them: at each `AND`, each with the weight it
/// ends with (`:0.7`; 1 without). The image is guided by every prompt at once: the negative
/// prompt's prediction plus each prompt's difference from it times its weight and the guidance
/// scale (composable diffusion). One prompt with no weight is the usual guidance; note that a
/// prompt ending in `:number` is weighted so even without `AND`, as in A1111.
pub fn compose(prompt: &str) -> Vec<Composed> {
    AND.split(prompt)
        .map(|part| match WEIGHT.captures(part) {
            Some(found) => Composed {
                text: found.get(1).map_or(part, |m| m.as_str()).to_string(),
                weight: found
                    .get(2)
                    .and_then(|w| w.as_str().parse().ok())
                    .unwrap_or(1.0),
            },
            None => Composed {
                text: part.to_string(),
                weight: 1.0,
            },
        })
        .collect()
}

/// Whether `parts` compose (several prompts, or one with a weight) rather than being one
/// prompt guided as usual.
pub fn composes(parts: &[Composed]) -> bool {
    !matches!(parts, [one] if one.weight == 1.0)
}

/// The texts `prompt` takes over `steps` steps, in order; the last one's `until` is `steps`.
pub fn schedule(prompt: &str, steps: usize) -> Vec<Scheduled> {
    let whole = || {
        vec![Scheduled {
            until: steps,
            text: prompt.to_string(),
        }]
    };
    let Some(parts) = Reader::new(prompt).start() else {
        return whole();
    };
    let mut ends = BTreeSet::from([steps]);
    collect_ends(&parts, steps, &mut ends);
    let ends: Vec<usize> = ends.into_iter().filter(|&end| end >= 1).collect();
    if ends.is_empty() {
        return whole();
    }
    ends.into_iter()
        .map(|until| {
            let mut text = String::new();
            write_at(&parts, until, steps, &mut text);
            Scheduled { until, text }
        })
        .collect()
}

/// What a prompt conditions each step on, in words for a person checking it (the editor shows
/// it under the prompt): a line per part of a composition (`× weight · text`), and under it a
/// line per span of sampler steps (counted from 1) whose text changes. Empty for a prompt that
/// neither composes nor changes. At most `most` spans per part are listed.
pub fn outline(prompt: &str, steps: usize, most: usize) -> Vec<String> {
    let parts = compose(prompt);
    let composed = composes(&parts);
    let mut lines = Vec::new();
    for part in &parts {
        let text = if composed { &part.text } else { prompt };
        let texts = schedule(text, steps);
        // Step `s` (from 0) takes the first text whose end is not before it.
        let mut spans = Vec::new();
        let mut first = 0;
        for scheduled in &texts {
            let last = scheduled.until.min(steps.saturating_sub(1));
            if first <= last {
                spans.push((first + 1, last + 1, scheduled.text.trim()));
                first = last + 1;
            }
        }
        let indent = if composed { "  " } else { "" };
        match (composed, spans.as_slice()) {
            (true, [(_, _, only)]) => lines.push(format!("× {} · {only}", part.weight)),
            (false, [_]) => {}
            _ => {
                if composed {
                    lines.push(format!("× {}", part.weight));
                }
                for (from, to, text) in spans.iter().take(most) {
                    let steps = if from == to {
                        format!("step {from}")
                    } else {
                        format!("steps {from}–{to}")
                    };
                    lines.push(format!("{indent}{steps}: {text}"));
                }
                if spans.len() > most {
                    lines.push(format!("{indent}… {} more", spans.len() - most));
                }
            }
        }
    }
    lines
}

/// A parsed prompt.
#[derive(Clone, Debug)]
enum Part {
    /// Text as written (emphasis brackets included).
    Text(String),
    /// `[before:after:when]`; `before` is absent in `[after:when]`.
    Edit {
        before: Vec<Part>,
        after: Vec<Part>,
        when: String,
    },
    /// `[a|b|…]`.
    Alternate(Vec<Vec<Part>>),
}

/// A step number as A1111's grammar takes it (lark's `SIGNED_NUMBER`).
static NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
        .unwrap_or_else(|e| unreachable!("a fixed pattern: {e}"))
});

/// The step `when` names: with a decimal point a fraction of `steps`, else a count; at most
/// `steps` (Python's `min(steps, int(v))`).
fn when_step(when: &str, steps: usize) -> i64 {
    let value: f64 = when.parse().unwrap_or(0.0);
    let value = if when.contains('.') {
        value * steps as f64
    } else {
        value
    };
    // `as` truncates toward zero and saturates, as `int` does short of infinity.
    (value.trunc() as i64).min(steps as i64)
}

/// Every step an edit or alternation ends a text on.
fn collect_ends(parts: &[Part], steps: usize, ends: &mut BTreeSet<usize>) {
    for part in parts {
        match part {
            Part::Text(_) => {}
            Part::Edit {
                before,
                after,
                when,
            } => {
                if let Ok(step) = usize::try_from(when_step(when, steps)) {
                    ends.insert(step);
                }
                collect_ends(before, steps, ends);
                collect_ends(after, steps, ends);
            }
            Part::Alternate(options) => {
                ends.extend(1..=steps);
                for option in options {
                    collect_ends(option, steps, ends);
                }
            }
        }
    }
}

/// `parts` as they read at step `step` of `steps` (counted from 1, as the ends are).
fn write_at(parts: &[Part], step: usize, steps: usize, out: &mut String) {
    for part in parts {
        match part {
            Part::Text(text) => out.push_str(text),
            Part::Edit {
                before,
                after,
                when,
            } => {
                let chosen = if (step as i64) <= when_step(when, steps) {
                    before
                } else {
                    after
                };
                write_at(chosen, step, steps, out);
            }
            Part::Alternate(options) => {
                if let Some(option) = options.get(step.saturating_sub(1) % options.len().max(1)) {
                    write_at(option, step, steps, out);
                }
            }
        }
    }
}

/// Whitespace as Python's `\s` has it.
fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// A recursive-descent reading of A1111's grammar:
///
/// ```text
/// start: (prompt | /[][():]/+)*
/// prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*
/// emphasized: "(" prompt ")" | "(" prompt ":" prompt ")" | "[" prompt "]"
/// scheduled: "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
/// alternate: "[" prompt ("|" [prompt])+ "]"
/// plain: /([^\\\[\]():|]|\\.)+/
/// ```
///
/// A bracket inside a prompt must close as one of the three; at the top a bracket that does not
/// is text. A prompt is read once per position (remembered), so unclosed brackets cost no
/// backtracking.
struct Reader {
    chars: Vec<char>,
    read: HashMap<usize, (Vec<Part>, usize)>,
    too_deep: bool,
}

impl Reader {
    fn new(prompt: &str) -> Self {
        Self {
            chars: prompt.chars().collect(),
            read: HashMap::new(),
            too_deep: false,
        }
    }

    /// The whole prompt's parts, or `None` where the grammar cannot read it.
    fn start(mut self) -> Option<Vec<Part>> {
        let mut parts = Vec::new();
        let mut at = 0;
        while let Some(&c) = self.chars.get(at) {
            let (more, end) = self.prompt(at, 0);
            if self.too_deep {
                return None;
            }
            if end > at {
                parts.extend(more);
                at = end;
            } else if matches!(c, '[' | ']' | '(' | ')' | ':') {
                parts.push(Part::Text(c.to_string()));
                at += 1;
            } else {
                return None;
            }
        }
        (!self.too_deep).then_some(parts)
    }

    /// The longest prompt from `from`: its parts and where it stops.
    fn prompt(&mut self, from: usize, depth: usize) -> (Vec<Part>, usize) {
        if let Some(known) = self.read.get(&from) {
            return known.clone();
        }
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut at = from;
        while let Some(&c) = self.chars.get(at) {
            match c {
                '\\' => match self.chars.get(at + 1) {
                    Some(&escaped) => {
                        text.push('\\');
                        text.push(escaped);
                        at += 2;
                    }
                    None => break,
                },
                '[' | '(' => match self.bracket(at, depth) {
                    Some((found, end)) => {
                        if !text.is_empty() {
                            parts.push(Part::Text(std::mem::take(&mut text)));
                        }
                        parts.extend(found);
                        at = end;
                    }
                    None => break,
                },
                ']' | ')' | ':' | '|' => break,
                _ => {
                    text.push(c);
                    at += 1;
                }
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        self.read.insert(from, (parts.clone(), at));
        (parts, at)
    }

    /// The bracketed construct opening at `at` and the position after it, if it closes.
    fn bracket(&mut self, at: usize, depth: usize) -> Option<(Vec<Part>, usize)> {
        if depth >= DEEPEST {
            self.too_deep = true;
            return None;
        }
        let depth = depth + 1;
        let text = |s: &str| Part::Text(s.to_string());
        let (first, end) = self.prompt(at + 1, depth);
        let next = self.chars.get(end).copied();
        if self.chars[at] == '(' {
            return match next {
                Some(')') => Some(([vec![text("(")], first, vec![text(")")]].concat(), end + 1)),
                Some(':') => {
                    let (second, end) = self.prompt(end + 1, depth);
                    (self.chars.get(end) == Some(&')')).then(|| {
                        let parts = [vec![text("(")], first, vec![text(":")], second];
                        ([parts.concat(), vec![text(")")]].concat(), end + 1)
                    })
                }
                _ => None,
            };
        }
        match next {
            Some(']') => Some(([vec![text("[")], first, vec![text("]")]].concat(), end + 1)),
            Some(':') => {
                if let Some((when, after)) = self.when(end + 1) {
                    let edit = Part::Edit {
                        before: Vec::new(),
                        after: first,
                        when,
                    };
                    return Some((vec![edit], after));
                }
                let (second, end) = self.prompt(end + 1, depth);
                if self.chars.get(end) != Some(&':') {
                    return None;
                }
                let (when, after) = self.when(end + 1)?;
                let edit = Part::Edit {
                    before: first,
                    after: second,
                    when,
                };
                Some((vec![edit], after))
            }
            Some('|') => {
                let mut options = vec![first];
                let mut at = end;
                while self.chars.get(at) == Some(&'|') {
                    let (option, end) = self.prompt(at + 1, depth);
                    options.push(option);
                    at = end;
                }
                (self.chars.get(at) == Some(&']')).then(|| (vec![Part::Alternate(options)], at + 1))
            }
            _ => None,
        }
    }

    /// `[WHITESPACE] NUMBER [WHITESPACE] "]"` from `from`: the number and the position after
    /// the bracket.
    fn when(&self, from: usize) -> Option<(String, usize)> {
        let mut at = from;
        while self.chars.get(at).is_some_and(|&c| is_space(c)) {
            at += 1;
        }
        let start = at;
        while self
            .chars
            .get(at)
            .is_some_and(|&c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E'))
        {
            at += 1;
        }
        let number: String = self.chars[start..at].iter().collect();
        while self.chars.get(at).is_some_and(|&c| is_space(c)) {
            at += 1;
        }
        (NUMBER.is_match(&number) && self.chars.get(at) == Some(&']')).then_some((number, at + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn texts(prompt: &str, steps: usize) -> Vec<(usize, String)> {
        schedule(prompt, steps)
            .into_iter()
            .map(|s| (s.until, s.text))
            .collect()
    }

    fn pairs(list: &[(usize, &str)]) -> Vec<(usize, String)> {
        list.iter().map(|(n, t)| (*n, t.to_string())).collect()
    }

    #[test]
    fn and_composes_prompts_each_with_the_weight_it_ends_with() {
        let composed = |prompt: &str| -> Vec<(String, f64)> {
            compose(prompt)
                .into_iter()
                .map(|c| (c.text, c.weight))
                .collect()
        };
        let owned = |list: &[(&str, f64)]| -> Vec<(String, f64)> {
            list.iter().map(|(t, w)| (t.to_string(), *w)).collect()
        };
        assert_eq!(
            composed("a castle AND a dragon:0.7 AND fog : -.5 "),
            owned(&[("a castle", 1.0), (" a dragon", 0.7), (" fog", -0.5)])
        );
        // Only the word: ANDROID, band and lower-case "and" are text; emphasis is no weight.
        assert_eq!(
            composed("ANDROID and band, (red:1.2)"),
            owned(&[("ANDROID and band, (red:1.2)", 1.0)])
        );
        assert_eq!(composed("portrait:1.5"), owned(&[("portrait", 1.5)]));
        assert_eq!(composed("[a:b:3]"), owned(&[("[a:b:3]", 1.0)]));
        assert_eq!(composed("AND"), owned(&[("", 1.0), ("", 1.0)]));
    }

    #[test]
    fn an_outline_lists_the_parts_and_the_steps_each_text_holds_for() {
        assert!(outline("a plain prompt", 20, 8).is_empty());
        // Step s from 0 takes the first text whose end is not before it: `[a:b:5]` holds `a`
        // for six steps.
        assert_eq!(
            outline("[stone:moss:5] wall", 10, 8),
            ["steps 1–6: stone wall", "steps 7–10: moss wall"]
        );
        assert_eq!(
            outline("castle AND [red|blue] dragon:0.7", 5, 2),
            [
                "× 1 · castle",
                "× 0.7",
                "  steps 1–2: red dragon",
                "  step 3: blue dragon",
                "  … 2 more",
            ]
        );
    }

    #[test]
    fn edits_add_remove_and_swap_at_a_step_or_a_fraction() {
        assert_eq!(texts("a [b:3]", 10), pairs(&[(3, "a "), (10, "a b")]));
        assert_eq!(texts("a [b::3]", 10), pairs(&[(3, "a b"), (10, "a ")]));
        assert_eq!(texts("[b:c: 0.25 ]", 20), pairs(&[(5, "b"), (20, "c")]));
        // Nested edits and emphasis inside them.
        assert_eq!(
            texts("a[(b:1.2):[c:d:2]:1]e", 10),
            pairs(&[(1, "a(b:1.2)e"), (2, "ace"), (10, "ade")])
        );
        // An edit past the last step never happens; one at step 0 or below always has.
        assert_eq!(texts("[b:c:30]", 10), pairs(&[(10, "b")]));
        assert_eq!(texts("[b:c:0]", 10), pairs(&[(10, "c")]));
        assert_eq!(texts("[b:c:-2]", 10), pairs(&[(10, "c")]));
    }

    #[test]
    fn alternation_takes_the_next_option_each_step() {
        assert_eq!(
            texts("[fe||]male", 4),
            pairs(&[(1, "female"), (2, "male"), (3, "male"), (4, "female")])
        );
        assert_eq!(
            texts("[a|[b:c:2]]", 3),
            pairs(&[(1, "a"), (2, "b"), (3, "a")])
        );
    }

    #[test]
    fn what_the_grammar_cannot_read_stays_as_written() {
        for prompt in ["a | b [c:d:1]", "[a|b:3]", "trailing \\", "[unclosed:3"] {
            assert_eq!(texts(prompt, 10), pairs(&[(10, prompt)]), "{prompt:?}");
        }
        // Stray brackets around an edit are text.
        assert_eq!(
            texts("((a][:b:c [d:3]", 10),
            pairs(&[(3, "((a][:b:c "), (10, "((a][:b:c d")])
        );
        // Escaped brackets are text, their backslashes kept for the emphasis parser.
        assert_eq!(texts("\\[a:b:1\\]", 10), pairs(&[(10, "\\[a:b:1\\]")]));
    }

    #[test]
    fn deep_or_unclosed_nesting_is_read_in_linear_time() {
        let unclosed = "[a:(".repeat(20_000);
        assert_eq!(texts(&unclosed, 10), pairs(&[(10, &unclosed)]));
        let deep = format!("{}x{}", "[".repeat(500), "]".repeat(500));
        assert_eq!(texts(&deep, 10), pairs(&[(10, &deep)]));
        let edit = format!("{}[a:b:2]{}", "(".repeat(40), ")".repeat(40));
        assert_eq!(texts(&edit, 4).len(), 2);
    }

    proptest! {
        #[test]
        fn every_schedule_ends_on_the_last_step(
            prompt in "[ab \\[\\]():|.0-9]{0,40}",
            steps in 1usize..40,
        ) {
            let schedule = schedule(&prompt, steps);
            prop_assert!(!schedule.is_empty());
            prop_assert_eq!(schedule.last().map(|s| s.until), Some(steps));
            prop_assert!(schedule.windows(2).all(|w| w[0].until < w[1].until));
            prop_assert!(schedule.iter().all(|s| s.until >= 1));
        }

        #[test]
        fn an_edit_of_words_swaps_them_after_its_step(
            from in "[a-z]{1,8}",
            to in "[a-z]{1,8}",
            steps in 2usize..50,
            when in 1usize..49,
        ) {
            let when = when.min(steps - 1);
            let prompt = format!("a [{from}:{to}:{when}] gem");
            prop_assert_eq!(
                texts(&prompt, steps),
                vec![(when, format!("a {from} gem")), (steps, format!("a {to} gem"))]
            );
        }

        #[test]
        fn text_without_square_brackets_is_never_scheduled(
            prompt in "[a-z (),:.0-9]{0,60}",
            steps in 1usize..30,
        ) {
            prop_assert_eq!(texts(&prompt, steps), vec![(steps, prompt.clone())]);
        }
    }
}
