//! Collects problems against byte offsets and turns offsets into line numbers.

use super::error::Problem;

pub(super) struct Report<'a> {
    file: &'a str,
    /// Byte offset where each line starts.
    line_starts: Vec<usize>,
    problems: Vec<Problem>,
}

impl<'a> Report<'a> {
    pub(super) fn new(file: &'a str, text: &str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            file,
            line_starts,
            problems: Vec::new(),
        }
    }

    /// 1-based line holding byte `offset`.
    pub(super) fn line_of(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset)
    }

    pub(super) fn add(
        &mut self,
        offset: usize,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        let line = self.line_of(offset).max(1);
        self.problems.push(Problem {
            file: self.file.to_owned(),
            line,
            key: key.into(),
            message: message.into(),
        });
    }

    pub(super) fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// Problems in file order; the parser visits keys alphabetically, readers expect lines.
    pub(super) fn into_problems(mut self) -> Vec<Problem> {
        self.problems.sort_by_key(|p| p.line);
        self.problems
    }
}
