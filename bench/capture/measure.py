#!/usr/bin/env python3
"""Measurement helpers for bench/capture/run (Python 3 standard library only).

Subcommands:
  run      start one runner command in its own session, sample its process tree's RSS/CPU every
           --sample seconds, poll progress (Kafka end offsets via kcat, or the walsender's sent_lsn via
           one persistent psql session) until the target is reached, stop the runner, write JSON.
  report   read the per-runner JSON files of a bench run and print the result table and ratios.
  pgparts  split a postgres:// URL into shell assignments (PGHOST=... PGPORT=...) for the Debezium config.
  freeport print a free TCP port on 127.0.0.1.

Progress and milestones (all in seconds since the runner process was spawned):
  t_active  the replication slot is active (a walsender is attached)
  t_first   first change visible (Kafka runners: sum of end offsets > 0; recvlogical: sent_lsn moved)
  t_wal     the walsender's sent_lsn reached the end-of-workload LSN (server has streamed all of it)
  t_done    Kafka runners: sum of end offsets of the runner's topics >= expected events;
            recvlogical: t_done = t_wal (its output goes to /dev/null)
"""
import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------------------------------
# /proc helpers
# --------------------------------------------------------------------------------------------------
def proc_children(pid):
    """Direct children of pid (all threads), via /proc/PID/task/TID/children."""
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    out.extend(int(x) for x in f.read().split())
            except OSError:
                pass
    except OSError:
        pass
    return out


def proc_tree(root):
    seen, stack = [], [root]
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.append(p)
        stack.extend(proc_children(p))
    return seen


def status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid, with_children=False):
    """utime+stime of pid (and of its reaped children when with_children)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return 0.0
    fields = s[s.rindex(")") + 2:].split()
    # fields[0] is state (field 3); utime is field 14 -> index 11
    t = int(fields[11]) + int(fields[12])
    if with_children:
        t += int(fields[13]) + int(fields[14])
    return t / CLK_TCK


# --------------------------------------------------------------------------------------------------
# Progress probes
# --------------------------------------------------------------------------------------------------
class Psql:
    """One persistent psql session; query() returns the unaligned rows of one statement."""

    MARK = "__strata_bench_end__"

    def __init__(self, url):
        env = dict(os.environ, PGAPPNAME="strata-bench-probe", PGCONNECT_TIMEOUT="10")
        self.p = subprocess.Popen(
            ["psql", "-X", "-q", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=0", url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def query(self, sql):
        self.p.stdin.write(sql.rstrip().rstrip(";") + ";\n\\echo " + self.MARK + "\n")
        self.p.stdin.flush()
        rows = []
        while True:
            line = self.p.stdout.readline()
            if line == "":
                raise RuntimeError("psql exited: " + self.p.stderr.read())
            line = line.rstrip("\n")
            if line == self.MARK:
                return rows
            if line:
                rows.append(line.split("|"))

    def close(self):
        try:
            self.p.stdin.close()
            self.p.wait(5)
        except Exception:
            self.p.kill()


def lsn_int(s):
    hi, lo = s.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


class SlotProbe:
    def __init__(self, url, slot):
        self.psql = Psql(url)
        self.slot = slot

    def poll(self):
        rows = self.psql.query(
            "select s.active, coalesce(s.active_pid, 0), coalesce(r.sent_lsn::text, ''), "
            "coalesce(s.confirmed_flush_lsn::text, '') "
            "from pg_replication_slots s left join pg_stat_replication r on r.pid = s.active_pid "
            f"where s.slot_name = '{self.slot}'")
        if not rows:
            return None
        active, pid, sent, flushed = rows[0]
        return {
            "active": active == "t",
            "pid": int(pid),
            "sent": lsn_int(sent) if sent else None,
            "flushed": lsn_int(flushed) if flushed else None,
        }


class KafkaProbe:
    """Sum of end offsets of every topic whose name starts with prefix, via kcat (librdkafka).

    <prefix>.message and <prefix>.transaction (Debezium's topics for logical decoding messages and
    transaction metadata) are counted apart, as aux: pg_logical_emit_message() calls by anyone in the same
    database reach every slot, whatever its publication.
    """

    AUX_SUFFIXES = (".message", ".transaction")

    def __init__(self, brokers, prefix):
        self.brokers, self.prefix = brokers, prefix
        self.partitions = {}  # topic -> [partition ids]
        self.last_meta = 0.0
        self.aux = 0

    def refresh(self):
        r = subprocess.run(["kcat", "-b", self.brokers, "-L", "-J", "-m", "10"],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            return
        meta = json.loads(r.stdout)
        for t in meta.get("topics", []):
            name = t["topic"]
            if name.startswith(self.prefix) and not t.get("error") and t.get("partitions"):
                self.partitions[name] = sorted(p["partition"] for p in t["partitions"])
        self.last_meta = time.monotonic()

    def end_offsets(self):
        if not self.partitions or time.monotonic() - self.last_meta > 2.0:
            self.refresh()
        if not self.partitions:
            return 0
        args = ["kcat", "-b", self.brokers, "-Q", "-m", "10"]
        for t, ps in self.partitions.items():
            for p in ps:
                args += ["-t", f"{t}:{p}:-1"]
        r = subprocess.run(args, capture_output=True, text=True, timeout=30)
        total, aux = 0, 0
        for m in re.finditer(r"^(\S+) \[(\d+)\] offset (-?\d+)", r.stdout, re.M):
            off = int(m.group(3))
            if off <= 0:
                continue
            if m.group(1) in (self.prefix + sfx for sfx in self.AUX_SUFFIXES):
                aux += off
            else:
                total += off
        if r.returncode != 0 and total == 0:
            return None
        self.aux = aux
        return total


# --------------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------------
def cmd_run(a):
    out = {"runner": a.name, "expected": a.expected, "ok": False, "error": None}
    slot = SlotProbe(a.pg_url, a.slot)
    kafka = KafkaProbe(a.brokers, a.topic_prefix) if a.kind == "kafka" else None
    end_lsn, start_lsn = lsn_int(a.end_lsn), lsn_int(a.start_lsn)

    log = open(a.log, "ab")
    t0 = time.monotonic()
    proc = subprocess.Popen(["bash", "-c", a.cmd], stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    if a.pidfile:
        with open(a.pidfile, "w") as f:
            f.write(str(proc.pid))

    stop = {"flag": False}

    def on_signal(signum, _frame):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    state = {"rss_peak_kb": 0, "cpu_live": {}, "t_active": None, "t_first": None, "t_wal": None,
             "t_done": None, "events": 0, "walsender_pid": 0, "progress": []}
    lock = threading.Lock()
    done_evt = threading.Event()

    def sampler():
        # RSS of the runner's process tree; CPU of every process seen (last value before it exits)
        while not done_evt.is_set():
            tree = proc_tree(proc.pid)
            rss = sum(status_kb(p, "VmRSS") for p in tree)
            with lock:
                state["rss_peak_kb"] = max(state["rss_peak_kb"], rss)
                for p in tree:
                    state["cpu_live"][p] = cpu_seconds(p)
            done_evt.wait(a.sample)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()

    deadline = t0 + a.timeout
    last_print = 0.0
    try:
        while True:
            now = time.monotonic()
            el = now - t0
            if stop["flag"]:
                out["error"] = "interrupted"
                break
            exited = proc.poll() is not None  # checked before the probes: a runner may finish and exit
            if now > deadline:
                out["error"] = f"timeout after {a.timeout:.0f}s"
                break
            s = slot.poll()
            if s is None:
                out["error"] = f"slot {a.slot} disappeared"
                break
            if s["active"] and state["t_active"] is None:
                state["t_active"] = el
                state["walsender_pid"] = s["pid"]
            if s["active"]:
                state["walsender_pid"] = s["pid"]
            sent = s["sent"]
            if sent is not None and state["t_wal"] is None and sent >= end_lsn:
                state["t_wal"] = el
            if a.kind == "kafka":
                ev = kafka.end_offsets()
                if ev is not None:
                    state["events"] = ev
                if state["events"] > 0 and state["t_first"] is None:
                    state["t_first"] = el
                if state["events"] >= a.expected:
                    state["t_done"] = el
            else:
                if sent is not None and sent > start_lsn and state["t_first"] is None:
                    state["t_first"] = el
                if state["t_wal"] is not None:
                    state["t_done"] = state["t_wal"]
                    state["events"] = a.expected
            if s["active"] and state["walsender_pid"]:
                state["walsender_cpu"] = cpu_seconds(state["walsender_pid"])
            if el - last_print >= a.print_every:
                last_print = el
                done_frac = (min(sent, end_lsn) - start_lsn) / max(1, end_lsn - start_lsn) if sent else 0
                msg = (f"[{a.name}] t={el:6.1f}s slot_active={s['active']} wal_sent={100 * done_frac:5.1f}%"
                       + (f" events={state['events']}/{a.expected}" if a.kind == "kafka" else ""))
                print(msg, file=sys.stderr, flush=True)
                state["progress"].append([round(el, 2), state["events"], round(100 * done_frac, 1)])
            if state["t_done"] is not None:
                out["ok"] = True
                break
            if exited:
                out["error"] = f"runner exited with status {proc.returncode} before the target (see {a.log})"
                break
            time.sleep(a.poll)

        # final readings before stopping the runner
        tree = proc_tree(proc.pid)
        hwm_root = status_kb(proc.pid, "VmHWM")
        with lock:
            for p in tree:
                state["cpu_live"][p] = cpu_seconds(p)
            state["rss_peak_kb"] = max(state["rss_peak_kb"], sum(status_kb(p, "VmRSS") for p in tree))
        state["hwm_root_kb"] = hwm_root
        if state["walsender_pid"]:
            c = cpu_seconds(state["walsender_pid"])
            if c:
                state["walsender_cpu"] = c
        if a.kind == "kafka" and out["ok"]:
            # settle: let in-flight batches land, then read the final count
            time.sleep(1.0)
            ev = kafka.end_offsets()
            if ev is not None:
                state["events"] = ev
    finally:
        done_evt.set()
        th.join(2)
        stop_tree(proc, a.stop_grace)
        log.close()
        slot.psql.close()

    el_done = state["t_done"]
    out.update({
        "kind": a.kind,
        "events": state["events"],
        "t_active": state["t_active"],
        "t_first": state["t_first"],
        "t_wal": state["t_wal"],
        "t_done": el_done,
        "rss_peak_mb": max(state["rss_peak_kb"], state.get("hwm_root_kb", 0)) / 1024.0,
        "cpu_s": sum(state["cpu_live"].values()),
        "walsender_cpu_s": state.get("walsender_cpu", 0.0) - a.walsender_cpu_base,
        "wal_bytes": end_lsn - start_lsn,
        "aux_events": kafka.aux if kafka else 0,
        "progress": state["progress"],
    })
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    if not out["ok"]:
        print(f"[{a.name}] FAILED: {out['error']}", file=sys.stderr)
        return 1
    return 0


def stop_tree(proc, grace):
    """SIGTERM the runner's session (process group), wait up to grace seconds, then SIGKILL."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = None
    if proc.poll() is None and pgid is not None:
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    if pgid is not None:
        try:
            os.killpg(pgid, signal.SIGKILL)  # stragglers of the group
        except ProcessLookupError:
            pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


# --------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------
def fmt(x, nd=1):
    return "-" if x is None else f"{x:,.{nd}f}"


def cmd_report(a):
    results = []
    for fn in sorted(os.listdir(a.dir)):
        if fn.startswith("result-") and fn.endswith(".json"):
            with open(os.path.join(a.dir, fn)) as f:
                r = json.load(f)
            r["_file"] = fn
            results.append(r)
    meta = {}
    mp = os.path.join(a.dir, "meta.json")
    if os.path.exists(mp):
        with open(mp) as f:
            meta = json.load(f)

    runners = a.runners.split(",")
    hdr = ["runner", "rep", "events", "seconds", "events/s", "stream ev/s", "first ev s",
           "MB/s (kafka)", "B/event", "MB/s (WAL)", "peak RSS MB", "runner CPU s", "walsender CPU s"]
    rows = []
    per = {}
    for r in results:
        name = r["runner"]
        rep = r.get("rep", "")
        if not r.get("ok"):
            rows.append([name, str(rep), str(r.get("events", 0)), "FAILED: " + str(r.get("error")),
                         "", "", "", "", "", "", fmt(r.get("rss_peak_mb"), 0), "", ""])
            continue
        secs = r["t_done"]
        ev = r["expected"]
        eps = ev / secs
        stream = ev / (secs - r["t_first"]) if r.get("t_first") is not None and secs > r["t_first"] else None
        kb = r.get("kafka_bytes")
        mbs_k = kb / secs / 1e6 if kb else None
        bpe = kb / r["events"] if kb and r.get("events") else None
        mbs_w = r["wal_bytes"] / secs / 1e6
        per.setdefault(name, []).append({"eps": eps, "stream": stream, "rss": r["rss_peak_mb"]})
        evs = str(r["events"]) if r["kind"] == "kafka" else f"{ev} (WAL)"
        rows.append([name, str(rep), evs, fmt(secs, 2), fmt(eps, 0), fmt(stream, 0), fmt(r.get("t_first"), 2),
                     fmt(mbs_k, 1), fmt(bpe, 0), fmt(mbs_w, 1), fmt(r["rss_peak_mb"], 0), fmt(r.get("cpu_s"), 1),
                     fmt(r.get("walsender_cpu_s"), 1)])
    for name in runners:
        if name == "strata" and name not in per and not any(r["runner"] == "strata" for r in results):
            rows.append(["strata", "", "not run"] + [""] * (len(hdr) - 3))

    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(hdr)]
    line = lambda cells: " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    print()
    if meta:
        print("rows={rows} updates={updates} clients={clients} pg={pg_version} kafka_brokers={brokers} "
              "debezium={debezium} connect={connect}".format(**{k: meta.get(k, "?") for k in
                                                                  ("rows", "updates", "clients", "pg_version", "brokers", "debezium", "connect")}))
    print(line(hdr))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(line(row))

    if per:
        print()
        print("mean over repetitions:")
        def mean_of(name, key):
            xs = [x[key] for x in per.get(name, []) if x[key]]
            return statistics.mean(xs) if xs else None

        for name, lst in per.items():
            print(f"  {name:12s} events/s {fmt(mean_of(name, 'eps'), 0):>10s}"
                  f"   stream events/s {fmt(mean_of(name, 'stream'), 0):>10s}"
                  f"   peak RSS {max(x['rss'] for x in lst):7,.0f} MB   (n={len(lst)})")
        if "strata" in per:
            for peer in ("debezium", "recvlogical"):
                if peer in per:
                    ratios = []
                    for key, label in (("eps", "events/s"), ("stream", "stream events/s")):
                        a_, b_ = mean_of("strata", key), mean_of(peer, key)
                        ratios.append(f"{a_ / b_:.2f}x {label}" if a_ and b_ else f"- {label}")
                    print(f"  strata / {peer}: " + ", ".join(ratios))
    return 0


# --------------------------------------------------------------------------------------------------
# small helpers for the bash script
# --------------------------------------------------------------------------------------------------
def cmd_pgparts(a):
    u = urllib.parse.urlsplit(a.url)
    parts = {
        "PGHOST": u.hostname or "127.0.0.1",
        "PGPORT": str(u.port or 5432),
        "PGUSER": urllib.parse.unquote(u.username or ""),
        "PGPASSWORD": urllib.parse.unquote(u.password or ""),
        "PGDATABASE": urllib.parse.unquote(u.path.lstrip("/")),
    }
    for k, v in parts.items():
        print(f"{k}='{v}'")
    return 0


def cmd_pgurl_db(a):
    """The URL with its database replaced."""
    u = urllib.parse.urlsplit(a.url)
    print(urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + urllib.parse.quote(a.db), u.query, u.fragment)))
    return 0


def cmd_freeport(_a):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()
    return 0


def cmd_logdirs(a):
    """Sum of partition sizes (max over replicas) from LogDirsCommand output on stdin."""
    total = 0
    for line in sys.stdin:
        line = line.strip()
        if not line.startswith("{"):
            continue
        d = json.loads(line)
        sizes = {}
        for b in d.get("brokers", []):
            for ld in b.get("logDirs", []):
                for p in ld.get("partitions", []):
                    if p.get("isFuture"):
                        continue
                    k = p["partition"]
                    sizes[k] = max(sizes.get(k, 0), p.get("size", 0))
        total += sum(sizes.values())
    print(total)
    return 0


def cmd_annotate(a):
    with open(a.file) as f:
        r = json.load(f)
    for kv in a.kv:
        k, v = kv.split("=", 1)
        try:
            v = json.loads(v)
        except ValueError:
            pass
        r[k] = v
    with open(a.file, "w") as f:
        json.dump(r, f, indent=1)
    return 0


def main():
    ap = argparse.ArgumentParser()
    sp = ap.add_subparsers(dest="sub", required=True)
    r = sp.add_parser("run")
    r.add_argument("--name", required=True)
    r.add_argument("--kind", choices=["kafka", "recvlogical"], required=True)
    r.add_argument("--cmd", required=True)
    r.add_argument("--pg-url", required=True)
    r.add_argument("--slot", required=True)
    r.add_argument("--start-lsn", required=True)
    r.add_argument("--end-lsn", required=True)
    r.add_argument("--brokers", default="")
    r.add_argument("--topic-prefix", default="")
    r.add_argument("--expected", type=int, required=True)
    r.add_argument("--timeout", type=float, default=900)
    r.add_argument("--poll", type=float, default=0.2)
    r.add_argument("--sample", type=float, default=0.2)
    r.add_argument("--print-every", type=float, default=5.0)
    r.add_argument("--stop-grace", type=float, default=30)
    r.add_argument("--walsender-cpu-base", type=float, default=0.0)
    r.add_argument("--log", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--pidfile")
    rp = sp.add_parser("report")
    rp.add_argument("--dir", required=True)
    rp.add_argument("--runners", default="debezium,recvlogical,strata")
    pp = sp.add_parser("pgparts")
    pp.add_argument("url")
    sp.add_parser("freeport")
    pu = sp.add_parser("pgurl-db")
    pu.add_argument("url")
    pu.add_argument("db")
    sp.add_parser("logdirs")
    an = sp.add_parser("annotate")
    an.add_argument("file")
    an.add_argument("kv", nargs="*")
    a = ap.parse_args()
    return {"run": cmd_run, "report": cmd_report, "pgparts": cmd_pgparts, "freeport": cmd_freeport, "pgurl-db": cmd_pgurl_db,
            "logdirs": cmd_logdirs, "annotate": cmd_annotate}[a.sub](a)


if __name__ == "__main__":
    sys.exit(main())
