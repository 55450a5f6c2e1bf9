from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.data.times import LocalClock, zone

NS = 1_000_000_000


def test_est_is_fixed_in_summer_too():
    """HistData's EST: UTC-5 in July as in January (New York would be UTC-4)."""
    est = LocalClock(zone("EST"))
    assert est.parse("2020-07-01 12:00:00") == int(datetime(2020, 7, 1, 17,
                                                            tzinfo=timezone.utc).timestamp()) * NS
    ny = LocalClock(zone("America/New_York"))
    assert ny.parse("2020-07-01 12:00:00") == int(datetime(2020, 7, 1, 16,
                                                           tzinfo=timezone.utc).timestamp()) * NS


@pytest.mark.parametrize("name, hours", [("UTC-5", -5), ("UTC+05:30", 5.5), ("-03:00", -3),
                                         ("UTC", 0)])
def test_fixed_offsets(name, hours):
    clock = LocalClock(zone(name))
    assert clock.parse("1970-01-01 00:00") == int(-hours * 3600) * NS


def test_explicit_offset_wins_and_nanoseconds_kept():
    clock = LocalClock(zone("America/New_York"))
    assert clock.parse("1970-01-01T00:00:00.000000001Z") == 1
    assert clock.parse("1970-01-01 01:00:00.5+01:00") == NS // 2


def test_unknown_zone():
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        zone("Mars/Olympus")


@given(st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2040, 1, 1)))
def test_matches_zoneinfo_where_unambiguous(local):
    tz = zone("America/New_York")
    clock = LocalClock(tz)
    text = local.isoformat(sep=" ")
    try:
        ours = clock.parse(text)
    except ValueError:  # a skipped or repeated wall time: zoneinfo would guess
        fold0, fold1 = local.replace(tzinfo=tz), local.replace(tzinfo=tz, fold=1)
        assert fold0.utcoffset() != fold1.utcoffset()
        return
    aware = local.replace(tzinfo=tz)
    expected = (int(aware.replace(microsecond=0).timestamp()) * NS + local.microsecond * 1000)
    assert ours == expected
