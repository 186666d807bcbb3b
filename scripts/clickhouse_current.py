"""The writer's SQL on a current ClickHouse engine (chDB, in process).

Reads what `trident-writer sql --json` prints, runs the schema twice (it
must be idempotent), fills every raw table with generated requests of a
known, heavy-tailed latency distribution in several inserts (so the
materialized views hold several partial states per bucket), then checks
every query the writer asks:

- count and success rate per bucket and dimension: exactly what the
  generated rows say;
- P50/P90/P95/P99: within 1 % of quantileExact over the raw rows (the
  states are exact, so equal in practice);

and the stored-positions query. Exits non-zero with the reason on the
first difference. Called by scripts/clickhouse-current.
"""

import json
import math
import random
import sys
import tempfile
import time

from chdb import session

LEVELS = [0.5, 0.9, 0.95, 0.99]
ROWS = 24_000
INSERTS = 4
# The two whole hours before this one: the raw table's TTL (30 days) drops
# older rows.
START = int(time.time()) // 3600 * 3600 - 7200


def seconds(label):
    unit = {"s": 1, "m": 60, "h": 3600}[label[-1]]
    return int(label[:-1]) * unit


def sql_string(s):
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fail(why):
    print(f"clickhouse-current: {why}", file=sys.stderr)
    sys.exit(1)


def main():
    spec = json.load(open(sys.argv[1]))
    s = session.Session(tempfile.mkdtemp(prefix="chdb-"))
    version = s.query("SELECT version()", "CSV").bytes().decode().strip().strip('"')

    for round_ in (1, 2):
        for sql in spec["schema"]:
            try:
                s.query(sql)
            except Exception as e:  # chDB raises its own error type
                fail(f"schema statement failed (run {round_}): {sql}\n{e}")

    # Generated requests per mapped table: dimensions from small sets,
    # values log-normal (heavy tail), some missing (NaN), success ~93 %.
    rng = random.Random(42)
    tables = {}
    for q in spec["queries"]:
        t = tables.setdefault(q["table"], {"dims": q["dimensions"], "values": []})
        if q["value"] not in t["values"]:
            t["values"].append(q["value"])
    db = spec["schema"][0].split()[-1]
    generated = {}
    for table, t in tables.items():
        # Values in the order of the mapping (the order queries listed them).
        rows = []
        for i in range(ROWS):
            ts = START + (i * 7919) % 7200  # two hours, shuffled
            dims = [f"{d}{rng.randrange(3)}" for d in t["dims"]]
            vals = [
                float("nan") if rng.random() < 0.05 else round(math.exp(rng.gauss(3, 1.2)), 3)
                for _ in t["values"]
            ]
            rows.append((ts, dims, vals, 1 if rng.random() < 0.93 else 0))
        generated[table] = rows
        chunk = ROWS // INSERTS
        for k in range(INSERTS):
            values = ",".join(
                "({ts},{ns},[{dims}],[{vals}],{ok})".format(
                    ts=ts,
                    ns=ts * 1_000_000_000,
                    dims=",".join(sql_string(d) for d in dims),
                    vals=",".join("nan" if math.isnan(v) else repr(v) for v in vals),
                    ok=ok,
                )
                for ts, dims, vals, ok in rows[k * chunk : (k + 1) * chunk]
            )
            s.query(
                f"INSERT INTO {db}.{table}_raw (ts, ts_ns, dims, vals, success) VALUES {values}"
            )

    checked = 0
    worst = 0.0
    for q in spec["queries"]:
        table, dims, value = q["table"], q["dimensions"], q["value"]
        n = seconds(q["interval"])
        vi = tables[table]["values"].index(value)
        try:
            answer = json.loads(s.query(q["sql"] + " FORMAT JSONCompact").bytes())["data"]
        except Exception as e:
            fail(f"query failed: {q['sql']}\n{e}")
        # Exact counts and success rates from the generated rows.
        expected = {}
        for ts, d, vals, ok in generated[table]:
            key = (ts // n * n, *d)
            c = expected.setdefault(key, [0, 0])
            c[0] += 1
            c[1] += ok
        if len(answer) != len(expected):
            fail(f"{table}_{q['interval']}: {len(answer)} groups, expected {len(expected)}")
        # quantileExact over the raw rows, per group.
        dim_cols = "".join(f", dims[{i + 1}]" for i in range(len(dims)))
        levels = ", ".join(str(level) for level in LEVELS)
        raw = json.loads(
            s.query(
                f"SELECT toUInt32(intDiv(toUInt32(ts), {n}) * {n}){dim_cols}, "
                f"[{', '.join(f'quantileExactIf({level})(vals[{vi + 1}], NOT isNaN(vals[{vi + 1}]))' for level in LEVELS)}] "
                f"FROM {db}.{table}_raw GROUP BY 1{''.join(f', {i + 2}' for i in range(len(dims)))} "
                "FORMAT JSONCompact"
            ).bytes()
        )["data"]
        exact = {tuple([int(r[0]), *r[1:-1]]): r[-1] for r in raw}
        for row in answer:
            key = tuple([int(row[0]), *row[1 : 1 + len(dims)]])
            count, rate, quantiles = row[1 + len(dims)], row[2 + len(dims)], row[3 + len(dims)]
            want = expected.get(key)
            if want is None:
                fail(f"{table}_{q['interval']}: unexpected group {key}")
            if int(count) != want[0] or abs(float(rate) - want[1] / want[0]) > 1e-12:
                fail(f"{table}_{q['interval']} {key}: count {count} rate {rate}, expected {want[0]} {want[1] / want[0]}")
            if key not in exact:
                fail(f"{table}_{q['interval']}: no raw group {key}; raw has e.g. {list(exact)[:3]}")
            for level, got, ref in zip(LEVELS, quantiles, exact[key]):
                err = abs(float(got) - float(ref)) / max(abs(float(ref)), 1e-12)
                worst = max(worst, err)
                if err > 0.01:
                    fail(f"{table}_{q['interval']} {key} P{level * 100:g} of {value}: {got}, quantileExact {ref}")
            checked += 1

    # The positions query: the newest stored offset per partition.
    s.query(
        f"INSERT INTO {db}.trident_writer_offsets VALUES "
        "('g', 'raw', 0, 10, 1), ('g', 'raw', 0, 25, 2), ('g', 'raw', 1, 7, 1), ('h', 'raw', 0, 99, 1)"
    )
    positions = spec["positions"].replace("?", "'g'", 1).replace("?", "'raw'", 1)
    got = sorted(tuple(r) for r in json.loads(s.query(positions + " FORMAT JSONCompact").bytes())["data"])
    if [(int(p), int(o)) for p, o in got] != [(0, 25), (1, 7)]:
        fail(f"positions query answered {got}")

    print(
        f"ClickHouse {version} (chDB): {len(spec['schema'])} schema statements ran twice; "
        f"{len(spec['queries'])} queries, {checked} groups: counts and success rates exact, "
        f"P50/P90/P95/P99 at most {worst * 100:.4f} % from quantileExact; positions query right"
    )


if __name__ == "__main__":
    main()
