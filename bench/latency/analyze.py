#!/usr/bin/env python3
"""Commit-to-durable latency from a strata catalog on a local directory.

  analyze.py ROOT [--from-id N] [--expect-rows M] [--json OUT]

For every commit object ROOT/_catalog/log/<20 digits>.json: its wall_time_us (when the
compactor wrote the commit) and the segments its AddSegment actions name. For every row of
those segments: latency = that commit's wall_time_us - the row's _commit_ts (the source's
commit time). Rows with id < --from-id (warm-up) are counted but left out of the percentiles.
Needs duckdb (PyPI) to read Parquet.
"""
import argparse
import glob
import json
import os
import sys

import duckdb

ap = argparse.ArgumentParser()
ap.add_argument("root")
ap.add_argument("--from-id", type=int, default=None)
ap.add_argument("--expect-rows", type=int, default=None)
ap.add_argument("--json", default=None)
args = ap.parse_args()

files = []  # (path, commit wall_time_us, version)
for path in sorted(glob.glob(os.path.join(args.root, "_catalog", "log", "*.json"))):
    with open(path) as f:
        commit = json.load(f)
    for action in commit.get("actions", []):
        if action.get("type") == "add_segment":
            files.append((os.path.join(args.root, action["path"]), commit["wall_time_us"], commit["version"]))

con = duckdb.connect()
con.execute("CREATE TABLE seg (file VARCHAR, commit_us BIGINT, version BIGINT)")
con.executemany("INSERT INTO seg VALUES (?, ?, ?)", files)
if files:
    con.execute(
        "CREATE TABLE r AS SELECT s.commit_us, s.version, p.id, p._op, epoch_us(p._commit_ts) AS commit_ts_us "
        "FROM read_parquet(?, filename = true) p JOIN seg s ON s.file = p.filename",
        [[f for f, _, _ in files]],
    )
else:
    con.execute("CREATE TABLE r (commit_us BIGINT, version BIGINT, id BIGINT, _op VARCHAR, commit_ts_us BIGINT)")

total, distinct_ids = con.execute("SELECT count(*), count(DISTINCT id) FROM r").fetchone()
where = f"WHERE id >= {int(args.from_id)}" if args.from_id is not None else ""
q = f"""
SELECT count(*),
       quantile_cont(lat, 0.5), quantile_cont(lat, 0.9), quantile_cont(lat, 0.99), max(lat), min(lat), avg(lat),
       min(commit_ts_us), max(commit_ts_us)
FROM (SELECT (commit_us - commit_ts_us) / 1e6 AS lat, commit_ts_us FROM r {where})
"""
n, p50, p90, p99, mx, mn, avg, t_first, t_last = con.execute(q).fetchone()
span = (t_last - t_first) / 1e6 if n else 0.0
# Steadiness: rows per whole second of source commit time (first and last second left out).
per_sec = [c for (_, c) in con.execute(
    f"SELECT commit_ts_us // 1000000 AS s, count(*) FROM r {where} GROUP BY s ORDER BY s").fetchall()]
inner = per_sec[1:-1] or per_sec
commits = con.execute(f"SELECT count(DISTINCT version) FROM r {where}").fetchone()[0]
result = {
    "rows_in_catalog": total,
    "distinct_ids": distinct_ids,
    "segments": len(files),
    "commits_with_rows": commits,
    "measured_rows": n,
    "p50_s": p50, "p90_s": p90, "p99_s": p99, "max_s": mx, "min_s": mn, "mean_s": avg,
    "source_span_s": span,
    "achieved_rows_per_s": (n / span) if span > 0 else None,
    "rows_per_s_min": min(inner) if inner else None,
    "rows_per_s_max": max(inner) if inner else None,
    "seconds": len(per_sec),
}
if args.json:
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
print(json.dumps(result))
if args.expect_rows is not None and (total != args.expect_rows or distinct_ids != args.expect_rows):
    print(f"ROW COUNT MISMATCH: catalog holds {total} rows ({distinct_ids} distinct ids), "
          f"expected {args.expect_rows}", file=sys.stderr)
    sys.exit(3)
