#!/usr/bin/env bash
# How the demo table's seven zoo rows were made (configs/demo/SWEEPS.md), in one command:
#   bash configs/demo/run_zoo.sh [RESULTS]          (RESULTS defaults to results)
# 1. Sweeps: for each zoo method, its one main setting over a fixed 5-point grid on data/demo_val
#    (never the test crops), every task; the seven methods run as seven processes at once.
#    Tables: RESULTS/sweeps/<task>_<method>.md.
# 2. Picks: the best mean PSNR of each sweep is written into configs/demo/<task>/<method>.yaml
#    (the swept key's value and the header's "Picked on data/demo_val" line).
# 3. The table: `scripts/reproduce.py --table demo`, one process per task, then one call that
#    resumes every run and reports the whole table.
# Extra arguments after RESULTS are passed to every sweep and table run as --set overrides (a quick
# check: `bash configs/demo/run_zoo.sh /tmp/check data.limit=1 sampler.steps=2`).
set -euo pipefail
cd "$(dirname "$0")/../.."
results=${1:-results}
shift || true
sets=()
for s in "$@"; do sets+=(--set "$s"); done
tasks="sr2 sr4 inpaint_random inpaint_box gaussian_deblur"
declare -A grid=(
  [ddrm]="sampler.eta=0.0,0.3,0.6,0.85,1.0"
  [ddnm]="sampler.eta=0.0,0.3,0.6,0.85,1.0"
  [pgdm]="sampler.scale=0.1,0.3,1,3,10"
  [reddiff]="sampler.lambda_=0.01,0.05,0.25,1,4"
  [daps]="sampler.lr=1.0e-6,1.0e-5,1.0e-4,1.0e-3,1.0e-2"
  [mcg]="sampler.scale=0.3,1,3,10,30"
  [dpir]="sampler.lambda_=0.02,0.07,0.23,0.7,2"
)
mkdir -p "$results/sweeps"
pids=()
for m in "${!grid[@]}"; do
  (for t in $tasks; do
     python scripts/sweep.py --config "configs/demo/$t/$m.yaml" --grid "${grid[$m]}" \
       --results "$results/sweeps" --out "$results/sweeps/${t}_$m.md" "${sets[@]}" > /dev/null \
       || echo "sweep failed: $t $m" >&2
   done) > "$results/sweeps/$m.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || true; done
python - "$results/sweeps" $tasks <<'EOF'
"""Write each sweep's best point into its config (key line and header line)."""
import pathlib, re, sys
folder, tasks = pathlib.Path(sys.argv[1]), sys.argv[2:]
for table in sorted(folder.glob("*.md")):
    task, method = next((t, table.stem[len(t) + 1:]) for t in tasks if table.stem.startswith(t + "_"))
    rows = [r.split("|")[1:3] for r in table.read_text().splitlines() if r.startswith("| ") and "=" in r]
    points = [(name.strip(), value.strip()) for name, value in rows]
    best = next(name for name, value in points if value.startswith("**"))
    key, value = best.split("=")
    config = pathlib.Path(f"configs/demo/{task}/{method}.yaml")
    text = config.read_text()
    text = re.sub(rf"^(  {re.escape(key)}: ).*$", rf"\g<1>{value}", text, count=1, flags=re.M)
    listing = ", ".join(f"{n.replace('=', ' ')}: {v.strip('*')}" for n, v in points)
    text = re.sub(r"^# Setting swept on data/demo_val.*$",
                  f"# Picked on data/demo_val (mean PSNR dB of 4 crops; configs/demo/SWEEPS.md): {listing}.",
                  text, count=1, flags=re.M)
    config.write_text(text)
    print(f"{config}: {best}")
EOF
pids=()
for t in $tasks; do
  python scripts/reproduce.py --table demo --tasks "$t" --results "$results/demo_table" --out "$results/tables" "${sets[@]}" \
    > "$results/table_$t.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || true; done
python scripts/reproduce.py --table demo --results "$results/demo_table" --out "$results/tables" "${sets[@]}"
