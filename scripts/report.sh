#!/usr/bin/env bash
# One HTML report of a finished run, and screenshots of it as a reader sees it.
#   bash scripts/report.sh                               # the demo (config/config.yaml)
#   bash scripts/report.sh --configfile config/paper.yaml
# Writes <results_dir>/report/report.html (snakemake --report). It opens on the claim ledger
# and the per-task heat maps (workflow/report/workflow.rst, shown as the landing page because
# --report-metadata is given); task pages, tables, figures with captions, the paper comparison
# and the provenance are under the categories, the job graph under "Workflow". When Debian's
# `chromium` is installed (apt-get install chromium), screenshots at 1400 px: the landing
# page and the annotation task page beside the tables (<results_dir>/tables/report_*.png), the
# paper comparison in the report folder.
set -euo pipefail
cd "$(dirname "$0")/.."
results=$(.venv/bin/python - "$@" <<'PY'
import sys, yaml
args = sys.argv[1:]
path = args[args.index("--configfile") + 1] if "--configfile" in args else "config/config.yaml"
print((yaml.safe_load(open(path)) or {}).get("results_dir", "results"))
PY
)
out="$results/report"
mkdir -p "$out"
.venv/bin/snakemake "$@" --report "$out/report.html" --report-metadata workflow/report/metadata.yaml
echo "[report] $out/report.html: $(du -h "$out/report.html" | cut -f1)" >&2
if ! command -v chromium >/dev/null 2>&1; then
  echo "[report] no screenshots: chromium is not installed" >&2
  exit 0
fi
shoot() {  # $1 page, $2 png, $3 height; the report is a script-drawn page: give it time to render
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size="1400,$3" \
    --virtual-time-budget=8000 --screenshot="$2" "file://$(realpath "$1")" 2>/dev/null
}
shoot "$out/report.html" "$results/tables/report_landing.png" 1400
task_page=$(ls "$out"/tasks/*.html | head -n 1)
[ -f "$out/tasks/annotation.html" ] && task_page="$out/tasks/annotation.html"
shoot "$task_page" "$results/tables/report_task_$(basename "$task_page" .html).png" 1400
shoot "$out/paper_comparison.html" "$out/paper_comparison.png" 1000
echo "[report] screenshots: $results/tables/report_landing.png," \
  "$results/tables/report_task_$(basename "$task_page" .html).png, $out/paper_comparison.png" >&2
