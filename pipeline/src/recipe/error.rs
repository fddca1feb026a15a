//! The one error type of recipes, and the byte-offset → line/column mapping behind it.

use std::ops::Range;
use std::path::{Path, PathBuf};

/// A problem with a recipe, located precisely enough for a person to fix it.
///
/// Displays as `recipes/potion.recipe.toml:3:8: `size`: must be between 8 and 2048, got 0`
/// (the field part is left out when the problem is not about one field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{}:{line}:{column}: {}{message}",
    .file.display(),
    .field.as_ref().map(|f| format!("`{f}`: ")).unwrap_or_default()
)]
pub struct RecipeError {
    /// The recipe file, relative to the recipe root.
    pub file: PathBuf,
    /// 1-based line; 0 when the file as a whole is the problem (unreadable, too big).
    pub line: usize,
    /// 1-based column in characters; 0 together with `line == 0`.
    pub column: usize,
    /// The field at fault as a dotted path (`size`, `pixel_art.colors`, `assets.potion.kind`).
    pub field: Option<String>,
    /// What is wrong and, where it helps, what would be right.
    pub message: String,
}

impl RecipeError {
    /// An error about the whole file, with no position in it.
    pub(super) fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            field: None,
            message: message.into(),
        }
    }
}

/// Collects the errors of one file, turning byte spans into lines and columns.
pub(super) struct Report<'a> {
    file: &'a Path,
    text: &'a str,
    line_starts: Vec<usize>,
    pub(super) errors: Vec<RecipeError>,
}

impl<'a> Report<'a> {
    pub(super) fn new(file: &'a Path, text: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            file,
            text,
            line_starts,
            errors: Vec::new(),
        }
    }

    /// Records an error at the start of `span`.
    pub(super) fn error(
        &mut self,
        span: Range<usize>,
        field: Option<&str>,
        message: impl Into<String>,
    ) {
        let (line, column) = self.position(span.start);
        self.errors.push(RecipeError {
            file: self.file.to_path_buf(),
            line,
            column,
            field: field.map(str::to_owned),
            message: message.into(),
        });
    }

    /// 1-based line and character column of a byte offset.
    pub(super) fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self
            .line_starts
            .get(line.saturating_sub(1))
            .copied()
            .unwrap_or(0);
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line, column + 1)
    }

    /// The errors in file order.
    pub(super) fn into_errors(mut self) -> Vec<RecipeError> {
        self.errors.sort_by_key(|e| (e.line, e.column));
        self.errors
    }
}
