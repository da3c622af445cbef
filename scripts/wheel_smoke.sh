#!/usr/bin/env bash
# Packaging smoke test (run by .ci/run after `make test`): build the wheel, install it without
# the repository into a throwaway venv, and run a preset on the bundled sample from elsewhere.
# The venv borrows the project venv's installed dependencies (a .pth line), so it checks what the
# wheel itself carries (modules, presets, sample data, resources) without re-downloading torch.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# setuptools packs whatever build/lib holds: a build from before a module moved would ship it
rm -rf build
"$VENV/bin/python" -m pip wheel --no-deps -q -w "$tmp/dist" .
"$VENV/bin/python" -m venv "$tmp/venv"
deps=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
own=$("$tmp/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$deps" > "$own/spt-bench-deps.pth"
"$tmp/venv/bin/python" -m pip install -q --no-deps "$tmp"/dist/spt_bench-*.whl
cd "$tmp"  # no repository on sys.path from here on
where=$("$tmp/venv/bin/python" -c 'import spt_bench, spt_bench.metrics, spt_bench.baselines; print(spt_bench.__file__, spt_bench.metrics.__file__)')
case "$where" in
  "$tmp/venv/"*" $tmp/venv/"*) ;;
  *) echo "wheel smoke: spt_bench imported from outside the wheel: $where" >&2; exit 1 ;;
esac
# the wheel installs no top-level names that other packages use (cli, metrics, baselines)
for name in cli metrics baselines; do
  if "$tmp/venv/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$name') is None)" 2>/dev/null; then
    owner=$("$tmp/venv/bin/python" -c "import $name; print($name.__file__)")
    case "$owner" in "$tmp/venv/"*) echo "wheel smoke: the wheel installs a top-level '$name' ($owner)" >&2; exit 1 ;; esac
  fi
done
"$tmp/venv/bin/spt-bench" --version
"$tmp/venv/bin/spt-bench" presets > /dev/null
echo "+ spt-bench run --preset smoke --model tiny-random --max-steps 2 --eval-limit 4 (from the wheel)"
"$tmp/venv/bin/spt-bench" run --preset smoke --model tiny-random --max-steps 2 --eval-limit 4 \
  --no-model-metrics --out "$tmp/runs" --name smoke > "$tmp/smoke.log" 2>&1 \
  || { cat "$tmp/smoke.log" >&2; exit 1; }
test -s "$tmp/runs/smoke/metrics.json"
echo "wheel smoke: ok (spt-bench $("$tmp/venv/bin/python" -c 'import importlib.metadata as m; print(m.version("spt-bench"))') from the wheel ran the smoke preset)"
