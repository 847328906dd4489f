//! The objects the deployed COVID Alert apps fetch (DESIGN §4.3), built from the
//! same windows as everything else: `retrieve/{MCC}/{DDDDD}` for each of the
//! last 14 days and today (today's rebuilt after each of its hours closes, and
//! present, empty, from 00:00), and `retrieve/{MCC}/00000` with the 15 days
//! before today, rebuilt once those days are all published.

use diagnosis_core::time::{DayNumber, HourNumber, RELEVANCE_DAYS};
use diagnosis_format::names::{retrieval_bundle_key, retrieval_day_key};

use super::{ExportError, Exporter, Window};

impl Exporter {
    /// The retrieval objects that are behind the hours published so far: each is rebuilt
    /// when the ledger shows another window under its key. `first_hour` is the oldest indexed
    /// hourly window, `last_hour` the newest published one.
    pub(super) async fn stale_retrieval(
        &self,
        today: DayNumber,
        first_hour: HourNumber,
        last_hour: HourNumber,
    ) -> Result<Vec<Window>, ExportError> {
        let first_day = today.plus(-RELEVANCE_DAYS).max(first_hour.day());
        let windows: Vec<Window> = (first_day.get()..=today.get())
            .map(|day| Window::retrieve_day(DayNumber::new(day), last_hour))
            .chain([Window::retrieve_bundle(today, last_hour)])
            .collect();
        let keys: Vec<String> = windows
            .iter()
            .map(|window| self.retrieval_key(*window))
            .collect();
        let published = self.store.published_windows(&keys).await?;
        Ok(windows
            .into_iter()
            .zip(&keys)
            .filter(|(window, key)| {
                published.get(*key) != Some(&(window.start().get(), window.end().get()))
            })
            .map(|(window, _)| window)
            .collect())
    }

    fn retrieval_key(&self, window: Window) -> String {
        let compat = &self.settings.compat_region_path;
        match window.kind {
            super::WindowKind::RetrieveBundle => retrieval_bundle_key(compat),
            _ => retrieval_day_key(compat, window.first_hour.day().get()),
        }
    }
}
