"""Units of work: months of a period, keys that make backfill resumable, NRT target days."""

from datetime import date

import pytest

from soilcube import runs


def test_months_cover_the_period():
    assert runs.months(date(2015, 11, 30), date(2016, 2, 1)) == [(2015, 11), (2015, 12), (2016, 1), (2016, 2)]
    assert runs.months(date(2016, 6, 1), date(2016, 6, 3)) == [(2016, 6)]
    with pytest.raises(ValueError, match="before start"):
        runs.months(date(2016, 6, 3), date(2016, 6, 1))


def test_month_days_clip_to_the_period():
    assert len(runs.month_days(2016, 2)) == 29
    assert runs.month_days(2016, 6, date(2016, 6, 29), date(2016, 7, 3)) == [
        date(2016, 6, 29),
        date(2016, 6, 30),
    ]
    assert runs.month_days(2016, 6, date(2016, 7, 1)) == []


def test_a_partial_month_has_its_own_key_so_a_later_whole_month_is_not_skipped():
    whole, part = runs.month_days(2016, 6), runs.month_days(2016, 6, end=date(2016, 6, 3))
    assert runs.month_key(whole) == "2016-06"
    assert runs.month_key(part) == "2016-06-01..2016-06-03"


def test_nrt_days_are_the_target_and_the_recheck_window():
    assert runs.nrt_days(date(2016, 6, 10)) == [date(2016, 6, 5), date(2016, 6, 6), date(2016, 6, 7)]
    assert runs.nrt_days(date(2016, 6, 10), latency_days=3, recheck_days=0) == [date(2016, 6, 7)]
