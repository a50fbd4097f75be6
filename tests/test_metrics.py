"""Continual-learning metrics against values computed by hand.

Columns are 0-based: column j is the task trained at stage j + 1, so task j is
"just learned" at row j + 1 and the row before its stage is row j.
"""

import json
import math

import pytest

from harness.metrics import continual_metrics

approx = pytest.approx


def approx_nested(actual, expected):
    """Element-wise comparison of nested lists that may hold None."""
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        if isinstance(e, list):
            approx_nested(a, e)
        elif e is None:
            assert a is None
        else:
            assert a == approx(e)


# T = 3, numbers chosen so every metric takes a different value.
R3 = [
    [0.20, 0.10, 0.30],  # base
    [0.80, 0.20, 0.40],  # after stage 1 (task 0)
    [0.85, 0.90, 0.35],  # after stage 2 (task 1); task 0 still improves
    [0.50, 0.70, 0.60],  # after stage 3 (task 2)
]


def test_t3_every_metric():
    m = continual_metrics(R3)
    # acc_seen: row 1: 0.8; row 2: (0.85 + 0.9) / 2 = 0.875; row 3: (0.5 + 0.7 + 0.6) / 3 = 0.6
    assert m["acc_seen"] == approx([0.8, 0.875, 0.6])
    # acc_all: 0.6 / 3 = 0.2; 1.4 / 3; 2.1 / 3 = 0.7; 1.8 / 3 = 0.6
    assert m["acc_all"] == approx([0.2, 1.4 / 3, 0.7, 0.6])
    assert m["acc"] == approx(0.6)
    # BWT: task 0: R[3][0] - R[1][0] = 0.5 - 0.8 = -0.3; task 1: R[3][1] - R[2][1] = 0.7 - 0.9 = -0.2
    #      mean = -0.25
    assert m["bwt"] == approx(-0.25)
    # Forgetting: task 0: max(R[1][0], R[2][0]) - R[3][0] = 0.85 - 0.5 = 0.35
    #             task 1: max(R[2][1]) - R[3][1] = 0.9 - 0.7 = 0.2;  mean = 0.275
    assert m["forgetting"] == approx(0.275)
    # First-to-final: (0.8 - 0.5) and (0.9 - 0.7): mean = 0.25 (= -BWT)
    assert m["forgetting_first_final"] == approx(0.25)
    # FWT: task 1: R[1][1] - R[0][1] = 0.2 - 0.1 = 0.1; task 2: R[2][2] - R[0][2] = 0.35 - 0.3 = 0.05
    #      mean = 0.075
    assert m["fwt"] == approx(0.075)
    # New-task gain: (0.8 - 0.2) + (0.9 - 0.1) + (0.6 - 0.3) = 1.7, / 3
    assert m["new_task_gain"] == approx(1.7 / 3)
    # Normalized: column 0: base 0.2, best 0.85 -> / 0.65; column 1: base 0.1, best 0.9 -> / 0.8;
    #             column 2: base 0.3, best 0.6 -> / 0.3
    approx_nested(
        m["normalized"],
        [
            [0.0, 0.0, 0.0],
            [0.6 / 0.65, 0.1 / 0.8, 0.1 / 0.3],
            [1.0, 1.0, 0.05 / 0.3],
            [0.3 / 0.65, 0.6 / 0.8, 1.0],
        ],
    )
    assert m["probe_avg"] is None and m["probe_delta"] is None and m["probe_delta_per_row"] is None
    json.dumps(m, allow_nan=False)  # JSON-safe


# T = 2 with probes; task 0 ends below base, task 1 never moves (zero denominator).
R2 = [
    [0.5, 0.4],
    [0.7, 0.4],
    [0.3, 0.4],
]
P2 = [
    [0.6, 0.7, 0.8],  # probe average 0.7
    [0.5, 0.7, 0.6],  # 0.6
    [0.4, 0.6, 0.5],  # 0.5
]


def test_t2_with_probes_and_a_flat_task():
    m = continual_metrics(R2, P2)
    assert m["acc_seen"] == approx([0.7, 0.35])  # row 2: (0.3 + 0.4) / 2
    assert m["acc_all"] == approx([0.45, 0.55, 0.35])
    assert m["acc"] == approx(0.35)
    assert m["bwt"] == approx(-0.4)  # R[2][0] - R[1][0] = 0.3 - 0.7
    assert m["forgetting"] == approx(0.4)  # max(R[1][0]) - R[2][0]
    assert m["forgetting_first_final"] == approx(0.4)
    assert m["fwt"] == approx(0.0)  # R[1][1] - R[0][1] = 0.4 - 0.4
    assert m["new_task_gain"] == approx(0.1)  # ((0.7 - 0.5) + (0.4 - 0.4)) / 2
    # Column 0: base 0.5, best 0.7 -> (x - 0.5) / 0.2, below base goes negative; column 1: best == base.
    approx_nested(m["normalized"], [[0.0, None], [1.0, None], [-1.0, None]])
    assert m["probe_avg"] == approx([0.7, 0.6, 0.5])
    assert m["probe_delta"] == approx(-0.2)  # 0.5 - 0.7
    assert m["probe_delta_per_row"] == approx([0.0, -0.1, -0.2])
    json.dumps(m, allow_nan=False)


def test_single_task_leaves_transfer_undefined():
    m = continual_metrics([[0.3], [0.7]], probes=[[0.5], [0.5]])
    assert m["acc_seen"] == approx([0.7])
    assert m["acc_all"] == approx([0.3, 0.7])
    assert m["acc"] == approx(0.7)
    assert m["bwt"] is None
    assert m["forgetting"] is None
    assert m["forgetting_first_final"] is None
    assert m["fwt"] is None
    assert m["new_task_gain"] == approx(0.4)
    approx_nested(m["normalized"], [[0.0], [1.0]])
    assert m["probe_delta"] == 0.0
    assert "NaN" not in json.dumps(m)


def test_integers_and_tuples_are_accepted():
    m = continual_metrics(((0, 1), (1, 0), (1, 1)))
    assert m["acc"] == 1.0 and isinstance(m["acc"], float)
    assert m["bwt"] == 0.0  # R[2][0] - R[1][0] = 1 - 1


@pytest.mark.parametrize(
    "matrix, message",
    [
        ([[0.5]], r"at least one training stage, got 1 row"),
        ([], r"got 0 row"),
        ([[0.1, 0.2], [0.3], [0.4, 0.5]], r"matrix row 1 has 1 values, expected 2"),
        ([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]], r"matrix row 0 has 3 values, expected 1"),  # columns != stages
        ([[0.1, 0.2], [0.3, 1.5], [0.4, 0.5]], r"matrix\[1\]\[1\] = 1.5"),
        ([[0.1, 0.2], [0.3, 0.2], [-0.1, 0.5]], r"matrix\[2\]\[0\] = -0.1"),
        ([[0.1, 0.2], [0.3, "0.2"], [0.4, 0.5]], r"matrix\[1\]\[1\] = '0.2'"),
    ],
)
def test_matrix_validation(matrix, message):
    with pytest.raises(ValueError, match=message):
        continual_metrics(matrix)


@pytest.mark.parametrize(
    "probes, message",
    [
        ([[0.5], [0.5]], r"probes has 2 rows, the matrix 3"),
        ([[0.5, 0.6], [0.5], [0.5, 0.6]], r"probes row 1 has 1 values, expected 2"),
        ([[], [], []], r"probes has no columns"),
        ([[0.5], [0.5], [2.0]], r"probes\[2\]\[0\] = 2.0"),
    ],
)
def test_probe_validation(probes, message):
    with pytest.raises(ValueError, match=message):
        continual_metrics(R2, probes)


@pytest.mark.parametrize("undefined", [None, math.nan])
def test_undefined_scores_are_left_out_of_every_mean(undefined):
    """The NaN contract: a score lm-eval could not produce is None in the metrics, excluded from means and differences."""
    m = continual_metrics([[0.1, 0.2], [0.9, undefined], [0.5, 0.6]], [[0.4, undefined], [0.5, 0.7], [0.2, 0.8]])
    assert m["acc_all"] == approx([0.15, 0.9, 0.55])  # row 1: only 0.9 is defined
    assert m["acc"] == approx(0.55)
    assert m["bwt"] == approx(0.5 - 0.9)
    assert m["fwt"] is None  # its only term, R[1][1] - R[0][1], is undefined
    assert m["new_task_gain"] == approx(((0.9 - 0.1) + (0.6 - 0.2)) / 2)
    approx_nested(m["normalized"], [[0.0, 0.0], [1.0, None], [0.5, 1.0]])
    assert m["probe_avg"] == approx([0.4, 0.6, 0.5])
    assert m["probe_delta"] == approx(0.1)
    json.dumps(m, allow_nan=False)  # storable as the runner stores it
