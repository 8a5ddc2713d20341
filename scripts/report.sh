#!/usr/bin/env bash
# One HTML report of a finished run, and screenshots of it as a reader sees it.
#   bash scripts/report.sh                               # the demo (config/config.yaml)
#   bash scripts/report.sh --configfile config/paper.yaml
# Writes <results_dir>/report/report.html (snakemake --report: tables, figures with captions,
# the paper comparison and the provenance pages) and, when Debian's `chromium` is installed
# (apt-get install chromium), report_first_page.png and paper_comparison.png beside it.
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
.venv/bin/snakemake "$@" --report "$out/report.html"
if ! command -v chromium >/dev/null 2>&1; then
  echo "[report] $out/report.html written; no screenshots: chromium is not installed" >&2
  exit 0
fi
shoot() {  # $1 page, $2 png; the report is a script-drawn page: give it time to render
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,1000 \
    --virtual-time-budget=8000 --screenshot="$2" "file://$(realpath "$1")" 2>/dev/null
}
shoot "$out/report.html" "$out/report_first_page.png"
shoot "$out/paper_comparison.html" "$out/paper_comparison.png"
echo "[report] $out/report.html, $out/report_first_page.png, $out/paper_comparison.png" >&2
