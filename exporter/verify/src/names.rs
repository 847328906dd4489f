//! Object names and the two `index.txt` lists (DESIGN §4): what a published key must look like,
//! how an index lists them, and whether the listed windows leave a gap.
//!
//! Everything here works on names only and never reads an object; a name that does not parse
//! becomes a violation, never a panic, because the bucket may have been written by anyone.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use diagnosis_domain::domain::Region;
use diagnosis_domain::time::{SECONDS_PER_DAY, SECONDS_PER_HOUR};
use diagnosis_format::names::{daily_file_key, hourly_file_key};
use diagnosis_format::render::PartNumber;

use crate::finding::{Finding, NameError};

/// Seconds in one hourly window (DESIGN §4: `end − start = 3600`), as the unsigned seconds of
/// object names.
pub(crate) const HOUR: u64 = SECONDS_PER_HOUR.unsigned_abs();
/// Seconds in one daily window, which starts at UTC midnight (DESIGN §4).
pub(crate) const DAY: u64 = SECONDS_PER_DAY.unsigned_abs();

/// Which of the two series a published file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `{region}/{start}-{end}-{nnnnn}.zip`, one closed hour.
    Hourly,
    /// `{region}/daily/{start}-{end}-{nnnnn}.zip`, one closed UTC day.
    Daily,
}

impl Kind {
    /// The `kind` value of the manifest (`index.json`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hourly => "hourly",
            Self::Daily => "daily",
        }
    }

    /// The unit one window of the kind lasts, for messages.
    pub fn unit(self) -> &'static str {
        match self {
            Self::Hourly => "hour",
            Self::Daily => "day",
        }
    }

    /// Length of the window, seconds.
    pub fn window_seconds(self) -> u64 {
        match self {
            Self::Hourly => HOUR,
            Self::Daily => DAY,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A well-formed object key of an export file, with what its name says.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ObjectName {
    /// The object key, relative to the bucket root.
    pub(crate) key: String,
    /// Hourly or daily.
    pub(crate) kind: Kind,
    /// Window start, unix seconds.
    pub(crate) start: u64,
    /// Window end as named (the real end, not the part-shifted one inside `export.bin`).
    pub(crate) end: u64,
    /// Part number, from `00001`.
    pub(crate) part: PartNumber,
}

impl ObjectName {
    /// The order of an index: oldest first, by start, then part.
    pub(crate) fn order(&self) -> (u64, PartNumber) {
        (self.start, self.part)
    }
}

/// Parses `key` as an hourly or daily export file name of `region`.
///
/// The name must be exactly what [`hourly_file_key`] or [`daily_file_key`] would write (so no
/// leading zeros, no other separators), with a window of one aligned hour or one UTC day.
pub(crate) fn parse_object_name(region: &Region, key: &str) -> Result<ObjectName, NameError> {
    let (kind, start, end, part) =
        split_object_name(region, key).ok_or_else(|| NameError::NotAnExportName {
            name: key.to_owned(),
            region: region.as_str().to_owned(),
        })?;
    let seconds = kind.window_seconds();
    if end.checked_sub(start) != Some(seconds) {
        return Err(NameError::WrongLength {
            name: key.to_owned(),
            kind,
            start,
            end,
        });
    }
    if start % seconds != 0 {
        return Err(NameError::Unaligned {
            name: key.to_owned(),
            kind,
            start,
        });
    }
    Ok(ObjectName {
        key: key.to_owned(),
        kind,
        start,
        end,
        part,
    })
}

/// The kind, start, end and part of `key` when it is exactly the name [`hourly_file_key`] or
/// [`daily_file_key`] writes for them, whatever its window.
fn split_object_name(region: &Region, key: &str) -> Option<(Kind, u64, u64, PartNumber)> {
    let rest = key.strip_prefix(region.as_str())?.strip_prefix('/')?;
    let (kind, file) = match rest.strip_prefix("daily/") {
        Some(file) => (Kind::Daily, file),
        None => (Kind::Hourly, rest),
    };
    let stem = file
        .strip_suffix(".zip")
        .filter(|stem| !stem.contains('/'))?;
    let mut fields = stem.split('-');
    let (Some(start), Some(end), Some(part), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return None;
    };
    let number = |text: &str| {
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse::<u64>().ok())
            .flatten()
    };
    let (start, end) = (number(start)?, number(end)?);
    let part = u32::try_from(number(part)?)
        .ok()
        .and_then(PartNumber::new)?;
    let canonical = match kind {
        Kind::Hourly => hourly_file_key(region, start, end, part),
        Kind::Daily => daily_file_key(region, start, end, part),
    };
    (canonical == key).then_some((kind, start, end, part))
}

/// Reads one `index.txt` (DESIGN §4): one object key per line, each ending in `\n` (a missing
/// final newline is accepted), all of `kind`, oldest first by start then part, none twice.
///
/// Returns the well-formed names once each, in the order listed; every problem becomes a
/// violation naming `index_key` and the line.
pub(crate) fn parse_index(
    region: &Region,
    index_key: &str,
    kind: Kind,
    bytes: &[u8],
    findings: &mut Vec<Finding>,
) -> Vec<ObjectName> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        findings.push(Finding::IndexNotText {
            object: index_key.to_owned(),
        });
        return Vec::new();
    };
    let text = text.strip_suffix('\n').unwrap_or(text);
    if text.is_empty() {
        return Vec::new();
    }
    let mut names: Vec<ObjectName> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for (index, line) in text.split('\n').enumerate() {
        let line_number = index + 1;
        let name = match index_line(region, index_key, kind, line_number, line) {
            Ok(name) => name,
            Err(finding) => {
                findings.push(*finding);
                continue;
            }
        };
        if !seen.insert(line) {
            findings.push(Finding::IndexRepeat {
                object: index_key.to_owned(),
                line: line_number,
                name: line.to_owned(),
            });
            continue;
        }
        if let Some(previous) = names.last()
            && name.order() < previous.order()
        {
            findings.push(Finding::IndexOrder {
                object: index_key.to_owned(),
                line: line_number,
                name: line.to_owned(),
                after: previous.key.clone(),
            });
        }
        names.push(name);
    }
    names
}

/// One line of an index on its own: a well-formed name of the index's `kind`.
fn index_line(
    region: &Region,
    index_key: &str,
    kind: Kind,
    line_number: usize,
    line: &str,
) -> Result<ObjectName, Box<Finding>> {
    if line.is_empty() {
        return Err(Box::new(Finding::IndexEmptyLine {
            object: index_key.to_owned(),
            line: line_number,
        }));
    }
    let name = parse_object_name(region, line).map_err(|problem| {
        Box::new(Finding::IndexBadName {
            object: index_key.to_owned(),
            line: line_number,
            problem,
        })
    })?;
    if name.kind != kind {
        return Err(Box::new(Finding::IndexWrongKind {
            object: index_key.to_owned(),
            line: line_number,
            name: line.to_owned(),
            found: name.kind,
            expected: kind,
        }));
    }
    Ok(name)
}

/// Check 6 of `verify` (DESIGN §4.2: no gap): every window from the oldest to the newest
/// listed is present, and each window's parts run from `00001` without a gap.
///
/// `names` may be in any order. Works on the distinct windows only, so a hostile index with
/// far-apart timestamps costs nothing extra.
pub(crate) fn check_continuity(
    index_key: &str,
    kind: Kind,
    names: &[ObjectName],
    findings: &mut Vec<Finding>,
) {
    let mut windows: BTreeMap<u64, Vec<PartNumber>> = BTreeMap::new();
    for name in names {
        windows.entry(name.start).or_default().push(name.part);
    }
    let step = kind.window_seconds();
    let mut previous: Option<u64> = None;
    for (&start, parts) in &mut windows {
        if let Some(previous) = previous {
            // Windows are aligned to `step` and distinct, so this is at least 1.
            let missing = (start.saturating_sub(previous) / step).saturating_sub(1);
            if missing > 0 {
                findings.push(Finding::WindowsMissing {
                    object: index_key.to_owned(),
                    kind,
                    count: missing,
                    from: previous.saturating_add(step),
                    to: start,
                });
            }
        }
        previous = Some(start);
        parts.sort_unstable();
        let contiguous = parts
            .iter()
            .zip(1_u32..)
            .all(|(part, expected)| part.get() == expected);
        if !contiguous {
            findings.push(Finding::PartsGap {
                object: index_key.to_owned(),
                kind,
                start,
                end: start.saturating_add(step),
                parts: parts.clone(),
            });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ca() -> Region {
        Region::parse("CA").unwrap()
    }

    #[test]
    fn object_names() {
        fn check(key: &str, expected: Result<(Kind, u64, u64, u32), &str>) {
            let got = parse_object_name(&ca(), key)
                .map(|name| (name.kind, name.start, name.end, name.part.get()));
            match (got, expected) {
                (Ok(got), Ok(expected)) => assert_eq!(got, expected, "{key}"),
                (Err(problem), Err(expected)) => {
                    let found = match problem {
                        NameError::NotAnExportName { .. } => "not an export",
                        NameError::WrongLength { .. } => "must last",
                        NameError::Unaligned { .. } => "start at",
                    };
                    assert_eq!(found, expected, "{key}: {problem}");
                }
                (got, expected) => panic!("{key}: got {got:?}, expected {expected:?}"),
            }
        }
        check(
            "CA/1764280800-1764284400-00001.zip",
            Ok((Kind::Hourly, 1_764_280_800, 1_764_284_400, 1)),
        );
        check(
            "CA/1764280800-1764284400-00012.zip",
            Ok((Kind::Hourly, 1_764_280_800, 1_764_284_400, 12)),
        );
        check(
            "CA/daily/1764201600-1764288000-00001.zip",
            Ok((Kind::Daily, 1_764_201_600, 1_764_288_000, 1)),
        );
        check("CA/0-3600-99999.zip", Ok((Kind::Hourly, 0, 3600, 99_999)));
        check("CA/1764280800-1764284400-00000.zip", Err("not an export"));
        check("CA/1764280800-1764284400-1.zip", Err("not an export"));
        check("CA/1764280800-1764284400-000001.zip", Err("not an export"));
        check("CA/01764280800-1764284400-00001.zip", Err("not an export"));
        check("CA/+1764280800-1764284400-00001.zip", Err("not an export"));
        check(
            "CA/1764280800-1764284400-00001.zip.zip",
            Err("not an export"),
        );
        check("CA/1764280800-1764284400-00001", Err("not an export"));
        check("CA/1764280800-1764284400-00001-1.zip", Err("not an export"));
        check("CA/1764280800--00001.zip", Err("not an export"));
        check("US/1764280800-1764284400-00001.zip", Err("not an export"));
        check("CAX/1764280800-1764284400-00001.zip", Err("not an export"));
        check("/CA/1764280800-1764284400-00001.zip", Err("not an export"));
        check("CA/x/1764280800-1764284400-00001.zip", Err("not an export"));
        check(
            "CA/daily/x/1764201600-1764288000-00001.zip",
            Err("not an export"),
        );
        check(
            "CA/99999999999999999999-1764284400-00001.zip",
            Err("not an export"),
        );
        check("CA/1764280800-1764288000-00001.zip", Err("must last"));
        check("CA/1764284400-1764280800-00001.zip", Err("must last"));
        check("CA/1764280860-1764284460-00001.zip", Err("start at"));
        check("CA/daily/1764280800-1764367200-00001.zip", Err("start at"));
        check("CA/daily/1764201600-1764205200-00001.zip", Err("must last"));
        check("CA/18446744073709551600-0-00001.zip", Err("must last"));
        check("CA/index.txt", Err("not an export"));
        check("", Err("not an export"));
    }

    fn index(kind: Kind, text: &str) -> (Vec<String>, Vec<Finding>) {
        let mut violations = Vec::new();
        let names = parse_index(
            &ca(),
            "CA/index.txt",
            kind,
            text.as_bytes(),
            &mut violations,
        );
        (names.into_iter().map(|name| name.key).collect(), violations)
    }

    #[test]
    fn indexes_end_lines_with_newlines_and_may_omit_the_last() {
        let a = "CA/1764280800-1764284400-00001.zip";
        let b = "CA/1764280800-1764284400-00002.zip";
        let c = "CA/1764284400-1764288000-00001.zip";
        for text in [format!("{a}\n{b}\n{c}\n"), format!("{a}\n{b}\n{c}")] {
            let (names, violations) = index(Kind::Hourly, &text);
            assert_eq!(names, [a, b, c]);
            assert!(violations.is_empty(), "{violations:?}");
        }
        assert_eq!(index(Kind::Hourly, ""), (vec![], vec![]));
        assert_eq!(index(Kind::Hourly, "\n"), (vec![], vec![]));
    }

    #[test]
    fn index_problems_are_reported_by_line() {
        let a = "CA/1764280800-1764284400-00001.zip";
        let c = "CA/1764284400-1764288000-00001.zip";
        let daily = "CA/daily/1764201600-1764288000-00001.zip";
        let (names, violations) = index(
            Kind::Hourly,
            &format!("{c}\n{a}\n\n{a}\n{daily}\nCA/nonsense\n{c}\r\n"),
        );
        assert_eq!(names, [c, a]);
        let object = "CA/index.txt".to_owned();
        let not_a_name = |name: &str| NameError::NotAnExportName {
            name: name.to_owned(),
            region: "CA".to_owned(),
        };
        assert_eq!(
            violations,
            [
                Finding::IndexOrder {
                    object: object.clone(),
                    line: 2,
                    name: a.to_owned(),
                    after: c.to_owned(),
                },
                Finding::IndexEmptyLine {
                    object: object.clone(),
                    line: 3,
                },
                Finding::IndexRepeat {
                    object: object.clone(),
                    line: 4,
                    name: a.to_owned(),
                },
                Finding::IndexWrongKind {
                    object: object.clone(),
                    line: 5,
                    name: daily.to_owned(),
                    found: Kind::Daily,
                    expected: Kind::Hourly,
                },
                Finding::IndexBadName {
                    object: object.clone(),
                    line: 6,
                    problem: not_a_name("CA/nonsense"),
                },
                Finding::IndexBadName {
                    object: object.clone(),
                    line: 7,
                    problem: not_a_name(&format!("{c}\r")),
                },
            ]
        );
        // The report lines say as much as the findings.
        let lines: Vec<String> = violations.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                format!(
                    "CA/index.txt: line 2: {a} is listed after {c}, but the index must be \
                     oldest first"
                ),
                "CA/index.txt: line 3 is empty".to_owned(),
                format!("CA/index.txt: line 4: {a} is listed twice"),
                format!(
                    "CA/index.txt: line 5: {daily} is a daily file name, this index lists \
                     hourly files only"
                ),
                "CA/index.txt: line 6: \"CA/nonsense\" is not an export file name \
                 (CA/{start}-{end}-{nnnnn}.zip or CA/daily/{start}-{end}-{nnnnn}.zip)"
                    .to_owned(),
                format!(
                    "CA/index.txt: line 7: \"{c}\\r\" is not an export file name \
                     (CA/{{start}}-{{end}}-{{nnnnn}}.zip or CA/daily/{{start}}-{{end}}-{{nnnnn}}.zip)"
                ),
            ]
        );
        let mut violations = Vec::new();
        let names = parse_index(
            &ca(),
            "CA/index.txt",
            Kind::Hourly,
            b"\xff\n",
            &mut violations,
        );
        assert!(names.is_empty());
        assert_eq!(
            violations,
            [Finding::IndexNotText {
                object: "CA/index.txt".to_owned()
            }]
        );
    }

    fn hourly(start: u64, part: u32) -> ObjectName {
        parse_object_name(
            &ca(),
            &hourly_file_key(&ca(), start, start + HOUR, PartNumber::new(part).unwrap()),
        )
        .unwrap()
    }

    #[test]
    fn gaps_and_part_holes_are_reported() {
        let base = 1_764_201_600;
        let names = [
            hourly(base, 1),
            hourly(base + HOUR, 1),
            hourly(base + HOUR, 2),
            hourly(base + 4 * HOUR, 2),
            hourly(base + 5 * HOUR, 1),
            hourly(base + 5 * HOUR, 3),
            hourly(base + 6 * HOUR, 1),
        ];
        let mut violations = Vec::new();
        check_continuity("CA/index.txt", Kind::Hourly, &names, &mut violations);
        let object = "CA/index.txt".to_owned();
        let parts = |numbers: &[u32]| -> Vec<PartNumber> {
            numbers
                .iter()
                .map(|&n| PartNumber::new(n).unwrap())
                .collect()
        };
        assert_eq!(
            violations,
            [
                Finding::WindowsMissing {
                    object: object.clone(),
                    kind: Kind::Hourly,
                    count: 2,
                    from: base + 2 * HOUR,
                    to: base + 4 * HOUR,
                },
                Finding::PartsGap {
                    object: object.clone(),
                    kind: Kind::Hourly,
                    start: base + 4 * HOUR,
                    end: base + 5 * HOUR,
                    parts: parts(&[2]),
                },
                Finding::PartsGap {
                    object: object.clone(),
                    kind: Kind::Hourly,
                    start: base + 5 * HOUR,
                    end: base + 6 * HOUR,
                    parts: parts(&[1, 3]),
                },
            ]
        );
        assert_eq!(
            violations[0].to_string(),
            format!(
                "CA/index.txt: no hourly file for 2 hour(s) from {} to {} (every hour between \
                 the oldest and the newest listed must be published)",
                base + 2 * HOUR,
                base + 4 * HOUR
            )
        );
        assert_eq!(
            violations[2].to_string(),
            format!(
                "CA/index.txt: the hourly window {}-{} lists parts 00001, 00003 (parts must run \
                 from 00001 without a gap)",
                base + 5 * HOUR,
                base + 6 * HOUR
            )
        );

        let mut violations = Vec::new();
        check_continuity("CA/index.txt", Kind::Hourly, &names[..3], &mut violations);
        assert!(violations.is_empty(), "{violations:?}");
        check_continuity("CA/index.txt", Kind::Hourly, &[], &mut violations);
        assert!(violations.is_empty(), "{violations:?}");
    }

    #[test]
    fn far_apart_windows_cost_nothing() {
        let names = [hourly(0, 1), hourly(u64::MAX / HOUR * HOUR - HOUR, 1)];
        let mut violations = Vec::new();
        check_continuity("CA/index.txt", Kind::Hourly, &names, &mut violations);
        assert_eq!(violations.len(), 1);
    }
}
