"""Units of work: months of a period, keys that make backfill resumable, NRT target days."""

from datetime import date

import numpy as np
import pytest
import xarray as xr

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


def test_a_backfill_failure_names_each_month_with_the_notes_of_its_error():
    undone = RuntimeError("a conflict")
    undone.add_note("cube downscaled_1km: its commit X of this run was undone")
    message = runs.backfill_failure({"2016-05": undone, "2016-07": OSError("gone")}, {"2016-06": {}})
    assert message.startswith("2 of 3 months failed (2016-05: a conflict cube downscaled_1km: its commit X "
                              "of this run was undone; 2016-07: gone)")


def test_lst_of_the_quality_asked_for_is_used():
    # VNP21 QC: bits 0-1 mandatory QA (0 best, 1 nominal, 2 cloud, 3 not produced); the other bits grade a
    # produced pixel further; 65535 is the reader's fill where no tile covers a cell
    qc = xr.DataArray(np.array([0, 1, 2, 3, 0b0100_0100, 0b0101, 65535], dtype=np.uint16))
    assert runs.usable_lst(qc, "best").values.tolist() == [True, False, False, False, True, False, False]
    assert runs.usable_lst(qc, "nominal").values.tolist() == [True, True, False, False, True, True, False]


def test_nrt_days_are_the_target_and_the_recheck_window():
    assert runs.nrt_days(date(2016, 6, 10)) == [date(2016, 6, 5), date(2016, 6, 6), date(2016, 6, 7)]
    assert runs.nrt_days(date(2016, 6, 10), latency_days=3, recheck_days=0) == [date(2016, 6, 7)]


def test_a_day_takes_the_lai_of_its_period_or_the_one_before_whatever_days_the_run_covers():
    """8-day LAI composites named by their first day, with the one of 2016-06-09 missing: each day takes
    its period's composite, else the one before, and a run of one day picks what a month's run picks."""
    starts = np.array(["2016-05-24", "2016-06-01", "2016-06-17", "2016-06-25"], dtype="datetime64[ns]")
    lai = xr.DataArray(np.arange(starts.size, dtype=float), dims="time", coords={"time": starts})
    lookback, ahead = runs.INPUTS["viirs_lai"].span_days

    def run(days):  # the composites a run of `days` lists, and what each day takes of them
        first = np.datetime64(min(days), "ns") - np.timedelta64(lookback, "D")
        last = np.datetime64(max(days), "ns") + np.timedelta64(ahead, "D")
        return runs.lai_of_days(lai.sel(time=(lai.time >= first) & (lai.time <= last)), days).values

    june = runs.month_days(2016, 6)
    taken = run(june)
    np.testing.assert_array_equal(taken, [1.0] * 16 + [2.0] * 8 + [3.0] * 6)  # 06-09 … 06-16: 06-01's
    for k, day in enumerate(june):
        np.testing.assert_array_equal(run([day]), taken[k : k + 1])
    # two composites in a row missing: no LAI for the second period, in any run
    two_missing = runs.lai_of_days(lai.isel(time=[0, 2, 3]), june).values
    assert np.isfinite(two_missing[:8]).all() and np.isnan(two_missing[8:16]).all()
