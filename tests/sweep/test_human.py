"""Numbers as the report, the console and `plan` write them for a person (sweep/human.py)."""

import math

import pytest

from sweep import human


@pytest.mark.parametrize(
    ("value", "text"),
    [(812, "812"), (9_999, "9,999"), (20_220, "20.2k"), (999_999, "1.00 M"), (2_442_240, "2.44 M"),
     (1.3e9, "1.30 B"), (8420.7, "8,421"), (12.5, "12.5"), (None, "–"), (math.nan, "–")],
)  # fmt: skip
def test_count(value, text):
    assert human.count(value) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.42, "0.4 s"), (52, "52 s"), (59.6, "1 min"), (112, "1 min 52 s"), (3720, "1 h 2 min"), (None, "–")],
)
def test_duration(seconds, text):
    assert human.duration(seconds) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.002, "0.002"), (2e-5, "2e-5"), (3.12e-4, "3.12e-4"), (1234.5, "1,234"), (3.14159, "3.14"),
     (16, "16"), (1.0, "1"), (2.442e6, "2,442,000"), ("all-linear", "all-linear"), (True, "True")],
)  # fmt: skip
def test_number_never_writes_a_padded_exponent(value, text):
    assert human.number(value) == text and "e+" not in text and "e-0" not in text


def test_rate_loss_gigabytes():
    assert human.rate(20_220, "tokens/s") == "20.2k tokens/s"
    assert human.loss(2.96491) == "2.9649" and human.gigabytes(1.234) == "1.23 GB"
