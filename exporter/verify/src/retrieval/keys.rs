//! The comparison of a retrieval object's keys with the keys published in its window
//! (DESIGN §4.3). The object's keys are held sorted; the published keys are fed one file at a
//! time, as the days are read, so that the `00000` bundle is compared with 15 days of files
//! while only one day's files are in memory.

use diagnosis_format::render::PLATFORM_MAX_KEYS_PER_FILE;

use crate::export_file::ExportedKey;

/// An object's keys, marked off as the published keys come.
#[derive(Debug)]
pub(crate) struct KeyMatch {
    /// The object's keys, in canonical order.
    keys: Vec<ExportedKey>,
    /// Which of `keys` a published key matched.
    matched: Vec<bool>,
    missing: usize,
    first_missing: Option<ExportedKey>,
    /// Published keys after the object's last while it holds the platforms' most: left out of
    /// the one object the apps fetch, not missing from it.
    left_out: usize,
}

/// What the comparison found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyVerdict {
    /// Published keys the object lacks, and the first in canonical order.
    pub(crate) missing: Option<(usize, [u8; 16])>,
    /// Keys of the object that matched no published key, and the first in canonical order.
    pub(crate) foreign: Option<(usize, [u8; 16])>,
    /// Published keys left out at the platforms' ceiling.
    pub(crate) left_out: usize,
}

impl KeyMatch {
    /// A comparison for an object holding `keys`.
    pub(crate) fn new(mut keys: Vec<ExportedKey>) -> Self {
        keys.sort_unstable();
        let matched = vec![false; keys.len()];
        Self {
            keys,
            matched,
            missing: 0,
            first_missing: None,
            left_out: 0,
        }
    }

    /// One published key the object must hold.
    pub(crate) fn expect(&mut self, key: &ExportedKey) {
        match self.keys.binary_search(key) {
            Ok(index) => {
                if let Some(matched) = self.matched.get_mut(index) {
                    *matched = true;
                }
            }
            Err(_) if self.is_full() && self.keys.last().is_some_and(|last| key > last) => {
                self.left_out += 1;
            }
            Err(_) => {
                self.missing += 1;
                if self.first_missing.is_none_or(|first| *key < first) {
                    self.first_missing = Some(*key);
                }
            }
        }
    }

    fn is_full(&self) -> bool {
        self.keys.len() >= PLATFORM_MAX_KEYS_PER_FILE
    }

    /// The verdict once every published key has been fed.
    pub(crate) fn finish(self) -> KeyVerdict {
        let mut unmatched = self
            .keys
            .iter()
            .zip(&self.matched)
            .filter(|(_, matched)| !**matched);
        let foreign = unmatched
            .next()
            .map(|(first, _)| (1 + unmatched.count(), first.key_data));
        KeyVerdict {
            missing: self
                .first_missing
                .map(|first| (self.missing, first.key_data)),
            foreign,
            left_out: self.left_out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8, start: i32) -> ExportedKey {
        ExportedKey {
            rolling_start_interval_number: start,
            rolling_period: 144,
            transmission_risk_level: 1,
            report_type: 1,
            days_since_onset: None,
            key_data: [n; 16],
        }
    }

    #[test]
    fn missing_and_foreign_keys_are_counted_with_the_first_in_canonical_order() {
        let mut matching = KeyMatch::new(vec![key(3, 10), key(1, 10), key(2, 10)]);
        for published in [key(2, 10), key(1, 10), key(3, 10)] {
            matching.expect(&published);
        }
        assert_eq!(
            matching.finish(),
            KeyVerdict {
                missing: None,
                foreign: None,
                left_out: 0
            }
        );

        let mut matching = KeyMatch::new(vec![key(9, 12), key(1, 10), key(8, 11), key(1, 10)]);
        for published in [key(7, 9), key(1, 10), key(5, 8)] {
            matching.expect(&published);
        }
        assert_eq!(
            matching.finish(),
            KeyVerdict {
                missing: Some((2, [5; 16])),
                // The repeated key is foreign once: one published key matches one of them.
                foreign: Some((3, [1; 16])),
                left_out: 0
            }
        );
    }

    #[test]
    fn keys_past_a_full_object_are_left_out_not_missing() {
        let keys: Vec<ExportedKey> = (0..PLATFORM_MAX_KEYS_PER_FILE)
            .map(|n| key(0, i32::try_from(n).unwrap_or(i32::MAX)))
            .collect();
        let mut matching = KeyMatch::new(keys);
        matching.expect(&key(0, 5));
        matching.expect(&key(0, i32::MAX));
        matching.expect(&key(1, 5));
        let verdict = matching.finish();
        assert_eq!(verdict.left_out, 1);
        assert_eq!(verdict.missing, Some((1, [1; 16])));
        assert_eq!(
            verdict.foreign.map(|(count, _)| count),
            Some(PLATFORM_MAX_KEYS_PER_FILE - 1)
        );
    }
}
