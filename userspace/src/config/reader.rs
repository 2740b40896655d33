//! Typed, path-aware access to toml's spanned document tree.
//!
//! serde stops at the first error; walking `DeTable` by hand lets one pass report every
//! unknown key, wrong type and missing key, each with its own span.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::report::Report;

/// A value with where it came from, so later checks can point at it.
#[derive(Debug, Clone)]
pub(super) struct Located<T> {
    pub value: T,
    pub offset: usize,
    pub key: String,
}

/// A table plus its dotted path and the offset of its header.
pub(super) struct Table<'t, 'i> {
    table: &'t DeTable<'i>,
    offset: usize,
    path: String,
}

impl<'t, 'i> Table<'t, 'i> {
    pub(super) fn root(document: &'t Spanned<DeTable<'i>>) -> Self {
        Self {
            table: document.get_ref(),
            offset: document.span().start,
            path: String::new(),
        }
    }

    pub(super) fn offset(&self) -> usize {
        self.offset
    }

    pub(super) fn path(&self) -> &str {
        &self.path
    }

    pub(super) fn key_path(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{}", self.path, name)
        }
    }

    /// Reports every key not in `allowed`; call once per table.
    pub(super) fn deny_unknown(&self, report: &mut Report<'_>, allowed: &[&str]) {
        for (key, _) in self.table.iter() {
            let name: &str = key.get_ref();
            if !allowed.contains(&name) {
                report.add(
                    key.span().start,
                    self.key_path(name),
                    format!(
                        "unknown key \"{name}\" (expected one of: {})",
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    /// Entries of array `name` as written, valid or not; `None` when absent or not an array.
    pub(super) fn array_len(&self, name: &str) -> Option<usize> {
        self.get(name)?
            .get_ref()
            .as_array()
            .map(|array| array.len())
    }

    pub(super) fn has(&self, name: &str) -> bool {
        self.table.contains_key(name)
    }

    fn get(&self, name: &str) -> Option<&'t Spanned<DeValue<'i>>> {
        self.table.get(name)
    }

    fn missing(&self, report: &mut Report<'_>, name: &str) {
        report.add(self.offset, self.key_path(name), "missing required key");
    }

    /// A present key of the expected type, or `None` after reporting a wrong type.
    fn typed<T>(
        &self,
        report: &mut Report<'_>,
        name: &str,
        expected: &str,
        extract: impl FnOnce(&'t DeValue<'i>) -> Option<T>,
    ) -> Option<Located<T>> {
        let value = self.get(name)?;
        located(report, value, self.key_path(name), expected, extract)
    }

    pub(super) fn optional_str(
        &self,
        report: &mut Report<'_>,
        name: &str,
    ) -> Option<Located<&'t str>> {
        self.typed(report, name, "a string", DeValue::as_str)
    }

    pub(super) fn required_str(
        &self,
        report: &mut Report<'_>,
        name: &str,
    ) -> Option<Located<&'t str>> {
        if self.get(name).is_none() {
            self.missing(report, name);
        }
        self.optional_str(report, name)
    }

    pub(super) fn optional_bool(
        &self,
        report: &mut Report<'_>,
        name: &str,
    ) -> Option<Located<bool>> {
        self.typed(report, name, "a boolean", DeValue::as_bool)
    }

    pub(super) fn optional_int(
        &self,
        report: &mut Report<'_>,
        name: &str,
    ) -> Option<Located<i128>> {
        let value = self.get(name)?;
        let key = self.key_path(name);
        let Some(integer) = value.get_ref().as_integer() else {
            report_type(report, value, &key, "an integer");
            return None;
        };
        match i128::from_str_radix(integer.as_str(), integer.radix()) {
            Ok(number) => Some(Located {
                value: number,
                offset: value.span().start,
                key,
            }),
            Err(_) => {
                report.add(
                    value.span().start,
                    key,
                    format!("{integer} is out of range"),
                );
                None
            }
        }
    }

    /// An array of strings; each element keeps its own location (`key[i]`).
    pub(super) fn optional_str_array(
        &self,
        report: &mut Report<'_>,
        name: &str,
    ) -> Option<Located<Vec<Located<&'t str>>>> {
        let array = self.typed(report, name, "an array of strings", DeValue::as_array)?;
        let items = array
            .value
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                located(
                    report,
                    item,
                    format!("{}[{i}]", array.key),
                    "a string",
                    DeValue::as_str,
                )
            })
            .collect();
        Some(Located {
            value: items,
            offset: array.offset,
            key: array.key,
        })
    }

    /// `[name]`: `None` when absent or not a table (the latter reported).
    pub(super) fn optional_table(
        &self,
        report: &mut Report<'_>,
        name: &str,
    ) -> Option<Table<'t, 'i>> {
        let table = self.typed(report, name, "a table", DeValue::as_table)?;
        Some(Table {
            table: table.value,
            offset: table.offset,
            path: table.key,
        })
    }

    pub(super) fn required_table(
        &self,
        report: &mut Report<'_>,
        name: &str,
    ) -> Option<Table<'t, 'i>> {
        if self.get(name).is_none() {
            self.missing(report, name);
        }
        self.optional_table(report, name)
    }

    /// `[[name]]`: element tables with paths `name[i]`; empty when absent.
    pub(super) fn array_of_tables(
        &self,
        report: &mut Report<'_>,
        name: &str,
    ) -> Vec<Table<'t, 'i>> {
        let Some(array) = self.typed(
            report,
            name,
            "an array of tables ([[...]])",
            DeValue::as_array,
        ) else {
            return Vec::new();
        };
        array
            .value
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let element = located(
                    report,
                    item,
                    format!("{}[{i}]", array.key),
                    "a table",
                    DeValue::as_table,
                )?;
                Some(Table {
                    table: element.value,
                    offset: element.offset,
                    path: element.key,
                })
            })
            .collect()
    }
}

fn located<'t, 'i, T>(
    report: &mut Report<'_>,
    value: &'t Spanned<DeValue<'i>>,
    key: String,
    expected: &str,
    extract: impl FnOnce(&'t DeValue<'i>) -> Option<T>,
) -> Option<Located<T>> {
    match extract(value.get_ref()) {
        Some(inner) => Some(Located {
            value: inner,
            offset: value.span().start,
            key,
        }),
        None => {
            report_type(report, value, &key, expected);
            None
        }
    }
}

fn report_type(report: &mut Report<'_>, value: &Spanned<DeValue<'_>>, key: &str, expected: &str) {
    report.add(
        value.span().start,
        key,
        format!("expected {expected}, found {}", type_name(value.get_ref())),
    );
}

fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}
