//! The periods `/system/stats` answers for, and how a period's samples become a chart of at most
//! [`MAX_POINTS`] points. Pure: the database averages the samples of each bucket
//! (`store::system_samples::series`), with the bucket width and the start decided here.
//!
//! Buckets are aligned on multiples of their width since the Unix epoch, so a chart asked for
//! again a little later keeps its points where they were. A period of `D` seconds overlaps at
//! most `ceil(D / w) + 1` aligned buckets of width `w`; `w = ceil(D / (MAX_POINTS - 1))` keeps
//! that at or below [`MAX_POINTS`]. Each point is stamped with the mean time of its samples, so
//! it lies inside the period even when its bucket began before it.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// The most points a series has, whatever the period.
pub const MAX_POINTS: i64 = 120;

/// How far back `/system/stats` looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Hour,
    Day,
    Week,
    Month,
}

/// A `period` that is none of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a period: use 1h, 24h, 7d or 30d.")]
pub struct UnknownPeriod(pub String);

impl Period {
    pub const ALL: [Period; 4] = [Period::Hour, Period::Day, Period::Week, Period::Month];

    pub fn parse(s: &str) -> Result<Period, UnknownPeriod> {
        Period::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPeriod(s.to_string()))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Hour => "1h",
            Period::Day => "24h",
            Period::Week => "7d",
            Period::Month => "30d",
        }
    }

    pub fn seconds(self) -> i64 {
        match self {
            Period::Hour => 3_600,
            Period::Day => 24 * 3_600,
            Period::Week => 7 * 24 * 3_600,
            Period::Month => 30 * 24 * 3_600,
        }
    }

    /// The width of one point's bucket, in seconds.
    pub fn bucket_secs(self) -> i64 {
        let span = MAX_POINTS - 1;
        (self.seconds() + span - 1) / span
    }

    /// Where the period that ends at `now` begins.
    pub fn start(self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - Duration::seconds(self.seconds())
    }
}

/// The bucket a sample taken at `at` falls in, for buckets `width_secs` wide: what the database
/// computes as `floor(extract(epoch FROM sampled_at) / width)`.
pub fn bucket_of(at: DateTime<Utc>, width_secs: i64) -> i64 {
    at.timestamp_micros()
        .div_euclid(width_secs.max(1).saturating_mul(1_000_000))
}

/// One bucket as the database averaged it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Bucket {
    /// The mean time of the bucket's samples.
    pub at: DateTime<Utc>,
    pub cpu: f64,
    pub memory: f64,
}

/// One point of a chart.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Point {
    pub timestamp: DateTime<Utc>,
    /// Percent, 0 to 100.
    pub value: f64,
}

/// The CPU and memory series of `buckets` (oldest first, at most [`MAX_POINTS`]): a bucket whose
/// average is not a number is left out, and values stay within 0 to 100, rounded to 0.01.
pub fn series(mut buckets: Vec<Bucket>) -> (Vec<Point>, Vec<Point>) {
    buckets.sort_by_key(|b| b.at);
    let keep = usize::try_from(MAX_POINTS).unwrap_or(usize::MAX);
    let skip = buckets.len().saturating_sub(keep);
    let point = |at, value: f64| {
        value.is_finite().then(|| Point {
            timestamp: at,
            value: ((value.clamp(0.0, 100.0)) * 100.0).round() / 100.0,
        })
    };
    let cpu = buckets
        .iter()
        .skip(skip)
        .filter_map(|b| point(b.at, b.cpu))
        .collect();
    let memory = buckets
        .iter()
        .skip(skip)
        .filter_map(|b| point(b.at, b.memory))
        .collect();
    (cpu, memory)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use chrono::TimeZone;

    use super::*;

    #[test]
    fn the_four_periods_parse_and_anything_else_is_refused() {
        for p in Period::ALL {
            assert_eq!(Period::parse(p.as_str()), Ok(p));
        }
        assert_eq!(Period::parse("1h").map(Period::seconds), Ok(3_600));
        assert_eq!(Period::parse("30d").map(Period::seconds), Ok(2_592_000));
        for bad in ["", "1H", "2h", "24 h", "7", "1w", "30d ", "-1h"] {
            assert_eq!(Period::parse(bad), Err(UnknownPeriod(bad.to_string())));
        }
    }

    /// Samples every `step` seconds over the whole period, for several ends of the period: they
    /// fall in at most MAX_POINTS buckets, and in nearly as many (the chart uses its points).
    #[test]
    fn a_period_of_samples_falls_in_at_most_max_points_buckets() {
        for period in Period::ALL {
            let width = period.bucket_secs();
            let step = (period.seconds() / 5_000).max(1);
            for offset in [0, 1, 7, width / 2, width - 1, 86_399] {
                let now = Utc.timestamp_opt(1_790_000_000 + offset, 0).unwrap();
                let start = period.start(now);
                let buckets: BTreeSet<i64> = (0..=period.seconds() / step)
                    .map(|i| bucket_of(start + Duration::seconds(i * step), width))
                    .collect();
                assert!(
                    buckets.len() as i64 <= MAX_POINTS,
                    "{period:?} ending at +{offset}: {} buckets",
                    buckets.len()
                );
                assert!(
                    buckets.len() as i64 >= MAX_POINTS - 3,
                    "{period:?}: only {} buckets",
                    buckets.len()
                );
            }
        }
    }

    #[test]
    fn buckets_are_aligned_on_the_epoch_and_stable_over_time() {
        let width = Period::Hour.bucket_secs();
        assert_eq!(width, 31);
        let at = |secs: i64| Utc.timestamp_opt(secs, 0).unwrap();
        assert_eq!(bucket_of(at(0), width), 0);
        assert_eq!(bucket_of(at(30), width), 0);
        assert_eq!(bucket_of(at(31), width), 1);
        assert_eq!(bucket_of(at(-1), width), -1, "before the epoch rounds down");
        let micro = Utc.timestamp_micros(31 * 1_000_000 - 1).unwrap();
        assert_eq!(
            bucket_of(micro, width),
            0,
            "a microsecond short stays in its bucket"
        );
    }

    #[test]
    fn series_are_ordered_bounded_rounded_and_skip_what_is_not_a_number() {
        let at = |secs: i64| Utc.timestamp_opt(secs, 0).unwrap();
        let buckets = vec![
            Bucket {
                at: at(20),
                cpu: 12.345,
                memory: 150.0,
            },
            Bucket {
                at: at(10),
                cpu: f64::NAN,
                memory: -3.0,
            },
        ];
        let (cpu, memory) = series(buckets);
        assert_eq!(
            cpu,
            vec![Point {
                timestamp: at(20),
                value: 12.35
            }]
        );
        assert_eq!(
            memory,
            vec![
                Point {
                    timestamp: at(10),
                    value: 0.0
                },
                Point {
                    timestamp: at(20),
                    value: 100.0
                }
            ]
        );
        let many = (0..MAX_POINTS + 5)
            .map(|i| Bucket {
                at: at(i),
                cpu: 1.0,
                memory: 1.0,
            })
            .collect();
        let (cpu, _) = series(many);
        assert_eq!(cpu.len() as i64, MAX_POINTS);
        assert_eq!(cpu[0].timestamp, at(5), "the newest points are kept");
    }
}
