#!/usr/bin/env bash
# Lints the Containerfile (hadolint, checkov) and deploy/kubernetes (checkov).
# Both come from PyPI into an environment of their own, .ci/venv-lint, made
# once and again when .ci/deploy-lint-requirements.txt changes: checkov brings
# ~100 packages with pins of its own that have no place in the project's dev
# extra. Checks skipped for a reason carry that reason next to them (inline
# `# checkov:skip=ID: why` / `# hadolint ignore=ID` comments).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.ci/venv-lint
requirements=.ci/deploy-lint-requirements.txt
stamp=$venv/.installed
if [ ! -f "$stamp" ] || [ "$requirements" -nt "$stamp" ]; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements"
  touch "$stamp"
fi

echo "== hadolint Containerfile"
"$venv/bin/hadolint" --failure-threshold warning Containerfile

echo "== checkov Containerfile and deploy/kubernetes"
# checkov's Dockerfile runner looks only at files named Dockerfile: it reads
# a copy, so a Containerfile it cannot find fails here instead of passing.
scan=$(mktemp -d)
trap 'rm -rf "$scan"' EXIT
cp Containerfile "$scan/Dockerfile"
checkov() { "$venv/bin/checkov" --quiet --compact --skip-download "$@"; }
checkov --framework dockerfile --file "$scan/Dockerfile" | tee "$scan/report"
grep -q '^dockerfile scan results' "$scan/report" || { echo "checkov did not scan the Containerfile" >&2; exit 1; }
checkov --framework kubernetes --directory deploy/kubernetes | tee "$scan/report"
grep -q '^kubernetes scan results' "$scan/report" || { echo "checkov did not scan deploy/kubernetes" >&2; exit 1; }
echo "== deploy lint: passed in ${SECONDS}s"
