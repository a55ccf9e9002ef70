# Sourced by the run.sh of checks that need Python packages of their own (tests/delta,
# tests/kafka): `venv_with DIR REQUIREMENTS MODULE...` makes (or reuses) the virtualenv DIR,
# or one in a temp dir when DIR cannot be made, installs REQUIREMENTS into it, and sets
# $venv to it. MODULEs are the imports that show an existing DIR is usable.
venv_with() {
  venv="$1"
  local reqs="$2" imports
  shift 2
  imports="import $(IFS=,; echo "$*")"
  if ! "$venv/bin/python" -c "$imports" 2>/dev/null; then
    python3 -m venv "$venv" 2>/dev/null || { venv="$(mktemp -d)/venv"; python3 -m venv "$venv"; }
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$reqs"
}
