//! Refusals recorded where the host enforces a grant.

use std::sync::{Arc, Mutex};

/// What the host refused a guest during one call. Recorded where the host
/// enforces a grant, so the call reports `permission_denied` even when the guest
/// turns the refusal into its own error message.
#[derive(Clone, Default)]
pub struct Denials(Arc<Mutex<Vec<String>>>);

impl Denials {
    /// Keep the first few refusals, each cut short: a guest that loops on refused
    /// requests must not grow host memory with them.
    pub(super) fn record(&self, mut reason: String) {
        const KEPT: usize = 8;
        const LENGTH: usize = 512;
        if let Some((cut, _)) = reason.char_indices().nth(LENGTH) {
            reason.truncate(cut);
            reason.push('…');
        }
        let mut denials = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if denials.len() < KEPT {
            denials.push(reason);
        }
    }

    pub(super) fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
