//! What can be wrong with one of the deployed apps' retrieval objects (DESIGN §4.3), and the
//! line an operator reads for each. A [`RetrievalProblem`] is always reported inside
//! [`crate::Finding::Retrieval`], which names the object.
//!
//! Data only: this module never decides what to check or whether to stop.

use std::fmt;

/// The window of a retrieval object's `export.bin`: `start` to `end`, Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrievalWindow {
    /// `start_timestamp`.
    pub start: u64,
    /// `end_timestamp`.
    pub end: u64,
}

impl fmt::Display for RetrievalWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// An object's size and SHA-256, to tell two versions apart in a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectDigest {
    /// Size in bytes.
    pub bytes: u64,
    /// Lowercase hex SHA-256.
    pub sha256: String,
}

impl fmt::Display for ObjectDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes, SHA-256 {}", self.bytes, self.sha256)
    }
}

/// Keys of a retrieval object, or of its window, that the other lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCount {
    /// The object's window.
    pub window: RetrievalWindow,
    /// The keys compared are those relevant at the window's end (`00000`).
    pub relevant_at_end: bool,
    /// How many.
    pub count: usize,
    /// `key_data` of the first in canonical order.
    pub first: [u8; 16],
}

impl KeyCount {
    fn foreign(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or_irrelevant = if self.relevant_at_end {
            " or are no longer relevant at its end"
        } else {
            ""
        };
        write!(
            f,
            "holds {} key(s) that were not published from {} to {}{or_irrelevant} (another \
             day's, or differing in a field; first: key_data {})",
            self.count,
            self.window.start,
            self.window.end,
            hex::encode(self.first)
        )
    }

    fn missing(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let and_relevant = if self.relevant_at_end {
            " and still relevant at its end"
        } else {
            ""
        };
        write!(
            f,
            "lacks {} key(s) published from {} to {}{and_relevant} (first: key_data {})",
            self.count,
            self.window.start,
            self.window.end,
            hex::encode(self.first)
        )
    }
}

/// One rule of DESIGN §4.3 a retrieval object breaks. Problems of the archive, the header, the
/// signatures and the key order are the export-file findings every file gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetrievalProblem {
    /// The object does not exist, yet the apps fetch it.
    Missing,
    /// `export.bin`'s window is not one this object can ever have: another day's, not whole
    /// hours, or absent.
    NotItsWindow {
        /// `start_timestamp`, if present.
        start: Option<u64>,
        /// `end_timestamp`, if present.
        end: Option<u64>,
        /// The window the newest hour `index.txt` lists calls for.
        expected: RetrievalWindow,
    },
    /// A window this object has at another pass than the one that published the newest hour
    /// `index.txt` lists: older (the object was not rebuilt) or newer.
    OutOfStep {
        /// The window it has.
        found: RetrievalWindow,
        /// The window the newest listed hour calls for.
        expected: RetrievalWindow,
    },
    /// Keys that were not published in the object's window (another day's, or, in `00000`, no
    /// longer relevant at its end), or that differ from the published ones in a field.
    ForeignKeys(KeyCount),
    /// Keys published in the object's window (and, for `00000`, relevant at its end) that the
    /// object lacks.
    MissingKeys(KeyCount),
    /// The object is stored or served with another `Cache-Control` than its kind's
    /// (`diagnosis_format::names::ObjectKind`).
    CacheControl {
        /// The header, `None` when absent.
        found: Option<String>,
        /// What the rule gives.
        expected: &'static str,
    },
    /// The CDN does not answer the apps' request for the object with `200`.
    CdnStatus {
        /// The request, with `{hmac}` in place of the hour's HMAC.
        request: String,
        /// The status it answered.
        status: u16,
    },
    /// The CDN answers the apps' request with other bytes than the object's.
    CdnDiffers {
        /// The request, with `{hmac}` in place of the hour's HMAC.
        request: String,
        /// What the CDN served.
        served: ObjectDigest,
        /// What the bucket holds.
        stored: ObjectDigest,
    },
}

impl fmt::Display for RetrievalProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => write!(
                f,
                "does not exist, but the deployed apps fetch it (DESIGN §4.3)"
            ),
            Self::NotItsWindow {
                start,
                end,
                expected,
            } => not_its_window(f, *start, *end, *expected),
            Self::OutOfStep { found, expected } => out_of_step(f, *found, *expected),
            Self::ForeignKeys(keys) => keys.foreign(f),
            Self::MissingKeys(keys) => keys.missing(f),
            Self::CacheControl { found, expected } => cache_control(f, found.as_deref(), expected),
            Self::CdnStatus { request, status } => {
                write!(
                    f,
                    "GET {request} answers {status}, the apps accept only 200"
                )
            }
            Self::CdnDiffers {
                request,
                served,
                stored,
            } => write!(
                f,
                "GET {request} serves other bytes ({served}) than the object ({stored})"
            ),
        }
    }
}

fn not_its_window(
    f: &mut fmt::Formatter<'_>,
    start: Option<u64>,
    end: Option<u64>,
    expected: RetrievalWindow,
) -> fmt::Result {
    let shown = |value: Option<u64>| value.map_or("absent".to_owned(), |value| value.to_string());
    write!(
        f,
        "export.bin's window is {}-{}, which is no window of this object (expected {expected})",
        shown(start),
        shown(end)
    )
}

fn out_of_step(
    f: &mut fmt::Formatter<'_>,
    found: RetrievalWindow,
    expected: RetrievalWindow,
) -> fmt::Result {
    let how = if (found.start, found.end) < (expected.start, expected.end) {
        "behind"
    } else {
        "ahead of"
    };
    write!(
        f,
        "export.bin's window is {found}, but the newest hour index.txt lists calls for \
         {expected}: the object is {how} the published hours"
    )
}

fn cache_control(f: &mut fmt::Formatter<'_>, found: Option<&str>, expected: &str) -> fmt::Result {
    match found {
        Some(found) => write!(f, "Cache-Control is {found:?}, expected {expected:?}"),
        None => write!(f, "Cache-Control is absent, expected {expected:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(start: u64, end: u64) -> RetrievalWindow {
        RetrievalWindow { start, end }
    }

    #[test]
    fn each_problem_reads_as_one_line() {
        let lines = [
            (
                RetrievalProblem::Missing,
                "does not exist, but the deployed apps fetch it (DESIGN §4.3)",
            ),
            (
                RetrievalProblem::NotItsWindow {
                    start: Some(7200),
                    end: None,
                    expected: window(86_400, 90_000),
                },
                "export.bin's window is 7200-absent, which is no window of this object \
                 (expected 86400-90000)",
            ),
            (
                RetrievalProblem::OutOfStep {
                    found: window(86_400, 90_000),
                    expected: window(86_400, 93_600),
                },
                "export.bin's window is 86400-90000, but the newest hour index.txt lists calls \
                 for 86400-93600: the object is behind the published hours",
            ),
            (
                RetrievalProblem::OutOfStep {
                    found: window(86_400, 97_200),
                    expected: window(86_400, 93_600),
                },
                "export.bin's window is 86400-97200, but the newest hour index.txt lists calls \
                 for 86400-93600: the object is ahead of the published hours",
            ),
            (
                RetrievalProblem::ForeignKeys(KeyCount {
                    window: window(0, 86_400),
                    relevant_at_end: true,
                    count: 2,
                    first: [0xab; 16],
                }),
                "holds 2 key(s) that were not published from 0 to 86400 or are no longer \
                 relevant at its end (another day's, or differing in a field; first: key_data \
                 abababababababababababababababab)",
            ),
            (
                RetrievalProblem::MissingKeys(KeyCount {
                    window: window(0, 3600),
                    relevant_at_end: false,
                    count: 1,
                    first: [1; 16],
                }),
                "lacks 1 key(s) published from 0 to 3600 (first: key_data \
                 01010101010101010101010101010101)",
            ),
            (
                RetrievalProblem::CacheControl {
                    found: None,
                    expected: "public, max-age=300",
                },
                "Cache-Control is absent, expected \"public, max-age=300\"",
            ),
            (
                RetrievalProblem::CdnStatus {
                    request: "https://cdn/retrieve/302/00000/{hmac}".to_owned(),
                    status: 401,
                },
                "GET https://cdn/retrieve/302/00000/{hmac} answers 401, the apps accept only 200",
            ),
            (
                RetrievalProblem::CdnDiffers {
                    request: "https://cdn/retrieve/302/00000/{hmac}".to_owned(),
                    served: ObjectDigest {
                        bytes: 3,
                        sha256: "aa".to_owned(),
                    },
                    stored: ObjectDigest {
                        bytes: 4,
                        sha256: "bb".to_owned(),
                    },
                },
                "GET https://cdn/retrieve/302/00000/{hmac} serves other bytes (3 bytes, SHA-256 \
                 aa) than the object (4 bytes, SHA-256 bb)",
            ),
        ];
        for (problem, line) in lines {
            assert_eq!(problem.to_string(), line);
        }
    }
}
