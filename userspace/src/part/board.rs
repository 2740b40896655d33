//! What the parts publish for the admin API: a JSON value and metrics text per part.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct Board {
    status: BTreeMap<String, serde_json::Value>,
    metrics: BTreeMap<String, String>,
}

/// Cheap to clone; parts overwrite their own entry whenever their state changes.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard {
    inner: Arc<Mutex<Board>>,
}

impl StatusBoard {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&self, part: &str, value: serde_json::Value) {
        if let Ok(mut b) = self.inner.lock() {
            b.status.insert(part.to_string(), value);
        }
    }

    /// `text` is [`super::prometheus::Metrics::text`]: OpenMetrics families `portier_<part>_...`
    /// without the final `# EOF`.
    pub fn set_metrics(&self, part: &str, text: String) {
        if let Ok(mut b) = self.inner.lock() {
            b.metrics.insert(part.to_string(), text);
        }
    }

    pub fn status(&self) -> serde_json::Value {
        self.inner
            .lock()
            .map(|b| serde_json::Value::Object(b.status.clone().into_iter().collect()))
            .unwrap_or(serde_json::Value::Null)
    }

    pub fn metrics(&self) -> String {
        self.inner
            .lock()
            .map(|b| b.metrics.values().cloned().collect::<Vec<_>>().join(""))
            .unwrap_or_default()
    }
}

/// One part's entry on the board.
#[derive(Debug, Clone)]
pub struct PartBoard {
    board: StatusBoard,
    part: &'static str,
}

impl PartBoard {
    pub fn new(board: StatusBoard, part: &'static str) -> Self {
        Self { board, part }
    }

    pub fn set(&self, value: serde_json::Value) {
        self.board.set(self.part, value);
    }

    pub fn set_metrics(&self, text: String) {
        self.board.set_metrics(self.part, text);
    }
}
