#!/usr/bin/env python3
"""The soak's trace (README.md, "Soak"): what the machine and PostgreSQL did, second by second,
to set beside the load generator's slowest request of each second.

    soak_trace.py sample OUT POSTMASTER_PID SERVICE_PID
        every second until killed, one tab-separated line: the time, the kernel's dirty and
        writeback memory (KiB), pages written out since the last line, and the CPU of the
        service, PostgreSQL, the generator and everything else, as shares of one core
    soak_trace.py report TRACE_DIR
        how many seconds had a request slower than STALL_MS from its due moment, and in how
        many of them the service itself took that long; those seconds with what coincides:
        PostgreSQL's log (checkpoints, autovacuum, lock waits, slow statements), the wait
        events of the activity samples, the writeback and the other processes' CPU

It reads only /proc and the files the soak wrote; it never prints a code, key or token
(PostgreSQL's log lines are cut to their first words).
"""
import calendar
import collections
import os
import sys
import time

STALL_MS = 200.0
TICKS = os.sysconf("SC_CLK_TCK")


def read_kv(path, sep=None):
    values = {}
    try:
        for line in open(path):
            parts = line.split(sep) if sep else line.split()
            if len(parts) >= 2:
                values[parts[0].rstrip(":")] = parts[1].strip()
    except OSError:
        pass
    return values


def process_cpu(pid):
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None, None, None
    rest = stat[stat.rindex(")") + 2:].split()
    return int(rest[1]), (int(rest[11]) + int(rest[12])) / TICKS, stat[stat.index("(") + 1:stat.rindex(")")]


def machine_busy():
    fields = open("/proc/stat").readline().split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / TICKS


def cpu_by_role(postmaster, service):
    roles = {"service": 0.0, "database": 0.0, "generator": 0.0}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        ppid, seconds, name = process_cpu(pid)
        if seconds is None:
            continue
        if pid == service:
            roles["service"] += seconds
        elif pid == postmaster or ppid == postmaster:
            roles["database"] += seconds
        elif name == "diagnosis-soak":
            roles["generator"] += seconds
    return roles


def sample(out, postmaster, service):
    before, busy_before, at_before = None, None, None
    pgpgout_before = None
    with open(out, "w", buffering=1) as f:
        f.write("unix_time\tdirty_kib\twriteback_kib\tpgpgout_kib\tservice_cpu\tdatabase_cpu\tgenerator_cpu\tothers_cpu\n")
        while True:
            at = time.time()
            meminfo = read_kv("/proc/meminfo")
            vmstat = read_kv("/proc/vmstat")
            roles, busy = cpu_by_role(postmaster, service), machine_busy()
            pgpgout = int(vmstat.get("pgpgout", 0))
            if before is not None:
                span = max(at - at_before, 1e-6)
                shares = {k: (roles[k] - before[k]) / span for k in roles}
                others = max((busy - busy_before) / span - sum(shares.values()), 0.0)
                f.write(f"{at:.0f}\t{meminfo.get('Dirty', '0')}\t{meminfo.get('Writeback', '0')}\t"
                        f"{pgpgout - pgpgout_before}\t{shares['service']:.2f}\t{shares['database']:.2f}\t"
                        f"{shares['generator']:.2f}\t{others:.2f}\n")
            before, busy_before, at_before, pgpgout_before = roles, busy, at, pgpgout
            time.sleep(max(0.0, 1.0 - (time.time() - at)))


def tsv(path):
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return []
    header = lines[0].split("\t") if lines else []
    return [dict(zip(header, line.split("\t"))) for line in lines[1:] if line]


def postgres_events(path):
    """(unix second, short text) of each line worth setting beside a stall."""
    events = []
    keep = ("checkpoint", "automatic vacuum", "automatic analyze", "still waiting", "duration:",
            "deadlock", "terminating")
    try:
        lines = open(path, errors="replace").read().splitlines()
    except OSError:
        return events
    for line in lines:
        if not any(k in line for k in keep):
            continue
        try:
            stamp = calendar.timegm(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
        except ValueError:
            continue
        text = line[line.find("]") + 1:].strip()
        if "duration:" in text:
            text = " ".join(text.split()[:6])
        events.append((int(stamp), text[:160]))
    return events


def report(trace):
    seconds = tsv(os.path.join(trace, "per_second.tsv"))
    machine = {int(r["unix_time"]): r for r in tsv(os.path.join(trace, "machine.tsv"))}
    activity = collections.defaultdict(collections.Counter)
    try:
        for line in open(os.path.join(trace, "activity.tsv"), errors="replace"):
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 5 and parts[0].replace(".", "").isdigit():
                waits = f"{parts[1]}:{parts[2]}/{parts[3]}"
                activity[int(float(parts[0]))][waits] += 1
    except OSError:
        pass
    events = postgres_events(os.path.join(trace, "postgres.log"))
    out = []
    def slowest(r):
        return max(float(r[k]) for k in ("issue_max_ms", "claim_max_ms", "upload_max_ms"))
    def slowest_in_service(r):
        return max(float(r[k]) for k in ("issue_service_max_ms", "claim_service_max_ms", "upload_service_max_ms"))
    stalls = [r for r in seconds if slowest(r) >= STALL_MS]
    in_service = [r for r in seconds if slowest_in_service(r) >= STALL_MS]
    out.append(f"{len(stalls)} of {len(seconds)} seconds had a request slower than {STALL_MS:.0f} ms from its due "
               f"moment; in {len(in_service)} of them the service itself took that long for a request "
               f"(the rest waited in the generator behind its connection's earlier requests)")
    for r in in_service:
        t = int(r["unix_time"])
        out.append(f"\n{time.strftime('%H:%M:%S', time.gmtime(t))} (second {t}): slowest issue/claim/upload "
                   f"{r['issue_max_ms']}/{r['claim_max_ms']}/{r['upload_max_ms']} ms, of which in the service "
                   f"{r['issue_service_max_ms']}/{r['claim_service_max_ms']}/{r['upload_service_max_ms']} ms; "
                   f"send delay {r['send_delay_max_ms']} ms, {r['requests']} requests")
        for s in range(t - 2, t + 3):
            m = machine.get(s)
            if m:
                out.append(f"  {s - t:+d}s machine: dirty {m['dirty_kib']} KiB, writeback {m['writeback_kib']} KiB, "
                           f"out {m['pgpgout_kib']} KiB; CPU service {m['service_cpu']}, database {m['database_cpu']}, "
                           f"generator {m['generator_cpu']}, others {m['others_cpu']}")
            waits = activity.get(s)
            if waits:
                common = ", ".join(f"{k} x{n}" for k, n in waits.most_common(6))
                out.append(f"  {s - t:+d}s waits (samples): {common}")
        for stamp, text in events:
            if t - 60 <= stamp <= t + 2:
                out.append(f"  log {stamp - t:+d}s: {text}")
    print("\n".join(out))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "sample":
        sample(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif len(sys.argv) == 3 and sys.argv[1] == "report":
        report(sys.argv[2])
    else:
        sys.exit(__doc__)
