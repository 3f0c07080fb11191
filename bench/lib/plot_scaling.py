#!/usr/bin/env python3
"""plot_scaling.py RESULTS.json OUT.png: the scaling figure of docs/BENCHMARKS.md (matplotlib).
Left: wall time and segment bytes against tokens (d_sae 24576); right: the same against
d_sae at a fixed token count. Log-log axes with a dotted line of slope 1 through the first
point: linear growth follows it (none for the store against d_sae: the nonzeros per token,
hence the segments, do not grow with d_sae)."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def panel(ax, pts, xkey, xlabel, store_linear=True):
    xs = [p[xkey] for p in pts]
    t = [p["wall_s"] for p in pts]
    b = [p["store_bytes"] / 2**20 for p in pts]
    ax.loglog(xs, t, "o-", color="tab:blue", label="wall time (s)")
    ax.loglog(xs, [t[0] * x / xs[0] for x in xs], ":", color="tab:blue", alpha=0.6, label="linear from the first point")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("wall time (s)", color="tab:blue")
    ax2 = ax.twinx()
    ax2.set_yscale("log")
    ax2.plot(xs, b, "s--", color="tab:red", label="segments (MiB)")
    if store_linear:  # against d_sae the nonzeros per token stay about 64: no linear reference
        ax2.plot(xs, [b[0] * x / xs[0] for x in xs], ":", color="tab:red", alpha=0.6)
    ax2.set_ylabel("segments (MiB)", color="tab:red")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)


def main():
    r = json.load(open(sys.argv[1]))
    sc = r["scaling"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panel(axes[0], sc["tokens"], "tokens", "tokens (d_sae 24576)")
    panel(axes[1], sc["d_sae"], "d_sae", "d_sae (%d tokens)" % sc["d_sae"][0]["tokens"], store_linear=False)
    fig.suptitle("saelite, stored activations, standard SAE, ~64 active/token (%s, %s)" % (
        r["machine"]["cpu"], r["date_utc"]), fontsize=9)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=90)


if __name__ == "__main__":
    main()
