//! Dates that carry their precision.
//!
//! Families rarely know the exact moment: "around March 2023", "between the
//! 1st and the 14th of February". A date register therefore stores one string
//! whose shape says how precise it is, so that a concurrent edit replaces the
//! whole date (value and precision together) and never mixes the two:
//!
//! | precision   | stored form               |
//! |-------------|---------------------------|
//! | exact       | `2023-02-14T06:30Z` (UTC) |
//! | day         | `2023-02-14`              |
//! | month       | `2023-02`                 |
//! | year        | `2023`                    |
//! | approximate | `~2023-02` (any of the three calendar forms) |
//! | range       | `2023-02-01/2023-03` (two calendar forms, ISO 8601 interval) |

use std::fmt;
use std::str::FromStr;

/// How precise a [`FuzzyDate`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatePrecision {
    Exact,
    Day,
    Month,
    Year,
    Approximate,
    Range,
}

/// A calendar date known to the year, the month or the day.
///
/// Fields are private so that every value is valid: month 1–12, a day that
/// exists in that month, a year from 1 to 9999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CalendarDate {
    year: u16,
    month: Option<u8>,
    day: Option<u8>,
}

/// Why a date was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    #[error("year {0} is outside 1..=9999")]
    Year(i64),
    #[error("month {0} is outside 1..=12")]
    Month(u8),
    #[error("day {day} does not exist in {year:04}-{month:02}")]
    Day { year: u16, month: u8, day: u8 },
    #[error("hour {hour} or minute {minute} is out of range")]
    Time { hour: u8, minute: u8 },
    #[error("a range must start no later than it ends")]
    ReversedRange,
    #[error("not a date: {0:?}")]
    Syntax(String),
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            // Gregorian leap years, written without `is_multiple_of` (newer
            // than the workspace's rust-version).
            let leap = matches!((year % 4, year % 100, year % 400), (0, 1.., _) | (_, _, 0));
            if leap {
                29
            } else {
                28
            }
        }
    }
}

fn check_year(year: i64) -> Result<u16, DateError> {
    match u16::try_from(year) {
        Ok(y) if (1..=9999).contains(&y) => Ok(y),
        _ => Err(DateError::Year(year)),
    }
}

impl CalendarDate {
    pub fn year(year: i64) -> Result<Self, DateError> {
        Ok(Self {
            year: check_year(year)?,
            month: None,
            day: None,
        })
    }

    pub fn month(year: i64, month: u8) -> Result<Self, DateError> {
        let year = check_year(year)?;
        if !(1..=12).contains(&month) {
            return Err(DateError::Month(month));
        }
        Ok(Self {
            year,
            month: Some(month),
            day: None,
        })
    }

    pub fn day(year: i64, month: u8, day: u8) -> Result<Self, DateError> {
        let base = Self::month(year, month)?;
        if day == 0 || day > days_in_month(base.year, month) {
            return Err(DateError::Day {
                year: base.year,
                month,
                day,
            });
        }
        Ok(Self {
            day: Some(day),
            ..base
        })
    }

    pub fn get_year(&self) -> u16 {
        self.year
    }

    pub fn get_month(&self) -> Option<u8> {
        self.month
    }

    pub fn get_day(&self) -> Option<u8> {
        self.day
    }

    pub fn precision(&self) -> DatePrecision {
        match (self.month, self.day) {
            (Some(_), Some(_)) => DatePrecision::Day,
            (Some(_), None) => DatePrecision::Month,
            _ => DatePrecision::Year,
        }
    }

    /// The first day this date may mean, for ordering.
    fn start(&self) -> (u16, u8, u8) {
        (self.year, self.month.unwrap_or(1), self.day.unwrap_or(1))
    }

    /// The last day this date may mean, for ordering.
    fn end(&self) -> (u16, u8, u8) {
        let month = self.month.unwrap_or(12);
        (
            self.year,
            month,
            self.day.unwrap_or(days_in_month(self.year, month)),
        )
    }
}

impl fmt::Display for CalendarDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}", self.year)?;
        if let Some(m) = self.month {
            write!(f, "-{m:02}")?;
        }
        if let Some(d) = self.day {
            write!(f, "-{d:02}")?;
        }
        Ok(())
    }
}

fn digits(s: &str, len: usize, whole: &str) -> Result<u16, DateError> {
    if s.len() != len || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DateError::Syntax(whole.to_owned()));
    }
    s.parse().map_err(|_| DateError::Syntax(whole.to_owned()))
}

fn two_digits(s: &str, whole: &str) -> Result<u8, DateError> {
    // Two ASCII digits always fit a u8.
    digits(s, 2, whole).map(|v| v as u8)
}

impl FromStr for CalendarDate {
    type Err = DateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split('-');
        let year = digits(parts.next().unwrap_or(""), 4, s)?;
        let month = parts.next().map(|p| two_digits(p, s)).transpose()?;
        let day = parts.next().map(|p| two_digits(p, s)).transpose()?;
        if parts.next().is_some() {
            return Err(DateError::Syntax(s.to_owned()));
        }
        match (month, day) {
            (None, _) => Self::year(year.into()),
            (Some(m), None) => Self::month(year.into(), m),
            (Some(m), Some(d)) => Self::day(year.into(), m, d),
        }
    }
}

/// A date with its precision. See the module documentation for the stored
/// form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FuzzyDate {
    /// A known moment, to the minute, in UTC.
    Exact {
        date: CalendarDate,
        hour: u8,
        minute: u8,
    },
    /// A date known to the day, the month or the year.
    Known(CalendarDate),
    /// "Around" this date.
    Approximate(CalendarDate),
    /// Somewhere between two dates, both included.
    Range {
        earliest: CalendarDate,
        latest: CalendarDate,
    },
}

impl FuzzyDate {
    pub fn exact(date: CalendarDate, hour: u8, minute: u8) -> Result<Self, DateError> {
        if date.precision() != DatePrecision::Day {
            return Err(DateError::Syntax(format!("{date} is not a day")));
        }
        if hour > 23 || minute > 59 {
            return Err(DateError::Time { hour, minute });
        }
        Ok(Self::Exact { date, hour, minute })
    }

    pub fn range(earliest: CalendarDate, latest: CalendarDate) -> Result<Self, DateError> {
        if earliest.start() > latest.end() {
            return Err(DateError::ReversedRange);
        }
        Ok(Self::Range { earliest, latest })
    }

    pub fn precision(&self) -> DatePrecision {
        match self {
            Self::Exact { .. } => DatePrecision::Exact,
            Self::Known(d) => d.precision(),
            Self::Approximate(_) => DatePrecision::Approximate,
            Self::Range { .. } => DatePrecision::Range,
        }
    }

    /// Checks what the constructors check, for values built directly from
    /// the public variants (for example by a property test or the JS glue).
    pub fn validate(&self) -> Result<(), DateError> {
        match self {
            Self::Exact { date, hour, minute } => Self::exact(*date, *hour, *minute).map(drop),
            Self::Range { earliest, latest } => Self::range(*earliest, *latest).map(drop),
            Self::Known(_) | Self::Approximate(_) => Ok(()),
        }
    }
}

impl fmt::Display for FuzzyDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact { date, hour, minute } => write!(f, "{date}T{hour:02}:{minute:02}Z"),
            Self::Known(d) => write!(f, "{d}"),
            Self::Approximate(d) => write!(f, "~{d}"),
            Self::Range { earliest, latest } => write!(f, "{earliest}/{latest}"),
        }
    }
}

impl FromStr for FuzzyDate {
    type Err = DateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix('~') {
            return Ok(Self::Approximate(rest.parse()?));
        }
        if let Some((a, b)) = s.split_once('/') {
            return Self::range(a.parse()?, b.parse()?);
        }
        if let Some((day, time)) = s.split_once('T') {
            let date: CalendarDate = day.parse()?;
            let time = time
                .strip_suffix('Z')
                .ok_or_else(|| DateError::Syntax(s.to_owned()))?;
            let (h, m) = time
                .split_once(':')
                .ok_or_else(|| DateError::Syntax(s.to_owned()))?;
            return Self::exact(date, two_digits(h, s)?, two_digits(m, s)?);
        }
        Ok(Self::Known(s.parse()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_precision_round_trips_through_its_stored_form() {
        let cases = [
            ("2023-02-14T06:30Z", DatePrecision::Exact),
            ("2023-02-14", DatePrecision::Day),
            ("2023-02", DatePrecision::Month),
            ("2023", DatePrecision::Year),
            ("~2023-02", DatePrecision::Approximate),
            ("2023-02-01/2023-03", DatePrecision::Range),
        ];
        for (text, precision) in cases {
            let date: FuzzyDate = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(date.precision(), precision, "{text}");
            assert_eq!(date.to_string(), text);
        }
    }

    #[test]
    fn impossible_dates_are_refused() {
        for text in [
            "2023-02-29",
            "2024-13",
            "0000",
            "2023-2-1",
            "2023-02-14T24:00Z",
            "2023-02-14T06:30",
            "2023-03/2023-02",
            "~",
            "",
            "2023-02-01-05",
            "２０２３",
        ] {
            assert!(text.parse::<FuzzyDate>().is_err(), "{text} was accepted");
        }
        assert!("2024-02-29".parse::<FuzzyDate>().is_ok());
        // A range within one month given at two precisions is fine.
        assert!("2023-02/2023-02-10".parse::<FuzzyDate>().is_ok());
    }
}
