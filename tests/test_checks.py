"""aalib.checks: one wording for each kind of bad argument."""

from __future__ import annotations

import pytest

from aalib.checks import check_arguments, check_choice, check_float, check_int, int_pair


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (("heads", 0), {}, "heads must be a positive int, got 0"),
        (("heads", True), {}, "heads must be a positive int, got True"),  # a bool is never a count
        (("seed", -1, 0), {}, "seed must be an int >= 0, got -1"),
        (("colours", 9, 2, 8), {}, r"colours must be an int in \[2, 8\], got 9"),
        (("kernel_size", 4), {"odd": True, "note": "('same' padding)"},
         r"kernel_size must be a positive odd int \('same' padding\), got 4"),
        (("trials", 1.0, None), {}, "trials must be an int, got 1.0"),
    ],
)
def test_check_int_names_the_rule_and_the_value(args, kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        check_int(*args, **kwargs)


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (("dash_gap", 0.0, 0.0), {}, "dash_gap must be a finite number > 0, got 0.0"),
        (("noise", -0.1, 0.0), {"strict": False}, "noise must be a finite number >= 0, got -0.1"),
        (("max_turn", 200, 0.0, 180.0), {"strict": False}, "max_turn must be a finite number >= 0 and <= 180, got 200"),
        (("noise", float("nan"), 0.0), {"strict": False, "note": "(std)"}, r"noise must be a finite number >= 0 \(std\), got nan"),
        (("noise", True, 0.0), {"strict": False}, "noise must be a finite number >= 0, got True"),
        (("noise", "0.1", 0.0), {"strict": False}, "noise must be a finite number >= 0, got '0.1'"),
    ],
)
def test_check_float_names_the_rule_and_the_value(args, kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        check_float(*args, **kwargs)


def test_accepted_values_are_returned():
    assert check_float("noise", 0, 0.0, strict=False) == 0.0 and isinstance(check_float("gap", 2, 0.0), float)
    assert check_int("heads", 8) == 8 and check_int("kernel_size", 3, odd=True) == 3
    assert int_pair("extent", 4) == (4, 4) and int_pair("extent", [3, 5]) == (3, 5)
    assert check_choice("attention", None, (None, "softmax")) is None
    check_arguments("model 'wrn'", ["depth"], ["depth", "width"])


def test_pairs_choices_and_arguments():
    for bad in (0, (1, 2, 3), "ab", (2, 0)):
        with pytest.raises(ValueError, match="extent must be a positive int or a pair of them"):
            int_pair("extent", bad)
    with pytest.raises(ValueError, match=r"^position must be one of \('relative', 'none'\), got 'rotary'$"):
        check_choice("position", "rotary", ("relative", "none"))
    with pytest.raises(ValueError, match="^'widht' not taken by model 'wrn'; allowed: depth, width$"):
        check_arguments("model 'wrn'", ["depth", "widht"], ["depth", "width"])
