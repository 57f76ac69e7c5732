"""The server-side SVG charts, as pure functions: scale, the newest point's marker."""

import re

from controlplane.dashboard.charts import H, Line, _scale_max, line_chart


def test_the_axis_leaves_headroom_above_the_highest_value() -> None:
    assert _scale_max([]) == 1.0
    assert _scale_max([99.5]) == 200  # not 100: the line would run along the top edge
    assert _scale_max([40]) == 50
    assert _scale_max([0.3]) == 0.5


def test_a_lone_point_gets_a_visible_marker_at_its_value() -> None:
    chart = str(
        line_chart(
            "c",
            "Requests",
            "req/s",
            [Line("rps", "req/s", "a")],
            [{"t": 3570, "rps": 50.0}],
            t_from=0,
            t_to=3600,
            step=30,
        )  # fmt: skip
    )
    dot = re.search(r'class="chart-dot chart-a" d="M([\d.]+),([\d.]+) l0,0"', chart)
    assert dot, chart
    x, y = float(dot.group(1)), float(dot.group(2))
    assert x > 0 and abs(y - H * (1 - 50 / 100)) < 0.1  # 50 of an axis topped at 100
    assert 'data-points="1"' in chart and "50.0" in chart


def test_no_marker_without_data() -> None:
    chart = str(line_chart("c", "CPU", "", [Line("cpu", "cores", "a")], [], 0, 3600, 30))
    assert 'class="chart-dot chart-a" d=""' in chart and "No data in this range yet." in chart


def test_a_sparkline_marks_its_newest_point() -> None:
    from controlplane.dashboard.charts import sparkline

    line = str(sparkline("web req/s", [{"t": 3570, "rps": 4.0}], "rps", 0, 3600, 30))
    assert re.search(r'class="chart-dot chart-a" d="M[\d.]+,[\d.]+ l0,0"', line), line
    assert 'data-latest="4.0"' in line and 'aria-label="web req/s: 4 now"' in line
