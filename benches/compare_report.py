"""Prints benches/compare.sh's results as a Markdown table and draws them as a bar chart.

Usage: python3 benches/compare_report.py RESULTS.jsonl CHART.png
"""
import json
import sys

results, chart = sys.argv[1], sys.argv[2]
runs = {}
order = []
for line in open(results):
    run = json.loads(line)
    if run["scenario"] in ("seed", "warm"):
        continue
    if run["scenario"] not in order:
        order.append(run["scenario"])
    runs[(run["server"], run["scenario"])] = run


def cell(server, scenario):
    run = runs.get((server, scenario))
    if run is None:
        return "n/a"
    errors = f", {run['errors']} errors" if run["errors"] else ""
    return f"{run['rps']:,.0f} req/s, p99 {run['p99_ms']:.2f} ms{errors}"


def ratio(scenario, other):
    ours, theirs = runs.get(("tablecast", scenario)), runs.get((other, scenario))
    if not ours or not theirs or not theirs["rps"]:
        return "n/a"
    return f"{ours['rps'] / theirs['rps']:.2f}"


print("| scenario | tablecast | Harper | ceiling | tablecast / Harper | tablecast / ceiling |")
print("| --- | --- | --- | --- | --- | --- |")
for scenario in order:
    print(
        f"| {scenario} | {cell('tablecast', scenario)} | {cell('harper', scenario)} | "
        f"{cell('ceiling', scenario)} | {ratio(scenario, 'harper')} | {ratio(scenario, 'ceiling')} |"
    )

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

servers = [("tablecast", "#2b6cb0"), ("harper", "#c05621"), ("ceiling", "#718096")]
width = 0.27
fig, ax = plt.subplots(figsize=(11, 5))
for n, (server, color) in enumerate(servers):
    xs = [i + (n - 1) * width for i in range(len(order))]
    ys = [runs.get((server, s), {}).get("rps", 0) for s in order]
    bars = ax.bar(xs, ys, width, label=server, color=color)
    for bar, y in zip(bars, ys):
        if y:
            ax.annotate(f"{y / 1000:.1f}k", (bar.get_x() + bar.get_width() / 2, y),
                        ha="center", va="bottom", fontsize=7)
ax.set_xticks(range(len(order)))
ax.set_xticklabels(order, rotation=20)
ax.set_ylabel("requests per second (notify: writes delivered per second)")
ax.set_title("tablecast, Harper and the HTTP ceiling on one core (benches/compare.sh)")
ax.legend()
fig.tight_layout()
fig.savefig(chart, dpi=120)
print(f"\nchart: {chart}", file=sys.stderr)
