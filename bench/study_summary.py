#!/usr/bin/env python3
"""Mean and spread over seeds of a study_sweep.sh results table, as Markdown.

usage: python3 bench/study_summary.py RESULTS.tsv [--config NAME ...]

One line per (config, method, attack lr, p): the number of seeds, then for HS, refusal
rate and the fine-tune accuracies "mean ± sd [min-max]" over seeds (sd with n - 1; a
single seed prints its value), then the mean alignment and attack wall seconds.
A second table pairs each defense with sft on the same seed (same world, base, attack mix
and attack seed): the HS and FA sst differences (defense - sft), mean ± sd over seeds,
and how many seeds the defense's HS was below sft's.
Rows the sweep appended again on a rerun replace the earlier ones (the last row of a
(config, seed, method, lr, p) wins). Analysis only; CI does not run it.
"""
import argparse
import csv
import statistics
import sys

METRICS = ["HS", "refusal", "fa_sst", "fa_agnews", "fa_gsm"]


def number(x, digits):
    text = f"{x:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0"


def cell(values):
    if len(values) == 1:
        return number(values[0], 1)
    return (f"{number(statistics.mean(values), 1)} ± {number(statistics.stdev(values), 1)} "
            f"[{number(min(values), 0)}, {number(max(values), 0)}]")


def seconds(rows, key):
    values = [float(r[key]) for r in rows if r[key] not in ("", "-")]
    return f"{statistics.mean(values):.0f}" if values else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("tsv")
    ap.add_argument("--config", action="append", help="only these configurations")
    args = ap.parse_args()
    with open(args.tsv, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    latest = {}
    for r in rows:
        if args.config and r["config"] not in args.config:
            continue
        latest[(r["config"], r["seed"], r["method"], r["attack_lr"], r["p"])] = r
    if not latest:
        sys.exit(f"{args.tsv}: no rows" + (" for those configs" if args.config else ""))
    groups = {}
    for r in latest.values():
        groups.setdefault((r["config"], r["attack_lr"], r["p"], r["method"]), []).append(r)

    method_order = {"sft": 0, "vaccine": 1, "tvaccine": 2}

    def order(key):
        config, lr, p, method = key
        return (config, lr != "-", lr, p != "-", p, method_order.get(method, 9), method)

    print("| config | model | align steps | rho | S | attack lr | p | method | seeds | HS | "
          "refusal | FA sst | FA agnews | FA gsm | align s | attack s |")
    print("|" + "---|" * 16)
    for key in sorted(groups, key=order):
        g = groups[key]
        r0 = g[0]
        stats = " | ".join(cell([float(r[m]) for r in g]) for m in METRICS)
        print(f"| {r0['config']} | {r0['model']} | {r0['align_steps']} | {r0['rho']} | "
              f"{r0['S']} | {r0['attack_lr']} | {r0['p']} | {r0['method']} | {len(g)} | "
              f"{stats} | {seconds(g, 'align_s')} | {seconds(g, 'attack_s')} |")

    print()
    print("| config | attack lr | p | defense - sft | seeds | HS difference | FA sst difference | "
          "seeds with lower HS |")
    print("|" + "---|" * 8)
    for key in sorted(groups, key=order):
        config, lr, p, method = key
        if method == "sft" or (config, lr, p, "sft") not in groups:
            continue
        sft = {r["seed"]: r for r in groups[(config, lr, p, "sft")]}
        pairs = [(r, sft[r["seed"]]) for r in groups[key] if r["seed"] in sft]
        if not pairs:
            continue
        hs = [float(r["HS"]) - float(s["HS"]) for r, s in pairs]
        fa = [float(r["fa_sst"]) - float(s["fa_sst"]) for r, s in pairs]
        lower = sum(1 for d in hs if d < 0)
        print(f"| {config} | {lr} | {p} | {method} - sft | {len(pairs)} | {cell(hs)} | "
              f"{cell(fa)} | {lower} of {len(pairs)} |")


if __name__ == "__main__":
    main()
