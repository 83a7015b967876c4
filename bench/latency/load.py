#!/usr/bin/env python3
"""Paced insert load for bench/latency: writes SQL to stdout for one psql session.

  load.py RATE SECONDS TX_ROWS FIRST_ID > psql

Every 1/(RATE/TX_ROWS) s one INSERT of TX_ROWS rows (one transaction, autocommit), on a fixed
schedule (a late statement does not shift the ones after it). Writes a summary to stderr.
"""
import sys
import time

rate, seconds, tx_rows, first_id = (int(a) for a in sys.argv[1:5])
tx_per_s = rate / tx_rows
n_tx = int(seconds * tx_per_s)
out = sys.stdout
t0 = time.monotonic()
late = 0
next_id = first_id
for k in range(n_tx):
    target = t0 + k / tx_per_s
    now = time.monotonic()
    if target > now:
        time.sleep(target - now)
    elif now - target > 0.05:
        late += 1
    a, b = next_id, next_id + tx_rows - 1
    next_id = b + 1
    out.write(
        "INSERT INTO bench_latency (id, customer_id, status, amount, note, created_at) "
        f"SELECT g, g % 1000, 'new', g * 0.01, 'order ' || g, now() FROM generate_series({a}, {b}) g;\n"
    )
    out.flush()
out.write("\\q\n")
out.flush()
elapsed = time.monotonic() - t0
print(f"load: {n_tx} statements x {tx_rows} rows written in {elapsed:.2f} s "
      f"({n_tx * tx_rows / elapsed:.0f} rows/s offered; {late} statements > 50 ms late)", file=sys.stderr)
