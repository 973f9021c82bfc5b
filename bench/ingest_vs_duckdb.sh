#!/usr/bin/env bash
# Benchmark CSV-to-Parquet ingestion of the nycflights13 flights table: Ghaf's ingest
# (schema checks, quarantine, profile, zstd Parquet, blob store and version row) against
# DuckDB's `COPY (SELECT * FROM read_csv(...)) TO ... (FORMAT parquet)`, in one run.
#
# Fairness:
# - Both sides read the same plain (decompressed) CSV file, written once to a temporary
#   directory and read once before the runs so that it is in the page cache. Neither side
#   decompresses gzip in the timed runs.
# - DuckDB writes zstd Parquet, as Ghaf does (DuckDB's default is Snappy). Set
#   DUCKDB_COMPRESSION=snappy to time DuckDB's default instead.
# - DuckDB runs with DUCKDB_THREADS threads (default 2). Ghaf's pass is a pipeline of three
#   threads (parse, check, write Parquet) plus the Tokio runtime.
# - Each side runs as its own process under GNU time, so wall time, CPU time and peak RSS
#   include process start: Python start and `import duckdb` for DuckDB, opening the SQLite
#   store for Ghaf. The in-process time of the ingest call or of the COPY is reported too.
# - The runs alternate (Ghaf, DuckDB, Ghaf, ...) so that load changes hit both sides.
#
# Not a test: it needs network access for pip once and takes minutes, so keep it out of CI.
#
# Usage: bench/ingest_vs_duckdb.sh [RUNS]   (default 5)
# Environment: DUCKDB_THREADS (2), DUCKDB_COMPRESSION (zstd), KEEP_WORK=1 keeps the
# temporary directory.
set -euo pipefail

runs="${1:-5}"
duckdb_threads="${DUCKDB_THREADS:-2}"
duckdb_compression="${DUCKDB_COMPRESSION:-zstd}"
duckdb_version="2.0.0"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="$repo/data/nycflights13"
venv="$HOME/.cache/ghaf-venv-duckdb"
target_dir="$HOME/.cache/ghaf-target-bench"
binary="$target_dir/release/examples/ingest_bench"

# GNU time: `-f` with %M (peak RSS in KiB) is GNU-only; Debian ships it as package `time`.
if ! /usr/bin/time --version 2>&1 | grep -q GNU; then
    echo "GNU time is missing; installing the Debian package 'time'" >&2
    apt-get install -y time >/dev/null
fi

if ! "$venv/bin/python" -c "import duckdb, sys; sys.exit(duckdb.__version__ != '$duckdb_version')" 2>/dev/null; then
    echo "creating $venv with duckdb==$duckdb_version" >&2
    python3 -m venv "$venv"
    PIP_CACHE_DIR="$HOME/.cache/ghaf-pip" "$venv/bin/pip" install -q "duckdb==$duckdb_version"
fi

echo "building the ingest_bench example (release, CARGO_TARGET_DIR=$target_dir)" >&2
(cd "$repo" && CARGO_TARGET_DIR="$target_dir" cargo build --release -q -p ghaf-ingest --example ingest_bench)

work="$(mktemp -d "${TMPDIR:-/tmp}/ingest-bench.XXXXXX")"
if [[ "${KEEP_WORK:-0}" != 1 ]]; then
    trap 'rm -rf "$work"' EXIT
fi
csv="$work/flights.csv"
gzip -dc "$data/flights.csv.gz" >"$csv"
cat "$csv" >/dev/null

cat >"$work/duckdb_copy.py" <<'EOF'
import sys, time
import duckdb

csv, out, threads, compression = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
started = time.perf_counter()
rows = con.execute(
    "COPY (SELECT * FROM read_csv(?, nullstr = ['NA', ''])) "
    f"TO '{out}' (FORMAT parquet, COMPRESSION {compression})",
    [csv],
).fetchone()[0]
seconds = time.perf_counter() - started
print(f"rows={rows} seconds={seconds:.3f}")
EOF

results="$work/results.tsv"
printf 'side\trun\twall_s\tcpu_s\tpeak_rss_kib\tinner_s\trows\tparquet_bytes\n' >"$results"

# Prints the value of KEY from a line of key=value pairs.
field() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p"; }

time_format='%e %U %S %M'
for run in $(seq 1 "$runs"); do
    TMPDIR="$work" /usr/bin/time -f "$time_format" -o "$work/time" \
        "$binary" "$csv" "$data/flights.schema.yaml" --null NA --null "" >"$work/out"
    read -r wall user sys rss <"$work/time"
    line="$(cat "$work/out")"
    accepted="$(field rows_accepted "$line")"
    quarantined="$(field rows_quarantined "$line")"
    ghaf_rows=$((accepted + quarantined))
    printf 'ghaf\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$wall" "$(awk -v u="$user" -v s="$sys" 'BEGIN {print u + s}')" "$rss" \
        "$(field seconds "$line")" "$ghaf_rows" "$(field parquet_bytes "$line")" >>"$results"

    rm -f "$work/duckdb.parquet"
    /usr/bin/time -f "$time_format" -o "$work/time" \
        "$venv/bin/python" "$work/duckdb_copy.py" "$csv" "$work/duckdb.parquet" \
        "$duckdb_threads" "$duckdb_compression" >"$work/out"
    read -r wall user sys rss <"$work/time"
    line="$(cat "$work/out")"
    printf 'duckdb\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$wall" "$(awk -v u="$user" -v s="$sys" 'BEGIN {print u + s}')" "$rss" \
        "$(field seconds "$line")" "$(field rows "$line")" "$(stat -c %s "$work/duckdb.parquet")" >>"$results"
    echo "run $run of $runs done" >&2
done

# The row count of DuckDB's file, read back outside the timed runs.
duckdb_file_rows="$("$venv/bin/python" -c \
    "import duckdb, sys; print(duckdb.connect().execute('SELECT count(*) FROM read_parquet(?)', [sys.argv[1]]).fetchone()[0])" \
    "$work/duckdb.parquet")"

echo
echo "input: $csv (plain CSV, $(stat -c %s "$csv") bytes, decompressed from flights.csv.gz; both sides read it)"
echo "machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "versions: duckdb $duckdb_version, $(rustc --version)"
echo "duckdb: threads=$duckdb_threads, compression=$duckdb_compression; ghaf: zstd level 3"
echo "runs: $runs per side, alternating"
echo
"$venv/bin/python" - "$results" "$duckdb_file_rows" <<'EOF'
import csv, statistics, sys

path, duckdb_file_rows = sys.argv[1], int(sys.argv[2])
rows = list(csv.DictReader(open(path), delimiter="\t"))
print("| side | wall median (s) | wall min (s) | CPU median (s) | peak RSS median (MiB) "
      "| in-process median (s) | rows/s (in-process median) | Parquet bytes | rows |")
print("|---|---|---|---|---|---|---|---|---|")
counts = {}
for side in ("ghaf", "duckdb"):
    runs = [row for row in rows if row["side"] == side]
    wall = [float(row["wall_s"]) for row in runs]
    cpu = [float(row["cpu_s"]) for row in runs]
    rss = [int(row["peak_rss_kib"]) / 1024 for row in runs]
    inner = [float(row["inner_s"]) for row in runs]
    counts[side] = {int(row["rows"]) for row in runs}
    sizes = sorted({int(row["parquet_bytes"]) for row in runs})
    row_count = max(counts[side])
    print(f"| {side} | {statistics.median(wall):.2f} | {min(wall):.2f} | "
          f"{statistics.median(cpu):.2f} | {statistics.median(rss):.0f} | "
          f"{statistics.median(inner):.3f} | {row_count / statistics.median(inner):,.0f} | "
          f"{', '.join(f'{size:,}' for size in sizes)} | {row_count:,} |")
print()
ghaf_rows, duckdb_rows = counts["ghaf"], counts["duckdb"]
if len(ghaf_rows) == 1 and ghaf_rows == duckdb_rows == {duckdb_file_rows}:
    print(f"row check: passed, DuckDB's Parquet file has {duckdb_file_rows:,} rows, "
          "equal to Ghaf's accepted + quarantined rows")
else:
    print(f"row check: FAILED, Ghaf accepted + quarantined {sorted(ghaf_rows)}, DuckDB COPY "
          f"{sorted(duckdb_rows)}, DuckDB file {duckdb_file_rows}")
    sys.exit(1)
EOF
