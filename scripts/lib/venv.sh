# Sourced by scripts/test and scripts/demo: create or refresh .venv.
# Re-installs only when pyproject.toml changed since the last install.
ensure_venv() {
  local extras="$1" root py stamp want
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  py="${PYTHON:-python3}"
  if [ ! -x "$root/.venv/bin/python" ]; then
    echo "==> creating .venv"
    "$py" -m venv "$root/.venv"
  fi
  stamp="$root/.venv/.mediamill-installed"
  want="$(sha256sum "$root/pyproject.toml" | cut -c1-64) $extras"
  # No extras asked (the demo): an install with extras (the tests') serves as well.
  if [ -z "$extras" ] && [ -f "$stamp" ] && [ "$(cut -c1-64 "$stamp")" = "${want:0:64}" ]; then
    want="$(cat "$stamp")"
  fi
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "==> installing mediamill${extras:+[$extras]} into .venv"
    "$root/.venv/bin/python" -m pip install -q --upgrade pip setuptools wheel
    "$root/.venv/bin/python" -m pip install -q -e "$root${extras:+[$extras]}"
    echo "$want" > "$stamp"
  fi
  export PATH="$root/.venv/bin:$PATH"
}
