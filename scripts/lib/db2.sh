# IBM's DB2 ODBC/CLI driver (clidriver) from the PyPI ibm_db wheel, for the
# ODBC provider's DB2 test. Sourced by scripts/test.sh.

# ensure_db2_clidriver [DEST]
# Idempotently provides IBM's DB2 ODBC/CLI driver (clidriver) taken from the
# PyPI ibm_db manylinux wheel. DEST is the clidriver directory (default
# ${XDG_CACHE_HOME:-$HOME/.cache}/connector/clidriver). The wheel's auditwheel-
# vendored libs go to DEST/../ibm_db.libs: libdb2.so has RPATH
# $ORIGIN/../../ibm_db.libs (it needs libxml2-a0a916ee.so.2.9.13 from there).
# Prints the ODBC driver library path (DEST/lib/libdb2.so) on stdout; all
# other output goes to stderr. Needs python3 + pip, x86_64, glibc >= 2.34.
# Requires apt_install (defined elsewhere in deps.sh).
IBM_DB_WHEEL_VERSION="${IBM_DB_WHEEL_VERSION:-3.3.0}"
# sha256 of ibm_db-3.3.0-cp311-cp311-manylinux_2_34_x86_64.whl; set empty to skip the check
IBM_DB_WHEEL_SHA256="${IBM_DB_WHEEL_SHA256-85c16961dc98e13dbd58209f40e8e99cf383b7b7d8f57038aa84a59e1412ba21}"

ensure_db2_clidriver() {
  local dest="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/connector/clidriver}"
  dest="${dest%/}"
  local ver="$IBM_DB_WHEEL_VERSION"
  local parent; parent="$(dirname -- "$dest")"
  local libs="$parent/ibm_db.libs"
  local lib="$dest/lib/libdb2.so"
  local stamp="$dest/.ibm_db-wheel-$ver"

  # Missing system libraries of libdb2.so -> Debian packages.
  _db2_missing_pkgs() {
    local so
    for so in $(ldd "$lib" 2>/dev/null | awk '/not found/ {print $1}'); do
      case "$so" in
        libpam.so.0)      echo libpam0g ;;
        libcrypt.so.1)    echo libcrypt1 ;;
        libstdc++.so.6)   echo libstdc++6 ;;
        libgcc_s.so.1)    echo libgcc-s1 ;;
        libaudit.so.1)    echo libaudit1 ;;
        libcap-ng.so.0)   echo libcap-ng0 ;;
        *) echo "ensure_db2_clidriver: unresolvable dependency $so of $lib" >&2; echo "!$so" ;;
      esac
    done | sort -u
  }

  # Fast path: already extracted and all deps resolve.
  if [[ -f "$stamp" && -f "$lib" && -d "$libs" ]] && [[ -z "$(_db2_missing_pkgs)" ]]; then
    printf '%s\n' "$lib"; return 0
  fi

  if [[ "$(uname -m)" != x86_64 ]]; then
    echo "ensure_db2_clidriver: only x86_64 is supported (got $(uname -m))" >&2; return 1
  fi
  mkdir -p -- "$parent" || return 1
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip >&2 || return 1

  # NB: set -e is ignored inside ( ... ) || ..., hence the explicit '|| exit 1'.
  (
    exec 9>"$parent/.clidriver.lock" && flock 9 || exit 1   # serialise concurrent callers
    if [[ -f "$stamp" && -f "$lib" && -d "$libs" ]]; then exit 0; fi   # done by another caller
    tmp="$(mktemp -d "$parent/.clidriver.tmp.XXXXXX")" || exit 1
    trap 'rm -rf -- "$tmp"' EXIT
    req="ibm_db==$ver"
    [[ -n "$IBM_DB_WHEEL_SHA256" ]] && req="$req --hash=sha256:$IBM_DB_WHEEL_SHA256"
    printf '%s\n' "$req" > "$tmp/req.txt" || exit 1
    # Explicit tags: same wheel whatever the local python3 version is.
    python3 -m pip download -q --disable-pip-version-check --no-deps \
      --only-binary=:all: --platform manylinux_2_34_x86_64 \
      --implementation cp --python-version 3.11 --abi cp311 \
      -r "$tmp/req.txt" -d "$tmp/whl" >&2 || exit 1
    whl="$(ls "$tmp"/whl/ibm_db-*.whl)" || exit 1
    # unzip not required: python's zipfile; extract only clidriver/ and ibm_db.libs/
    python3 - "$whl" "$tmp/x" <<'PY'
import os, sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    for i in z.infolist():
        if i.filename.startswith(("clidriver/", "ibm_db.libs/")):
            p = z.extract(i, out)
            mode = (i.external_attr >> 16) & 0o777
            if mode and not i.is_dir():
                os.chmod(p, mode)
PY
    [[ $? -eq 0 ]] || exit 1
    [[ -f "$tmp/x/clidriver/lib/libdb2.so" ]] || { echo "ensure_db2_clidriver: no clidriver/lib/libdb2.so in $whl" >&2; exit 1; }
    rm -rf -- "$dest" "$libs" &&
    mv -- "$tmp/x/ibm_db.libs" "$libs" &&
    mv -- "$tmp/x/clidriver" "$dest" &&
    : > "$stamp" || exit 1
  ) || { echo "ensure_db2_clidriver: download/extract failed" >&2; return 1; }

  local pkgs; pkgs="$(_db2_missing_pkgs)"
  if [[ "$pkgs" == *'!'* ]]; then return 1; fi
  if [[ -n "$pkgs" ]]; then
    # shellcheck disable=SC2086
    apt_install $pkgs >&2 || return 1
    [[ -z "$(_db2_missing_pkgs)" ]] || { echo "ensure_db2_clidriver: deps still missing" >&2; return 1; }
  fi
  printf '%s\n' "$lib"
}
