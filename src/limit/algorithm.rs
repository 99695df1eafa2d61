use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Aimd, FixedLimit, Gradient2, Limit, Vegas};

/// Which [`Limit`] algorithm to run, by name: what a configuration file or a
/// command line selects.
///
/// Names (serde, [`FromStr`], [`Display`](fmt::Display)): `"fixed"`,
/// `"aimd"`, `"gradient2"`, `"vegas"`. [`LimitAlgorithm::build`] makes the
/// algorithm with its default parameters.
///
/// ```
/// use mcp_backpressure::limit::LimitAlgorithm;
///
/// let algorithm: LimitAlgorithm = "gradient2".parse().unwrap();
/// assert_eq!(algorithm, LimitAlgorithm::Gradient2);
/// let limit = algorithm.build(20, 5, 100);
/// assert_eq!(limit.current(), 20);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LimitAlgorithm {
    /// [`FixedLimit`]: `max_concurrent`, never adjusted.
    #[default]
    Fixed,
    /// [`Aimd`]: additive increase, multiplicative decrease on failures.
    Aimd,
    /// [`Gradient2`]: follows the gradient between current and long-term
    /// latency.
    Gradient2,
    /// [`Vegas`]: estimates queueing from latency above the no-load latency.
    Vegas,
}

impl LimitAlgorithm {
    /// Every algorithm, in a fixed order.
    pub const ALL: [LimitAlgorithm; 4] = [
        LimitAlgorithm::Fixed,
        LimitAlgorithm::Aimd,
        LimitAlgorithm::Gradient2,
        LimitAlgorithm::Vegas,
    ];

    /// The algorithm's name, as in configuration.
    pub const fn as_str(self) -> &'static str {
        match self {
            LimitAlgorithm::Fixed => "fixed",
            LimitAlgorithm::Aimd => "aimd",
            LimitAlgorithm::Gradient2 => "gradient2",
            LimitAlgorithm::Vegas => "vegas",
        }
    }

    /// Whether the algorithm moves the limit (everything but `Fixed`), and so
    /// whether `min_limit` and `max_limit` mean anything.
    pub const fn is_adaptive(self) -> bool {
        !matches!(self, LimitAlgorithm::Fixed)
    }

    /// Makes the algorithm, starting at `initial` and kept within
    /// `[min_limit, max_limit]`, with its default parameters.
    ///
    /// `Fixed` ignores the bounds: its limit is `initial`. The adaptive
    /// algorithms never panic on odd bounds (see [`Aimd::with_bounds`]);
    /// validate them first with [`check_bounds`] to report mistakes.
    pub fn build(self, initial: usize, min_limit: usize, max_limit: usize) -> Box<dyn Limit> {
        match self {
            LimitAlgorithm::Fixed => Box::new(FixedLimit::new(initial)),
            // No latency timeout: a tool call may legitimately take longer
            // than Netflix's 5 s (a 30 s report); the edges report an
            // upstream timeout as a dropped outcome instead.
            LimitAlgorithm::Aimd => Box::new(
                Aimd::new(initial)
                    .with_bounds(min_limit, max_limit)
                    .with_timeout(Duration::MAX),
            ),
            LimitAlgorithm::Gradient2 => {
                Box::new(Gradient2::new(initial).with_bounds(min_limit, max_limit))
            }
            LimitAlgorithm::Vegas => {
                Box::new(Vegas::new(initial).with_bounds(min_limit, max_limit))
            }
        }
    }
}

impl fmt::Display for LimitAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LimitAlgorithm {
    type Err = ParseLimitAlgorithmError;

    /// Parses a name exactly as [`LimitAlgorithm::as_str`] spells it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LimitAlgorithm::ALL
            .into_iter()
            .find(|algorithm| algorithm.as_str() == s)
            .ok_or_else(|| ParseLimitAlgorithmError {
                input: s.to_owned(),
            })
    }
}

/// A string that names no [`LimitAlgorithm`]; its message lists the valid
/// names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown limit algorithm {input:?}: expected one of fixed, aimd, gradient2, vegas")]
pub struct ParseLimitAlgorithmError {
    input: String,
}

impl ParseLimitAlgorithmError {
    /// The string that was not recognised.
    pub fn input(&self) -> &str {
        &self.input
    }
}

/// Checks the bounds of an adaptive limit: `1 <= min_limit <= initial <=
/// max_limit`, where `initial` is the `max_concurrent` setting.
///
/// The error message names the settings (`min_limit`, `max_limit`,
/// `max_concurrent`) and their values.
///
/// ```
/// use mcp_backpressure::limit::check_bounds;
///
/// assert!(check_bounds(10, 1, 100).is_ok());
/// let err = check_bounds(10, 20, 100).unwrap_err();
/// assert!(err.contains("min_limit (20)"), "{err}");
/// ```
pub fn check_bounds(initial: usize, min_limit: usize, max_limit: usize) -> Result<(), String> {
    let problem = if min_limit == 0 {
        "min_limit must be at least 1"
    } else if min_limit > initial {
        "min_limit must not exceed max_concurrent"
    } else if initial > max_limit {
        "max_concurrent must not exceed max_limit"
    } else {
        return Ok(());
    };
    Err(format!(
        "invalid limit bounds: {problem} \
         (min_limit ({min_limit}) <= max_concurrent ({initial}) <= max_limit ({max_limit}), \
         min_limit >= 1)"
    ))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::limit::Sample;

    #[test]
    fn names_round_trip() {
        let names: Vec<&str> = LimitAlgorithm::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(names, ["fixed", "aimd", "gradient2", "vegas"]);
        for algorithm in LimitAlgorithm::ALL {
            assert_eq!(algorithm.to_string(), algorithm.as_str());
            assert_eq!(algorithm.as_str().parse::<LimitAlgorithm>(), Ok(algorithm));
            let json = serde_json::to_string(&algorithm).unwrap();
            assert_eq!(json, format!("\"{}\"", algorithm.as_str()));
            assert_eq!(
                serde_json::from_str::<LimitAlgorithm>(&json).unwrap(),
                algorithm
            );
        }
        assert_eq!(LimitAlgorithm::default(), LimitAlgorithm::Fixed);
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let err = "Gradient".parse::<LimitAlgorithm>().unwrap_err();
        assert_eq!(err.input(), "Gradient");
        assert_eq!(
            err.to_string(),
            "unknown limit algorithm \"Gradient\": expected one of fixed, aimd, gradient2, vegas"
        );
        assert!("AIMD".parse::<LimitAlgorithm>().is_err());
        assert!(serde_json::from_str::<LimitAlgorithm>("\"gradient_2\"").is_err());
    }

    #[test]
    fn only_fixed_is_not_adaptive() {
        let adaptive: Vec<bool> = LimitAlgorithm::ALL
            .iter()
            .map(|a| a.is_adaptive())
            .collect();
        assert_eq!(adaptive, [false, true, true, true]);
    }

    /// The limit after two fast samples with every slot in use.
    fn after_two_busy_samples(algorithm: LimitAlgorithm, min: usize, max: usize) -> usize {
        let mut limit = algorithm.build(20, min, max);
        assert_eq!(limit.current(), 20);
        for _ in 0..2 {
            let inflight = limit.current();
            limit.on_sample(&Sample::new(Duration::from_millis(10), inflight, false));
        }
        limit.current()
    }

    #[test]
    fn build_makes_the_named_algorithm() {
        use LimitAlgorithm::*;
        assert_eq!(after_two_busy_samples(Fixed, 1, 100), 20);
        assert_eq!(after_two_busy_samples(Aimd, 1, 100), 22); // +1, +1
        assert_eq!(after_two_busy_samples(Gradient2, 1, 100), 21); // +0.8, +0.8
        assert_eq!(after_two_busy_samples(Vegas, 1, 100), 26); // rtt_noload, +6
    }

    #[test]
    fn a_built_aimd_does_not_take_slow_successes_for_drops() {
        let mut limit = LimitAlgorithm::Aimd.build(10, 1, 10);
        for _ in 0..50 {
            limit.on_sample(&Sample::new(Duration::from_secs(60), 10, false));
        }
        assert_eq!(limit.current(), 10);
        limit.on_sample(&Sample::new(Duration::from_secs(60), 10, true));
        assert_eq!(limit.current(), 9);
    }

    #[test]
    fn build_applies_the_bounds_except_to_fixed() {
        use LimitAlgorithm::*;
        assert_eq!(after_two_busy_samples(Aimd, 1, 21), 21);
        assert_eq!(after_two_busy_samples(Vegas, 1, 23), 23);
        assert_eq!(Fixed.build(20, 30, 40).current(), 20);
        for algorithm in [Aimd, Gradient2, Vegas] {
            let mut limit = algorithm.build(20, 5, 100);
            for _ in 0..100 {
                limit.on_sample(&Sample::new(Duration::from_millis(10), 20, true));
            }
            assert_eq!(limit.current(), 5, "{algorithm}");
            assert_eq!(algorithm.build(20, 30, 40).current(), 30, "{algorithm}");
        }
    }

    #[test]
    fn check_bounds_names_the_settings() {
        assert_eq!(check_bounds(10, 1, 100), Ok(()));
        assert_eq!(check_bounds(10, 10, 10), Ok(()));
        let cases = [
            (check_bounds(10, 0, 100), "min_limit must be at least 1"),
            (
                check_bounds(10, 11, 100),
                "min_limit must not exceed max_concurrent",
            ),
            (
                check_bounds(10, 1, 9),
                "max_concurrent must not exceed max_limit",
            ),
        ];
        for (result, problem) in cases {
            let err = result.unwrap_err();
            assert!(err.contains(problem), "{err}");
            for setting in ["min_limit", "max_concurrent", "max_limit"] {
                assert!(err.contains(setting), "{err}");
            }
        }
        assert_eq!(
            check_bounds(10, 1, 9).unwrap_err(),
            "invalid limit bounds: max_concurrent must not exceed max_limit \
             (min_limit (1) <= max_concurrent (10) <= max_limit (9), min_limit >= 1)"
        );
    }
}
