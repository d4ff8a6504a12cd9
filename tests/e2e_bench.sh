#!/usr/bin/env bash
# e2e_bench.sh - q3bench (and q3batch, the batched decode step) as a user runs it, on the demo model with tiny -p/-n/-r: the report and
# its token checksum, the JSON, lists of prompt lengths and depths, refusal of a damaged file
# before anything is timed, and CPU and OpenCL (PoCL in CI) generating the same tokens. No timing is asserted: speed is measured by
# benchmarks, never by tests.
set -u
BUILD=${BUILD:-build}
MODEL=$BUILD/demo-tiny.q3
T=$(mktemp -d /tmp/q3_e2e_bench_XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
pass() { echo "ok   $1"; }
fail() { echo "FAIL $1"; fails=$((fails + 1)); }
check() { if eval "$2"; then pass "$1"; else fail "$1"; echo "  stdout:"; sed 's/^/    /' "$T/out"; echo "  stderr:"; sed 's/^/    /' "$T/err"; fi; }
for tool in q3bench q3batch q3info; do
    [ -x "$BUILD/$tool" ] || { echo "FAIL $BUILD/$tool is not built"; exit 1; }
done
[ -f "$MODEL" ] || { echo "FAIL $MODEL is missing (make model)"; exit 1; }
B="$BUILD/q3bench"
SMALL=(-p 8 -n 4 -r 2)
# json FILE EXPR: evaluate a Python expression over the parsed report d; exit 0 when true.
json() { python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); sys.exit(0 if eval("(" + sys.argv[2] + ")") else 1)' "$1" "$2"; }
# hash_of FILE BACKEND [TEST]: the tokens_xxh64 of one test (default the first) of one backend.
hash_of() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]["tests"][int(sys.argv[3])]["tokens_xxh64"])' "$1" "$2" "${3:-0}"; }

# ---- usage ----
: >"$T/out"
"$B" >/dev/null 2>"$T/err"; rc=$?
check "no arguments: exit 2 with usage" '[ $rc -eq 2 ] && grep -q "usage: q3bench" "$T/err"'
"$B" "$MODEL" --bogus >/dev/null 2>"$T/err"; rc=$?
check "unknown option: exit 2, names it" '[ $rc -eq 2 ] && grep -q "unknown argument .--bogus." "$T/err"'
"$B" "$MODEL" -p 0 >/dev/null 2>"$T/err"; rc=$?
check "-p 0: exit 2, gives the range" '[ $rc -eq 2 ] && grep -q "^q3bench: -p needs an integer from 1 to" "$T/err"'
"$B" "$MODEL" --backend gpu >/dev/null 2>"$T/err"; rc=$?
check "--backend gpu: exit 2" '[ $rc -eq 2 ] && grep -q "cpu, opencl or both" "$T/err"'
"$B" "$MODEL" -p 4000 -n 1000 >/dev/null 2>"$T/err"; rc=$?
check "more positions than max_position_embeddings: exit 2" '[ $rc -eq 2 ] && grep -q "max_position_embeddings" "$T/err"'
"$B" "$MODEL" -p 8 --depth 4000 -n 1000 >/dev/null 2>"$T/err"; rc=$?
check "a depth beyond max_position_embeddings: exit 2" '[ $rc -eq 2 ] && grep -q "needs 5000 positions" "$T/err"'
for bad in "-p 8,,16" "-p 8," "-p 8,8" "--depth x" "--depth 4,-1" "--depth"; do
    "$B" "$MODEL" $bad >/dev/null 2>"$T/err"; rc=$?
    check "bad list '$bad': exit 2, says what a list is" '[ $rc -eq 2 ] && grep -q "needs a comma-separated list" "$T/err"'
done

# ---- CPU, readable report ----
"$B" "$MODEL" "${SMALL[@]}" -t 2 >"$T/out" 2>"$T/err"; rc=$?
check "cpu table: exit 0, verified every checksum, pp and tg rows" \
    '[ $rc -eq 0 ] && grep -q "^verified: 53 checksums (header, 5 sections, 46 tensors, whole file)" "$T/out" &&
     grep -q "^| backend " "$T/out" && grep -q "^| cpu .* | pp8 " "$T/out" && grep -q "^| cpu .* | tg4 @ d8 " "$T/out"'
rows=$(grep -c "^| cpu" "$T/out")
hashes=$(grep "^| cpu" "$T/out" | grep -oE "\| [0-9a-f]{16} \|$" | sort -u | wc -l)
check "every row carries the same 16-hex token checksum" '[ "$rows" -eq 2 ] && [ "$hashes" -eq 1 ]'
table_hash=$(grep "^| cpu" "$T/out" | head -1 | grep -oE "[0-9a-f]{16} \|$" | cut -c1-16)

# ---- --no-mmap: the weights read into memory, the same tokens ----
"$B" "$MODEL" "${SMALL[@]}" -t 2 --no-mmap >"$T/out" 2>"$T/err"; rc=$?
check "--no-mmap: exit 0, verified, the same token checksum" \
    '[ $rc -eq 0 ] && grep -q "^verified: 53 checksums" "$T/out" && grep -q "| $table_hash |$" "$T/out"'

# ---- CPU, JSON ----
"$B" "$MODEL" "${SMALL[@]}" -t 2 --json >"$T/cpu.json" 2>"$T/err"; rc=$?; cp "$T/cpu.json" "$T/out"
check "cpu --json: exit 0 and the JSON parses with every field" \
    '[ $rc -eq 0 ] && json "$T/cpu.json" "d[\"verify\"][\"checksums\"] == 53 and d[\"prompt\"][\"tokens\"] == 8 and
     d[\"prompt_lengths\"] == [8] and d[\"depths\"] is None and d[\"n_ctx\"] == 12 and
     d[\"decode_tokens\"] == 4 and d[\"repetitions\"] == 2 and len(d[\"results\"]) == 1 and
     d[\"results\"][0][\"backend\"] == \"cpu\" and d[\"results\"][0][\"threads\"] == 2 and
     d[\"results\"][0][\"load_ms\"] >= 0 and
     [(t[\"kind\"], t[\"name\"], t.get(\"p\"), t.get(\"depth\"), t.get(\"n\"), t[\"generated_ids\"]) for t in d[\"results\"][0][\"tests\"]] ==
       [(\"pp\", \"pp8\", 8, None, None, 5), (\"tg\", \"tg4 @ d8\", None, 8, 4, 5)] and
     all(t[k][m] > 0 for t, k in ((d[\"results\"][0][\"tests\"][0], \"tok_s\"), (d[\"results\"][0][\"tests\"][0], \"ms_per_prompt_token\"),
         (d[\"results\"][0][\"tests\"][1], \"tok_s\"), (d[\"results\"][0][\"tests\"][1], \"ms_per_token\")) for m in (\"min\", \"median\", \"max\")) and
     d[\"results\"][0][\"peak_rss_kib\"] > 0 and d[\"floor\"][\"bytes_per_token\"] > 0 and d[\"floor\"][\"bandwidth_gbps\"] is None"'
cpu_hash=$(hash_of "$T/cpu.json" 0)
check "the JSON checksum equals the table's (same ids in another process)" '[ -n "$cpu_hash" ] && [ "$cpu_hash" = "$table_hash" ]'

# The generated ids do not depend on the thread count or the number of repetitions.
"$B" "$MODEL" -p 8 -n 4 -r 1 -t 1 --json >"$T/t1.json" 2>"$T/err"; rc=$?
check "-t 1 -r 1 generates the same ids as -t 2 -r 2" '[ $rc -eq 0 ] && [ "$(hash_of "$T/t1.json" 0)" = "$cpu_hash" ]'

# ---- the bandwidth floor ----
"$B" "$MODEL" "${SMALL[@]}" --bandwidth 10 --json >"$T/bw.json" 2>"$T/err"; rc=$?; cp "$T/bw.json" "$T/out"
check "--bandwidth 10: floor = 10e9 / bytes_per_token, % of floor reported" \
    '[ $rc -eq 0 ] && json "$T/bw.json" "abs(d[\"floor\"][\"max_tok_s\"] - 10e9 / d[\"floor\"][\"bytes_per_token\"]) < 1e-6 * d[\"floor\"][\"max_tok_s\"] and
     abs(d[\"results\"][0][\"tests\"][1][\"pct_of_floor\"] - 100 * d[\"results\"][0][\"tests\"][1][\"tok_s\"][\"median\"] / d[\"floor\"][\"max_tok_s\"]) < 1e-6 and
     \"pct_of_floor\" not in d[\"results\"][0][\"tests\"][0]"'
"$B" "$MODEL" "${SMALL[@]}" --bandwidth 10 >"$T/out" 2>"$T/err"; rc=$?
check "--bandwidth 10: the table shows the floor and a % for the tg row" \
    '[ $rc -eq 0 ] && grep -q "^floor: .* / 10.00 GB/s (--bandwidth)" "$T/out" && grep "| tg4 " "$T/out" | grep -qE "\| +[0-9.]+ \| +[0-9.]+ \| [0-9a-f]{16} \|$"'

# ---- prefill only ----
"$B" "$MODEL" -p 8 -n 0 -r 1 --json >"$T/n0.json" 2>"$T/err"; rc=$?; cp "$T/n0.json" "$T/out"
check "-n 0: prefill only, one generated id" '[ $rc -eq 0 ] && json "$T/n0.json" "[t[\"kind\"] for t in d[\"results\"][0][\"tests\"]] == [\"pp\"] and d[\"results\"][0][\"tests\"][0][\"generated_ids\"] == 1"'

# ---- a damaged file is refused before anything is loaded or timed ----
"$BUILD/q3info" "$MODEL" >"$T/info"
up=model.layers.1.mlp.up_proj.weight
off=$(awk -v k="$up" '$1 == k { print $(NF - 2) }' "$T/info")
cp "$MODEL" "$T/bad.q3"
b=$(od -An -tu1 -j $((off + 100)) -N1 "$T/bad.q3" | tr -d ' ')
printf "$(printf '\\%03o' $((b ^ 1)))" | dd of="$T/bad.q3" bs=1 seek=$((off + 100)) conv=notrunc status=none
"$B" "$T/bad.q3" "${SMALL[@]}" -v --json >"$T/out" 2>"$T/err"; rc=$?
check "one flipped bit in a tensor: exit 1, names the tensor, nothing loaded or timed, no report" \
    '[ -n "$off" ] && [ $rc -eq 1 ] && [ ! -s "$T/out" ] && grep -q "tensor .$up. (offset $off" "$T/err" &&
     grep -q "FAILED (3 of 53 checksums do not match; nothing was timed)" "$T/err" && ! grep -q "^q3bench: cpu" "$T/err"'
head -c 100000 "$MODEL" >"$T/trunc.q3"
"$B" "$T/trunc.q3" "${SMALL[@]}" >"$T/out" 2>"$T/err"; rc=$?
check "a truncated file: exit 1 with one reason, no report" '[ $rc -eq 1 ] && [ ! -s "$T/out" ] && grep -q "truncated" "$T/err"'

# ---- CPU and OpenCL (PoCL in CI) generate the same ids ----
"$B" "$MODEL" "${SMALL[@]}" --backend both --json >"$T/both.json" 2>"$T/err"; rc=$?; cp "$T/both.json" "$T/out"
check "--backend both: exit 0, both backends, same checksum as the cpu run" \
    '[ $rc -eq 0 ] && json "$T/both.json" "[r[\"backend\"] for r in d[\"results\"]] == [\"cpu\", \"opencl\"] and d[\"backends_agree\"] is True and
     [t[\"tokens_xxh64\"] for r in d[\"results\"] for t in r[\"tests\"]] == [\"$cpu_hash\"] * 4"'
"$B" "$MODEL" "${SMALL[@]}" --backend both >"$T/out" 2>"$T/err"; rc=$?
check "--backend both table: four rows, one checksum, agreement line" \
    '[ $rc -eq 0 ] && [ "$(grep -cE "^\| (cpu|opencl)" "$T/out")" -eq 4 ] &&
     [ "$(grep -E "^\| (cpu|opencl)" "$T/out" | grep -oE "[0-9a-f]{16} \|$" | sort -u | wc -l)" -eq 1 ] &&
     grep -q "^tokens: cpu and opencl generated identical ids (5 ids, xxh64 $cpu_hash)" "$T/out"'

# ---- lists of prompt lengths and depths (llama-bench's -p 512,4096 -d 512,4096) ----
LISTS=(-p 8,16 --depth 4,12 -n 4 -r 2)
"$B" "$MODEL" "${LISTS[@]}" >"$T/out" 2>"$T/err"; rc=$?
check "-p 8,16 --depth 4,12: exit 0, one row per test, in order" \
    '[ $rc -eq 0 ] && [ "$(grep "^| cpu" "$T/out" | cut -d"|" -f5 | tr -s " " | tr "\n" ,)" = " pp8 , pp16 , tg4 @ d4 , tg4 @ d12 ," ]'
"$B" "$MODEL" "${LISTS[@]}" --json >"$T/l1.json" 2>"$T/err"; rc=$?; cp "$T/l1.json" "$T/out"
check "lists --json: one test object per row, n_ctx the largest need, tg ids n + 1, pp ids 1" \
    '[ $rc -eq 0 ] && json "$T/l1.json" "d[\"prompt_lengths\"] == [8, 16] and d[\"depths\"] == [4, 12] and d[\"n_ctx\"] == 16 and
     d[\"prompt\"][\"tokens\"] == 16 and
     [(t[\"kind\"], t.get(\"p\", t.get(\"depth\")), t[\"generated_ids\"]) for t in d[\"results\"][0][\"tests\"]] ==
       [(\"pp\", 8, 1), (\"pp\", 16, 1), (\"tg\", 4, 5), (\"tg\", 12, 5)] and
     all(t[\"tok_s\"][\"median\"] > 0 for t in d[\"results\"][0][\"tests\"])"'
"$B" "$MODEL" -p 16,8 --depth 12,4 -n 4 -r 1 -t 1 --json >"$T/l2.json" 2>"$T/err"; rc=$?; cp "$T/l2.json" "$T/out"
check "the same tests run again (other order, -r 1 -t 1) give the same checksums" \
    '[ $rc -eq 0 ] && same=1 && for i in 0 1 2 3; do [ "$(hash_of "$T/l1.json" 0 $i)" = "$(hash_of "$T/l2.json" 0 $((i ^ 1)))" ] || same=0; done && [ $same -eq 1 ]'
check "pp8's checksum (one id) differs from the default run's (5 ids), tg4 @ d8 of a depth list equals it" \
    '[ "$(hash_of "$T/l1.json" 0 0)" != "$cpu_hash" ] &&
     "$B" "$MODEL" -p 8 --depth 8 -n 4 -r 1 --json >"$T/l3.json" 2>"$T/err" && [ "$(hash_of "$T/l3.json" 0 1)" = "$cpu_hash" ]'
"$B" "$MODEL" -p 8 --depth 0,8 -n 4 -r 1 >"$T/out" 2>"$T/err"; rc=$?
check "--depth 0: a tg4 row from an empty context; depth 8 shares the pp8 run (same checksum)" \
    '[ $rc -eq 0 ] && grep -q "^| cpu .* | tg4  " "$T/out" &&
     [ "$(grep -E "\| (pp8|tg4 @ d8) " "$T/out" | grep -oE "[0-9a-f]{16} \|$" | sort -u | wc -l)" -eq 1 ]'
"$B" "$MODEL" "${LISTS[@]}" --backend both >"$T/out" 2>"$T/err"; rc=$?
check "lists with --backend both: eight rows, each test's checksum equal on cpu and opencl" \
    '[ $rc -eq 0 ] && [ "$(grep -cE "^\| (cpu|opencl)" "$T/out")" -eq 8 ] &&
     [ "$(grep -E "^\| (cpu|opencl)" "$T/out" | awk -F"|" "{print \$5 \$10}" | sort -u | wc -l)" -eq 4 ] &&
     grep -q "^tokens: cpu and opencl generated identical ids in all 4 runs" "$T/out"'

# ---- q3batch: the batched decode step alone ----
Q="$BUILD/q3batch"
"$Q" >/dev/null 2>"$T/err"; rc=$?
check "q3batch without a model: exit 2" '[ $rc -eq 2 ] && grep -q "no model given" "$T/err"'
"$Q" "$MODEL" -b 0 >/dev/null 2>"$T/err"; rc=$?
check "q3batch -b 0: exit 2, names it" '[ $rc -eq 2 ] && grep -q "bad option or value: -b 0" "$T/err"'
for be in cpu opencl; do
    [ $be = opencl ] && ! "$BUILD/q3run" --list-devices >/dev/null 2>&1 && { echo "skip q3batch on opencl: no device"; continue; }
    "$Q" "$MODEL" --backend $be -b 1,3,17 --depth 8 -n 4 -r 1 >"$T/out" 2>"$T/err"; rc=$?
    check "q3batch on $be: a row per batch size (17: two steps on OpenCL), ids the same in each, exit 0" \
        '[ $rc -eq 0 ] && [ "$(grep -cE "^(1|3|17) +[0-9.]+ / " "$T/out")" -eq 3 ] && [ ! -s "$T/err" ]'
    # --greedy: the ids taken by the backend (OpenCL: on the device) are checked against a batch of 1
    "$Q" "$MODEL" --backend $be -b 1,3,17 --depth 8 -n 4 -r 1 --greedy >"$T/out" 2>"$T/err"; rc=$?
    check "q3batch --greedy on $be: a row per batch size, ids the same in each, exit 0" \
        '[ $rc -eq 0 ] && grep -q "greedy on the backend" "$T/out" && [ "$(grep -cE "^(1|3|17) +[0-9.]+ / " "$T/out")" -eq 3 ] && [ ! -s "$T/err" ]'
done

echo "e2e_bench: $fails failed"
[ $fails -eq 0 ]
