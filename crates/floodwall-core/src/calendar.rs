//! UTC calendar arithmetic for the windows of `fixed_window`: multiples of the period since the
//! epoch, whole weeks starting on Monday, and whole months (of their real lengths) starting on
//! the first.
//!
//! Days are counted from 1970-01-01 with the proleptic Gregorian calendar, in integers only, so
//! the Redis scripts (which mirror these functions) compute the same boundaries.

/// Microseconds in a day.
pub(crate) const DAY_US: u64 = 86_400_000_000;
/// Microseconds in a week.
pub(crate) const WEEK_US: u64 = 7 * DAY_US;
/// 1970-01-05, the first Monday after the epoch (a Thursday): whole-week windows start on
/// Mondays, as ISO weeks do.
pub(crate) const FIRST_MONDAY_US: u64 = 4 * DAY_US;

/// Days from 1970-01-01 to the first of `month` (1–12) of `year`.
pub(crate) fn days_to_month_start(year: u64, month: u64) -> u64 {
    // Years counted from March, so that the leap day ends a year.
    let (year, march_based) = if month > 2 {
        (year, month - 3)
    } else {
        (year - 1, month + 9)
    };
    let era = year / 400;
    let year_of_era = year % 400;
    let day_of_year = (153 * march_based + 2) / 5;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    // 719_468 days from 0000-03-01 to 1970-01-01.
    era * 146_097 + day_of_era - 719_468
}

/// The year and month (1–12) of the day `days` after 1970-01-01.
pub(crate) fn month_of_day(days: u64) -> (u64, u64) {
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_based = (5 * day_of_year + 2) / 153;
    let month = if march_based < 10 {
        march_based + 3
    } else {
        march_based - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month)
}

/// The window of `months` calendar months (a divisor of 12) that contains `now_us`, as
/// `[start, end)` in microseconds: windows start on the first of a month whose number, counted
/// from January, is a multiple of `months` (so `3` gives quarters and `12` calendar years).
pub(crate) fn month_window(now_us: u64, months: u64) -> (u64, u64) {
    let (year, month) = month_of_day(now_us / DAY_US);
    let index = year * 12 + (month - 1);
    let first = index - index % months;
    let next = first + months;
    let start = |index: u64| days_to_month_start(index / 12, index % 12 + 1) * DAY_US;
    (start(first), start(next))
}

/// The window of `period_us` that contains `now_us`, as `[start, end)`, aligned to multiples of
/// the period since the epoch.
pub(crate) fn period_window(now_us: u64, period_us: u64) -> (u64, u64) {
    let start = now_us - now_us % period_us;
    (start, start + period_us)
}

/// The window of `weeks` weeks that contains `now_us`, as `[start, end)`: windows start on the
/// first Monday after the epoch and every `weeks` weeks from it; the one before it starts at the
/// epoch.
pub(crate) fn week_window(now_us: u64, weeks: u64) -> (u64, u64) {
    let period_us = weeks * WEEK_US;
    // The first Monday is four days in, under any period of whole weeks.
    let into = (now_us + period_us - FIRST_MONDAY_US) % period_us;
    (now_us.saturating_sub(into), now_us + period_us - into)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Days from the epoch to `year-month-01`, counted the long way: month lengths one by one.
    fn counted(year: u64, month: u64) -> u64 {
        let leap =
            |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
        let length = |y: u64, m: u64| match m {
            2 if leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut days = 0;
        for y in 1970..year {
            days += if leap(y) { 366 } else { 365 };
        }
        for m in 1..month {
            days += length(year, m);
        }
        days
    }

    #[test]
    fn month_starts_agree_with_counting_month_lengths_for_five_centuries() {
        for year in 1970..2470 {
            for month in 1..=12 {
                let days = counted(year, month);
                assert_eq!(days_to_month_start(year, month), days, "{year}-{month}");
                assert_eq!(month_of_day(days), (year, month), "{year}-{month}-01");
                if days > 0 {
                    let (y, m) = month_of_day(days - 1);
                    assert_eq!(
                        y * 12 + m,
                        year * 12 + month - 1,
                        "the day before {year}-{month}-01"
                    );
                }
            }
        }
    }

    #[test]
    fn month_windows_have_the_months_real_lengths() {
        let at = |year, month, day: u64| (counted(year, month) + day - 1) * DAY_US;
        // February in a leap year, a common year, a century that is not leap, and one that is.
        for (year, days) in [(2024, 29), (2026, 28), (2100, 28), (2000, 29)] {
            let (start, end) = month_window(at(year, 2, 15), 1);
            assert_eq!((start, end), (at(year, 2, 1), at(year, 3, 1)));
            assert_eq!((end - start) / DAY_US, days, "February {year}");
        }
        // The last microsecond of a month and the first of the next.
        let new_year = at(2027, 1, 1);
        assert_eq!(month_window(new_year - 1, 1), (at(2026, 12, 1), new_year));
        assert_eq!(month_window(new_year, 1), (new_year, at(2027, 2, 1)));
        // Quarters and years.
        assert_eq!(
            month_window(at(2026, 5, 20), 3),
            (at(2026, 4, 1), at(2026, 7, 1))
        );
        assert_eq!(
            month_window(at(2026, 5, 20), 12),
            (at(2026, 1, 1), new_year)
        );
        assert_eq!(
            month_window(at(2024, 12, 31), 6),
            (at(2024, 7, 1), at(2025, 1, 1))
        );
    }

    #[test]
    fn weeks_start_on_monday_and_periods_at_the_epoch() {
        // 2026-11-30 is a Monday.
        let monday = counted(2026, 11) * DAY_US + 29 * DAY_US;
        assert_eq!(
            week_window(monday + 3 * DAY_US, 1),
            (monday, monday + WEEK_US)
        );
        assert_eq!(week_window(monday, 1), (monday, monday + WEEK_US));
        assert_eq!(week_window(monday - 1, 1), (monday - WEEK_US, monday));
        let (start, end) = week_window(monday + DAY_US, 2);
        assert_eq!(end - start, 2 * WEEK_US);
        assert_eq!((start - FIRST_MONDAY_US) % (2 * WEEK_US), 0);
        // Before the first Monday, the window starts at the epoch.
        assert_eq!(week_window(DAY_US, 1), (0, FIRST_MONDAY_US));
        // A period of seven days is aligned to the epoch, a Thursday.
        let (thursday, _) = period_window(monday, WEEK_US);
        assert_eq!(thursday % WEEK_US, 0);
        assert_eq!(monday - thursday, 4 * DAY_US);
    }
}
