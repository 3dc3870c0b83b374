"""companion.core.tables: intervals shown as '[low, high]' on the pages, the numbers themselves untouched."""

import numpy as np
import pandas as pd

from companion.core.tables import format_interval, readable


def test_format_interval_signs_differences_and_marks_missing_bounds() -> None:
    assert format_interval((0.01234, 0.0567), signed=True) == "[+0.012, +0.057]"
    assert format_interval([-0.5, 0.25]) == "[-0.500, 0.250]"
    assert format_interval([0.9, None], digits=2) == "[0.90, —]"
    assert format_interval(None) == "—"


def test_readable_formats_interval_columns_and_rows_and_leaves_the_table_alone() -> None:
    table = pd.DataFrame({"share": [0.51234, 0.25], "share_ci": [(0.4, 0.6), (0.1, 0.41234)],
                          "diff_vs_k0_ci": [(0.01234, 0.0567), None], "n": [np.int64(3), 4]}, index=["fr", "ru"])
    shown = readable(table)
    assert shown["share"].tolist() == [0.512, 0.25] and shown["n"].tolist() == [3, 4]
    assert shown["share_ci"].tolist() == ["[0.400, 0.600]", "[0.100, 0.412]"]
    assert shown["diff_vs_k0_ci"].tolist() == ["[+0.012, +0.057]", "—"]
    assert table["share_ci"].tolist() == [(0.4, 0.6), (0.1, 0.41234)]  # the numbers stay numbers
    row = {"layer": 9, "ratio": 1.23456, "pairs": ["en→de"], "diff_ci": (-0.01, 0.02), "ratio_ci": None}
    column = readable(pd.Series(row).to_frame("primary"))["primary"]
    assert column.to_dict() == {"layer": 9, "ratio": 1.235, "pairs": ["en→de"], "diff_ci": "[-0.010, +0.020]",
                                "ratio_ci": "—"}


def test_readable_shows_a_missing_number_as_a_dash() -> None:
    table = pd.DataFrame({"length_rule_acc": [np.nan, 0.5123], "top1_control": [0.4, None]}, index=["train", "id"])
    shown = readable(table)
    assert shown["length_rule_acc"].tolist() == ["—", 0.512] and shown["top1_control"].tolist() == [0.4, "—"]
    assert np.isnan(table.loc["train", "length_rule_acc"])  # the numbers stay numbers
