"""ClassAds to plain data, the form in which ads cross the schedd boundary; shared by both backends."""

from __future__ import annotations

from typing import Any

import classad2

from rsubd.backends.schedd import AdValue, JobAd


def plain(value: Any) -> AdValue:
    """A classad2 value as plain data: Undefined and Error become None, expressions their text."""
    if isinstance(value, classad2.Value):
        return None  # Undefined and Error both read as "no value" across the boundary
    if isinstance(value, classad2.ClassAd):
        return {k: plain(value.eval(k)) for k in value}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, classad2.ExprTree):
        return str(value)
    return value  # type: ignore[no-any-return]  # a literal now


def plain_ad(ad: classad2.ClassAd) -> JobAd:
    """Every attribute of a ClassAd evaluated, as plain data."""
    return {k: plain(ad.eval(k)) for k in ad}
